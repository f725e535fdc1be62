"""SigLIP ViT-B/32 on this codebase's YFCC-15M recipe: the CLIP baseline (configs/clip_vit_b32.py: one image view
cropped with RandomResizedCrop 0.5-1, the plain caption) with SigLIP's sigmoid loss in place of InfoNCE.

From the paper (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023, arXiv 2303.15343):
- the loss, -1/B sum_ij log sigmoid(z_ij (t x_i.y_j + b)), computed here around a ring of devices as in the
  paper's chunked implementation;
- t = exp(t') with t' initialised at log 10, and b initialised at -10, both learned and unclamped;
- Adam's beta2 lowered to 0.95 (the recipe's is 0.98), the paper's remedy for instability at large batch.
Kept from the DeCLIP/CLIP recipe, since the paper's WebLI data, tokenizer and schedule do not apply to this data
path: ViT-B/32 towers with CLIP's text transformer and BPE, batch 4,096, AdamW (lr 1e-3, weight decay 0.1) with
2,500 warmup steps and cosine to 128,001 steps, fp32, the frozen patch embedding.

Run:
  python -m declip_jax.main --config=configs/siglip_vit_b32.py --workdir=gs://BUCKET/siglip_vit_b32
"""

from declip_jax import config as config_lib, presets


def get_config():
  c = presets.use_sigmoid(presets.use_clip_baseline(config_lib.base_config()))
  c.optim.b2 = 0.95
  c.evals.zero_shot_imagenet = config_lib.imagenet_zero_shot()  # As configs/clip_vit_b32.py.
  return c
