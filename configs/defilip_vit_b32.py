"""DeFILIP ViT-B/32 on the official benchmark's recipe (Sense-GVT/DeCLIP `yfcc15m_vit_defilip`): DeCLIP's terms
(0.4 CLIP+MVS, 0.2 NNS, 0.2 SimSiam, 0.2 MLM) plus 0.2 x FILIP's token-wise term on image view 1's patch tokens
and the masked caption's tokens; embedding 512, peak LR 1e-3, weight decay 0.1 (DeCLIP's). Zero-shot uses the
global embeddings. Reported ImageNet zero-shot: 45.0% (DeCLIP 43.2%).

Run:
  python -m declip_jax.main --config=configs/defilip_vit_b32.py --workdir=gs://BUCKET/defilip_vit_b32
"""

from declip_jax import config as config_lib, presets


def get_config():
  c = presets.use_defilip(config_lib.base_config())
  c.evals.zero_shot_imagenet = config_lib.imagenet_zero_shot()
  return c
