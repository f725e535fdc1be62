"""FILIP RN50: configs/filip_vit_b32.py with CLIP's ModifiedResNet-50 image tower; the image tokens are the last
stage's 7 x 7 x 2,048 feature map mapped to 256 (official `filip_res50`). Reported: 21.3% ImageNet zero-shot.

Run:
  python -m declip_jax.main --config=configs/filip_rn50.py --workdir=gs://BUCKET/filip_rn50
"""

from configs import filip_vit_b32
from declip_jax import presets


def get_config():
  c = presets.set_architecture(filip_vit_b32.get_config(), "RN50")
  c.model.embed_dim = 1024
  return c
