"""DeCLIP ViT-B/16: the official ViT-B/32 recipe (configs/declip_vit_b32.py) with ViT-B/16 towers (CLIP's sizes).

Run:
  python -m declip_jax.main --config=configs/declip_vit_b16.py --workdir=gs://BUCKET/declip_vit_b16
"""

from configs import declip_vit_b32
from declip_jax import presets


def get_config():
  return presets.set_architecture(declip_vit_b32.get_config(), "ViT-B/16")
