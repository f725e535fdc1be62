"""The reduced open_clip architectures the weight-conversion tests share, and the torch-free half of them: the
configs, the inputs and declip_jax's embeddings (tests/test_interop.py, tests/test_open_clip_parity.py)."""

import jax
import numpy as np

from declip_jax.models import declip
from tests.tiny_config import tiny_config

# Reduced ViT-B/32, B/16 and L/14 shapes (patch size relative to the image as in the originals), with and
# without a text projection bias, scanned and unscanned layers; reduced RN50 and RN101 (stem width 8, fewer
# Bottlenecks; the stage structure, strides and attention pooling as in the originals).
ARCHITECTURES = {
    "vit_b32": dict(image_size=32, patch_size=8, width=48, layers=2, heads=4, bias=True, scan=True),
    "vit_b16": dict(image_size=32, patch_size=4, width=48, layers=2, heads=4, bias=False, scan=False),
    "vit_l14": dict(image_size=28, patch_size=2, width=64, layers=3, heads=4, bias=False, scan=True),
    "rn50": dict(image_size=64, width=8, resnet_layers=(2, 1, 2, 1), heads=2, bias=False, scan=True),
    "rn101": dict(image_size=32, width=8, resnet_layers=(1, 2, 3, 1), heads=4, bias=True, scan=False),
}


def reduced_config(image_size, width, heads, bias, scan, patch_size=None, layers=None, resnet_layers=None,
                   vocab=60):
  c = tiny_config()
  c.model.embed_dim = 24
  c.model.scan_layers = scan
  if resnet_layers:
    c.model.image.update(dict(arch="resnet", freeze_patch_embed=False, resnet_layers=resnet_layers,
                              bn_group_size=8))
  else:
    c.model.image.update(dict(patch_size=patch_size, layers=layers))
  c.model.image.update(dict(image_size=image_size, width=width, heads=heads))
  c.model.text.update(dict(vocab_size=vocab, width=32, layers=2, heads=2, context_length=16, projection_bias=bias))
  return c


def inputs(config, seed):
  rng = np.random.default_rng(seed)
  s = config.model.image.image_size
  images = rng.normal(size=(3, s, s, 3)).astype(np.float32)
  eot = config.model.text.vocab_size - 1  # open_clip pools at the largest id (argmax); ours at the first EOT.
  tokens = rng.integers(1, eot, size=(3, config.model.text.context_length)).astype(np.int32)
  for row, length in enumerate((5, 9, 16)):
    tokens[row, length - 1] = eot
    tokens[row, length:] = 0
  return images, tokens, eot


def our_embeddings(config, variables, images, tokens, eot):
  model = declip.build_model(config, eot)
  image = model.apply(variables, images, method=declip.DeCLIP.encode_image)
  text = model.apply(variables, tokens, method=declip.DeCLIP.encode_text)
  return np.asarray(image), np.asarray(text)


def abstract_variables(config, eot):
  from declip_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  model = declip.build_model(config, eot)
  batch = {k: np.zeros(v.shape, v.dtype) for k, v in state_lib.sample_batch_spec(config, 1).items()}
  variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
