"""The official CLIP baseline for DeCLIP ViT-B/32: same model, optimiser and schedule; InfoNCE only, one
image view (RandomResizedCrop scale 0.5-1), the plain caption.

Run:
  python -m declip_jax.main --config=configs/clip_vit_b32.py --workdir=gs://BUCKET/clip_vit_b32
"""

from declip_jax import config as config_lib, presets


def get_config():
  c = presets.use_clip_baseline(config_lib.base_config())
  c.evals.zero_shot_imagenet = config_lib.imagenet_zero_shot()  # As configs/declip_vit_b32.py.
  return c
