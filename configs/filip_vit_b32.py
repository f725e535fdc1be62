"""FILIP ViT-B/32 on the official benchmark's recipe (Sense-GVT/DeCLIP `yfcc15m_vit_filip`): the token-wise loss
alone (patch tokens and every text position mapped to 256 and normalised, the 16 best tokens per side and pair
selected and gathered, mean of max both ways, its own log-scale clamped to [3, 6]) on one MoCo-v2 view and the
MLM-masked caption; embedding 768, peak LR 5e-4, weight decay 0.5; batch 4,096, 128,001 steps. The official
config's zero-weighted global CLIP term is not computed and its projections are frozen (presets.use_filip).
ImageNet zero-shot with the official token-wise classifier. Reported: 39.5% (CLIP 32.8%).

Run:
  python -m declip_jax.main --config=configs/filip_vit_b32.py --workdir=gs://BUCKET/filip_vit_b32
"""

from declip_jax import config as config_lib, presets


def get_config():
  c = presets.use_filip(config_lib.base_config())
  c.model.embed_dim = 768
  c.optim.lr = 5e-4
  c.optim.weight_decay = 0.5
  c.evals = config_lib.token_wise_evals(c.evals)
  c.evals.zero_shot_imagenet = config_lib.imagenet_zero_shot(token_wise=True)
  return c
