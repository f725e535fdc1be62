"""A tiny DeCLIP config for tests: every loss on, one- or two-layer towers, 16x16 images, batch 16.

Also a config file: `python -m declip_jax.main --config=tests/tiny_config.py --workdir=DIR`.
"""

from declip_jax import config as config_lib, presets


def tiny_config(clip_baseline: bool = False):
  """DeCLIP with every loss on, towers of one layer, 16x16 images, batch 16: a train step compiles in seconds."""
  c = config_lib.base_config()
  c.train.num_steps = 6
  c.train.batch_size = 16
  c.train.log_every_steps = 2
  c.checkpoint.every_steps = 3
  c.checkpoint.async_save = True
  c.eval.every_steps = 3
  c.eval.batch_size = 32
  c.evals = config_lib.builtin_evals(("colour", "shape"))
  c.model.embed_dim = 16
  c.model.scan_unroll = 1  # One compiled block per tower: the suite is compile-bound.
  c.model.image.image_size = 16
  c.model.image.patch_size = 4
  c.model.image.width = 32
  c.model.image.layers = 2
  c.model.image.heads = 2
  c.model.text.context_length = 16
  c.model.text.vocab_size = 58
  c.model.text.width = 32
  c.model.text.layers = 2
  c.model.text.heads = 2
  c.ssl.bn_group_size = 8
  c.ssl.projector_dim = 24
  c.ssl.predictor_hidden_dim = 12
  c.model.simclr.hidden_dim = 32  # SLIP's head (presets.use_slip).
  c.model.simclr.out_dim = 16
  c.model.filip.dim = 16  # FILIP's token mappings (presets.use_filip / use_defilip): 16 image tokens, 16 positions.
  c.model.filip.top_k = 4
  c.nns.groups = 2
  c.nns.group_size = 40
  c.nns.chunk_size = 16
  c.optim.warmup_steps = 2
  c.optim.schedule_steps = 10
  c.data.source = "builtin"
  c.data.tokenizer = "word"  # The built-in word vocabulary.
  c.data.builtin.num_train = 96
  c.data.builtin.num_test = 40
  c.data.eval_crop_fraction = 1.0
  if clip_baseline:
    presets.use_clip_baseline(c)
  return c


def get_config():
  return tiny_config()


def tiny_resnet_config(clip_baseline: bool = False):
  """tiny_config with a ModifiedResNet image tower (one Bottleneck per stage, stem width 8, 32x32 images)."""
  c = tiny_config(clip_baseline)
  presets.set_architecture(c, "RN50")
  c.model.embed_dim = 16
  c.model.image.image_size = 32
  c.model.image.width = 8
  c.model.image.resnet_layers = (1, 1, 1, 1)
  c.model.image.heads = 2
  c.model.image.bn_group_size = 8
  c.model.filip.top_k = 1  # A 1 x 1 feature map: one image token.
  c.model.text.width, c.model.text.layers, c.model.text.heads = 32, 2, 2
  return c
