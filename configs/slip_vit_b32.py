"""SLIP ViT-B/32 on the official benchmark's recipe (Sense-GVT/DeCLIP `slip_vitb32`): 1.0 x CLIP on a base view
(RandomResizedCrop 0.5-1, the plain caption) + 1.0 x SimCLR (temperature 0.1) between two MoCo-v2 views through
a 3-layer head (4,096, 4,096, 256) on the image tower's pre-projection feature; embedding 512, peak LR 5e-4,
weight decay 0.5; batch 4,096, 128,001 steps, the shared warmup/cosine schedule and frozen patch embedding.
Reported ImageNet zero-shot top-1 on YFCC-15M: 34.3% (CLIP 32.8%).

Run:
  python -m declip_jax.main --config=configs/slip_vit_b32.py --workdir=gs://BUCKET/slip_vit_b32
"""

from declip_jax import config as config_lib, presets


def get_config():
  c = presets.use_slip(config_lib.base_config())
  c.optim.lr = 5e-4
  c.optim.weight_decay = 0.5
  c.evals.zero_shot_imagenet = config_lib.imagenet_zero_shot()
  return c
