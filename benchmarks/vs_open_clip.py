"""declip_jax vs open_clip: the same CLIP model, batch, precision and full training step (forward, InfoNCE,
backward, AdamW), timed alternately in one process. Needs the interop extra (requirements-interop.txt).

  python benchmarks/vs_open_clip.py --config=configs/clip_vit_b32.py --config.train.batch_size=32 [--steps=5]

Both sides get the same images and token ids (the built-in data's first batch), the CLIP baseline's towers
with the patch embedding frozen (requires_grad=False in PyTorch), AdamW with the config's b1/b2/eps/weight decay,
float32. Rounds alternate the two sides (machine drift hits both); in each round a side runs an untimed step
and then the timed one, because the first step after the other framework ran is up to 1.8x slower on CPU (its
freed memory is faulted in again). Prints each side's median step time and the ratio. open_clip runs eagerly
(as its training script does by default); declip_jax runs its jitted step.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# PyTorch's OpenMP threads otherwise spin after each op and take the cores from XLA's next step.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import open_clip  # noqa: E402  (before JAX/TensorFlow: its triton import segfaults after them)
import torch  # noqa: E402
import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from declip_jax import config as config_lib, parallel, train  # noqa: E402
from declip_jax.data import pipeline  # noqa: E402
from declip_jax.interop import open_clip_weights  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "A CLIP config (its DeCLIP terms are turned off).",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per side, alternated.")


def open_clip_step(config):
  """A function running one open_clip training step on (images NCHW, tokens), and the model."""
  model = open_clip.model.CLIP(**open_clip_weights.open_clip_model_config(config)).train()
  if config.model.image.arch == "vit" and config.model.image.freeze_patch_embed:
    model.visual.conv1.weight.requires_grad_(False)
  o = config.optim
  optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=o.lr, betas=(o.b1, o.b2),
                                eps=o.eps, weight_decay=o.weight_decay)
  loss_fn = open_clip.loss.ClipLoss()

  def step(images, tokens):
    optimizer.zero_grad(set_to_none=True)
    image_features, text_features, scale = model(images, tokens)[:3]
    loss = loss_fn(image_features, text_features, scale)
    loss.backward()
    optimizer.step()
    return loss.item()

  return step


def main(_):
  config = config_lib.use_clip_baseline(_CONFIG.value)
  config.data.source, config.data.tokenizer = "builtin", "word"  # Any data: the step is what is timed.
  setup = train.Setup(config)
  host_batch = next(pipeline.numpy_batches(pipeline.train_dataset(config, setup.tokenizer)))
  batch = parallel.host_to_global(host_batch, setup.mesh)
  jax_step = setup.jit_train_step(config)
  state = setup.init_state()
  images = torch.from_numpy(host_batch["img1"]).permute(0, 3, 1, 2).contiguous()
  tokens = torch.from_numpy(host_batch["text_mlm"]).long()
  torch_step = open_clip_step(config)
  state, metrics = jax_step(state, batch)  # Compilation, and each side's first (warm-up) step.
  jax.block_until_ready(metrics)
  torch_step(images, tokens)
  jax_times, torch_times = [], []

  def run_jax():
    nonlocal state
    state, metrics = jax_step(state, batch)
    jax.block_until_ready((state, metrics))

  for _ in range(_STEPS.value):
    for run, times in ((run_jax, jax_times), (lambda: torch_step(images, tokens), torch_times)):
      run()  # Untimed: the first step after the other framework ran pays for its memory (page faults).
      start = time.perf_counter()
      run()
      times.append(time.perf_counter() - start)
  b = config.train.batch_size
  device = f"{jax.device_count()} {jax.default_backend()} device(s), torch {torch.get_num_threads()} threads"
  print(f"same CLIP step, batch {b}, {config.model.dtype}, {device}")
  print("| config | batch | declip_jax median step | open_clip median step | open_clip / declip_jax |")
  print("|---|---|---|---|---|")
  jax_s, torch_s = statistics.median(jax_times), statistics.median(torch_times)
  print(f"| {flags.FLAGS['config'].config_filename} | {b} | {jax_s * 1e3:.0f} ms | {torch_s * 1e3:.0f} ms | "
        f"{torch_s / jax_s:.2f}x |", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
