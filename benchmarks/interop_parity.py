"""Full-size parity with open_clip: random open_clip weights -> import -> declip_jax embeddings, and the export
back into open_clip, per architecture. Prints one table row each (needs requirements-interop.txt).

  python benchmarks/interop_parity.py [--architectures=ViT-B/32,ViT-B/16,ViT-L/14,RN50,RN101]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import open_clip  # noqa: E402  (before JAX/TensorFlow: its triton import segfaults after them)
import torch  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from declip_jax import host_info  # noqa: E402
from declip_jax import config as config_lib, presets  # noqa: E402
from declip_jax.training import state as state_lib
from declip_jax.interop import open_clip_weights as ow  # noqa: E402
from declip_jax.models import declip  # noqa: E402

_ARCHITECTURES = flags.DEFINE_list("architectures", list(presets.ARCHITECTURES), "Which towers.")


def _config(name):
  c = presets.set_architecture(config_lib.base_config(), name)
  c.model.text.vocab_size = 49_408  # OpenAI's layout, as released CLIP weights.
  c.model.text.projection_bias = False
  c.loss.weights.iss = c.loss.weights.tss = 0.0  # Towers only.
  return c


def _relative_error(a, b):
  return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main(_):
  print(f"host: {host_info.describe()}")
  print("| architecture | parameters (towers) | image embedding max rel. error | text embedding max rel. error "
        "| after export: image / text |")
  print("|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for name in _ARCHITECTURES.value:
    config = _config(name)
    torch.manual_seed(0)
    reference = open_clip.model.CLIP(**ow.open_clip_model_config(config)).eval()
    if config.model.image.arch == "resnet":  # Running statistics away from 0/1, so that a swap would show.
      with torch.no_grad():
        for module in reference.modules():
          if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.uniform_(0.5, 1.5)
            module.running_mean.normal_(0.0, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    images = rng.normal(size=(2, 224, 224, 3)).astype(np.float32)
    tokens = np.zeros((2, 77), np.int32)
    tokens[:, 0] = ow.OPENAI_SOT
    tokens[0, 1:6], tokens[0, 6] = rng.integers(1, 49_000, 5), ow.OPENAI_EOT
    tokens[1, 1:20], tokens[1, 20] = rng.integers(1, 49_000, 19), ow.OPENAI_EOT
    with torch.no_grad():
      want_image = reference.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
      want_text = reference.encode_text(torch.from_numpy(tokens).long()).numpy()
    model = declip.build_model(config, ow.OPENAI_EOT)
    batch = {k: np.zeros(v.shape, v.dtype) for k, v in state_lib.sample_batch_spec(config, 1).items()}
    abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    variables = ow.from_torch_state_dict({k: v.numpy() for k, v in reference.state_dict().items()}, config,
                                         abstract)
    got_image = np.asarray(model.apply(variables, images, method=declip.DeCLIP.encode_image))
    got_text = np.asarray(model.apply(variables, tokens, method=declip.DeCLIP.encode_text))
    reference.load_state_dict({k: torch.from_numpy(v)
                               for k, v in ow.to_torch_state_dict(variables, config).items()})
    with torch.no_grad():
      back_image = reference.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
      back_text = reference.encode_text(torch.from_numpy(tokens).long()).numpy()
    count = sum(x.size for x in jax.tree.leaves(variables["params"]) if x is not None)
    print(f"| {name} | {count / 1e6:.1f}M | {_relative_error(got_image, want_image):.1e} | "
          f"{_relative_error(got_text, want_text):.1e} | {_relative_error(back_image, want_image):.0e} / "
          f"{_relative_error(back_text, want_text):.0e} |", flush=True)


if __name__ == "__main__":
  app.run(main)
