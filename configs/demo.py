"""DeCLIP on the built-in shapes dataset with tiny towers: trains in minutes on 2 CPU cores (the README gives the
measured times).

Run:
  python -m declip_jax.main --config=configs/demo.py --workdir=/tmp/declip_demo

Same code paths and loss recipe as configs/declip_vit_b32.py (weights, MLM rates, MoCo-v2 augmentation, AdamW,
logit-scale clamp, frozen patch embedding). Scaled down: 32px images in 8px patches, width-64 towers, batch 128,
1,500 steps with warmup 50 and a higher peak LR (2e-3), BatchNorm groups of 32, a queue of 4 x 2,048, and a
milder crop (scale 0.35-1) so that the objects are rarely cropped away.
"""

from declip_jax import config as config_lib


def demo_sizes(c):
  """The tiny model, data and schedule shared by demo.py and clip_demo.py."""
  c.train.num_steps = 1500
  c.train.batch_size = 128
  c.train.log_every_steps = 20
  c.checkpoint.every_steps = 500
  c.eval.every_steps = 750
  c.eval.batch_size = 250
  c.evals = config_lib.builtin_evals(("colour", "shape"), linear_probe=True)

  c.model.embed_dim = 64
  c.model.scan_unroll = 1  # One compiled block per tower: CPU compiles stay short (the studies' runs were made so).
  c.model.image.image_size = 32
  c.model.image.patch_size = 8
  c.model.image.width = 64
  c.model.image.layers = 3
  c.model.image.heads = 4
  c.model.text.context_length = 24
  c.model.text.vocab_size = 58  # The built-in word vocabulary (53 words + 5 special ids).
  c.model.text.width = 64
  c.model.text.layers = 2
  c.model.text.heads = 4

  c.ssl.bn_group_size = 32
  c.ssl.projector_dim = 256
  c.ssl.predictor_hidden_dim = 64
  c.nns.groups = 4
  c.nns.group_size = 2048

  c.optim.lr = 2e-3
  c.optim.warmup_init_lr = 1e-4
  c.optim.warmup_steps = 50
  c.optim.schedule_steps = c.train.get_ref("num_steps")  # Follows --config.train.num_steps overrides.

  c.data.source = "builtin"
  c.data.tokenizer = "word"  # The built-in word vocabulary.
  c.data.eval_crop_fraction = 1.0  # Images are rendered at model size; do not crop the border away.
  c.data.augment.crop_scale = (0.35, 1.0)
  return c


def get_config():
  return demo_sizes(config_lib.base_config())
