"""DeCLIP ViT-B/32, the official YFCC-15M recipe (docs/design.md): batch 4,096, 128,001 steps, AdamW, fp32.

Run (multi-host launchers pass the same command on every host):
  python -m declip_jax.main --config=configs/declip_vit_b32.py --workdir=gs://BUCKET/declip_vit_b32

Every number is `declip_jax.config.base_config()`'s official default; this file names the experiment and adds
the ImageNet zero-shot evaluation (TFDS `imagenet2012`, prepared from its manual download; a run without it
stops at start saying so: pass --config.evals.zero_shot_imagenet.enabled=False to train without it).
"""

from declip_jax import config as config_lib


def get_config():
  c = config_lib.base_config()
  c.evals.zero_shot_imagenet = config_lib.imagenet_zero_shot()
  return c
