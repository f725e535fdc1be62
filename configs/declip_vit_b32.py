"""DeCLIP ViT-B/32, the official YFCC-15M recipe (DESIGN.md): batch 4,096, 128,001 steps, AdamW, fp32.

Run (multi-host launchers pass the same command on every host):
  python -m declip_jax.main --config=configs/declip_vit_b32.py --workdir=gs://BUCKET/declip_vit_b32

Every number is `declip_jax.config.base_config()`'s official default; this file only names the experiment.
"""

from declip_jax import config as config_lib


def get_config():
  return config_lib.base_config()
