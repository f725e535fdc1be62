"""DeCLIP RN50, the official YFCC-15M recipe (Sense-GVT/DeCLIP experiments/declip_experiments/yfcc15m/
yfcc15m_r50_declip): the ViT-B/32 recipe (batch 4,096, 128,001 steps, AdamW, fp32) with CLIP's ModifiedResNet-50
image tower, embedding width 1,024, and the tower's BatchNorm synchronised over groups of 32 GPUs x 128 images
(`model.image.bn_group_size` = 4,096). docs/design.md §10: ImageNet zero-shot 44.4% (CLIP baseline 37.2%).

Run:
  python -m declip_jax.main --config=configs/declip_rn50.py --workdir=gs://BUCKET/declip_rn50
"""

from declip_jax import config as config_lib, presets


def get_config():
  c = presets.set_architecture(config_lib.base_config(), "RN50")
  c.evals.zero_shot_imagenet = config_lib.imagenet_zero_shot()
  return c
