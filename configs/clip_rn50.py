"""The official CLIP baseline for DeCLIP RN50 (Sense-GVT/DeCLIP experiments/clip_experiments/yfcc15m/
yfcc15m_r50_clip): the same RN50 model, optimiser and schedule; InfoNCE only, one image view (RandomResizedCrop
scale 0.5-1), the plain caption. Its BatchNorm is per GPU (`use_sync_bn: False`, 128 images), not synchronised.

Run:
  python -m declip_jax.main --config=configs/clip_rn50.py --workdir=gs://BUCKET/clip_rn50
"""

from declip_jax import config as config_lib, presets


def get_config():
  c = presets.use_clip_baseline(presets.set_architecture(config_lib.base_config(), "RN50"))
  c.model.image.bn_group_size = 128
  c.evals.zero_shot_imagenet = config_lib.imagenet_zero_shot()
  return c
