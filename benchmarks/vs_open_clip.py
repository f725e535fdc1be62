"""declip_jax vs open_clip: the same CLIP model, batch, precision and full training step (forward, InfoNCE,
backward, AdamW), timed alternately in one process. Needs the interop extra (requirements-interop.txt).

  python benchmarks/vs_open_clip.py --config=configs/clip_vit_b32.py --config.train.batch_size=32 [--steps=5]

Both sides get the same images and token ids (the built-in data's first batch), the CLIP baseline's towers
with the patch embedding frozen (requires_grad=False in PyTorch), AdamW with the config's b1/b2/eps/weight decay,
float32. Rounds alternate the two sides (machine drift hits both); in each round a side runs an untimed step
and then the timed one, because the first step after the other framework ran is up to 1.8x slower on CPU (its
freed memory is faulted in again). Prints the host and each side's median step time and the ratios. open_clip
runs eagerly (its training script's default) and, with --torch_compile, also under `torch.compile` (its
training script's --torchcompile: the model compiled, the loss and AdamW eager), timed first, in a process of
its own, before this one builds the JAX state (inductor's compile of the ViT-B/32 training step beside the JAX state was
OOM-killed at 24 GiB); declip_jax runs its jitted step.
"""

import json
import os
import statistics
import subprocess
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

from declip_jax import host_info  # noqa: E402
from declip_jax import presets, parallel  # noqa: E402
from declip_jax.training import train_setup  # noqa: E402
from declip_jax.data import pipeline, tokenizers  # noqa: E402
from declip_jax.interop import open_clip_weights  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "A CLIP config (its DeCLIP terms are turned off).",
                                          lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps per side, alternated.")
_TORCH_COMPILE = flags.DEFINE_bool("torch_compile", False, "Also time open_clip under torch.compile (in a process "
                                   "of its own: its compile takes minutes and GBs).")
_ONLY_COMPILED = flags.DEFINE_bool("only_compiled", False, "Internal: time open_clip under torch.compile alone and "
                                   "print its median step time as JSON (what --torch_compile runs).")


def open_clip_step(config, compile_model: bool = False):
  """A function running one open_clip training step on (images NCHW, tokens); with compile_model the model's
  forward (and so its backward) is compiled by torch.compile, as open_clip's --torchcompile does."""
  model = open_clip.model.CLIP(**open_clip_weights.open_clip_model_config(config)).train()
  if config.model.image.arch == "vit" and config.model.image.freeze_patch_embed:
    model.visual.conv1.weight.requires_grad_(False)
  o = config.optim
  optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=o.lr, betas=(o.b1, o.b2),
                                eps=o.eps, weight_decay=o.weight_decay)
  loss_fn = open_clip.loss.ClipLoss()
  forward = torch.compile(model) if compile_model else model

  def step(images, tokens):
    optimizer.zero_grad(set_to_none=True)
    image_features, text_features, scale = forward(images, tokens)[:3]
    loss = loss_fn(image_features, text_features, scale)
    loss.backward()
    optimizer.step()
    return loss.item()

  return step


def _compiled_alone(config, images, tokens) -> None:
  """Times open_clip under torch.compile (after its compile and one step) and prints {"median_s", "cpu_ratio"}."""
  step = open_clip_step(config, compile_model=True)
  start = time.perf_counter()
  step(images, tokens)
  step(images, tokens)
  compile_s = time.perf_counter() - start
  times, cpu = [], 0.0
  for _ in range(_STEPS.value):
    timer, start = host_info.CpuTimer(), time.perf_counter()
    step(images, tokens)
    times.append(time.perf_counter() - start)
    cpu += timer.ratio() / _STEPS.value
  print(json.dumps({"median_s": statistics.median(times), "cpu_ratio": cpu, "compile_s": compile_s}))


def _time_compiled_in_own_process() -> dict:
  out = subprocess.run([sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--only_compiled"],
                       capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"open_clip under torch.compile failed (exit {out.returncode}): {out.stderr[-2000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(_):
  config = presets.use_clip_baseline(_CONFIG.value)
  config.data.source, config.data.tokenizer = "builtin", "word"  # Any data: the step is what is timed.
  if _ONLY_COMPILED.value:
    host_batch = next(pipeline.numpy_batches(pipeline.train_dataset(config, tokenizers.build(config))))
    _compiled_alone(config, torch.from_numpy(host_batch["img1"]).permute(0, 3, 1, 2).contiguous(),
                    torch.from_numpy(host_batch["text_mlm"]).long())
    return
  compiled = _time_compiled_in_own_process() if _TORCH_COMPILE.value else None  # Before this process grows.
  setup = train_setup.Setup(config)
  host_batch = next(pipeline.numpy_batches(pipeline.train_dataset(config, tokenizers.build(config))))
  batch = parallel.host_to_global(host_batch, setup.mesh)
  jax_step = setup.jit_train_step(config)
  state = setup.init_state()
  images = torch.from_numpy(host_batch["img1"]).permute(0, 3, 1, 2).contiguous()
  tokens = torch.from_numpy(host_batch["text_mlm"]).long()
  sides = {"open_clip": open_clip_step(config)}
  state, metrics = jax_step(state, batch)  # Compilation, and each side's first (warm-up) step.
  jax.block_until_ready(metrics)
  for torch_step in sides.values():
    torch_step(images, tokens)

  def run_jax():
    nonlocal state
    state, metrics = jax_step(state, batch)
    jax.block_until_ready((state, metrics))

  runs = {"declip_jax": run_jax, **{name: (lambda f=f: f(images, tokens)) for name, f in sides.items()}}
  times = {name: [] for name in runs}
  cpu = {name: 0.0 for name in runs}
  for _ in range(_STEPS.value):
    for name, run in runs.items():
      run()  # Untimed: the first step after the other framework ran pays for its memory (page faults).
      timer, start = host_info.CpuTimer(), time.perf_counter()
      run()
      times[name].append(time.perf_counter() - start)
      cpu[name] += timer.ratio() / _STEPS.value
  median = {name: statistics.median(t) for name, t in times.items()}
  if compiled is not None:
    median["open_clip compiled"], cpu["open_clip compiled"] = compiled["median_s"], compiled["cpu_ratio"]
    print(f"open_clip under torch.compile: compile + first steps {compiled['compile_s']:.0f} s (own process)")
  b = config.train.batch_size
  device = (f"{jax.device_count()} {jax.default_backend()} device(s), torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads")
  print(f"host: {host_info.describe()}")
  print(f"same CLIP step, batch {b}, {config.model.dtype}, {device}")
  names = list(median)
  print("| config | batch | " + " | ".join(f"{n} median step (CPU/wall)" for n in names) + " | "
        + " | ".join(f"{n} / declip_jax" for n in names[1:]) + " |")
  print("|" + "---|" * (2 + 2 * len(names) - 1))
  print(f"| {flags.FLAGS['config'].config_filename} | {b} | "
        + " | ".join(f"{median[n] * 1e3:.0f} ms ({cpu[n]:.2f})" for n in names) + " | "
        + " | ".join(f"{median[n] / median['declip_jax']:.2f}x" for n in names[1:]) + " |", flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
