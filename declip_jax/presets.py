"""Presets that turn a config into another model or method, in place: CLIP's towers by name, and the
authors' benchmark methods (CLIP, SLIP, FILIP, DeFILIP) from a DeCLIP config (docs/design.md §14), and SigLIP's
sigmoid loss as the base of any of them (§19). The files in
`configs/` start from `config.base_config()` and apply these."""

import math

import ml_collections

from declip_jax import config as config_lib

# CLIP's towers. ViT image: (width, layers, heads, patch size); ResNet image: (stem width, blocks per stage,
# attention-pool heads); text: (width, layers, heads).
ARCHITECTURES = {
    "ViT-B/32": dict(image=(768, 12, 12, 32), text=(512, 12, 8), embed_dim=512),
    "ViT-B/16": dict(image=(768, 12, 12, 16), text=(512, 12, 8), embed_dim=512),
    "ViT-L/14": dict(image=(1024, 24, 16, 14), text=(768, 12, 12), embed_dim=768),
    "RN50": dict(resnet=(64, (3, 4, 6, 3), 32), text=(512, 12, 8), embed_dim=1024),
    "RN101": dict(resnet=(64, (3, 4, 23, 3), 32), text=(512, 12, 8), embed_dim=512),
}


def set_architecture(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Gives `c` the towers of a named architecture (ARCHITECTURES), in place."""
  if name not in ARCHITECTURES:
    raise config_lib.ConfigError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}.")
  a = ARCHITECTURES[name]
  c.model.embed_dim = a["embed_dim"]
  if "resnet" in a:
    c.model.image.arch = "resnet"
    c.model.image.width, c.model.image.resnet_layers, c.model.image.heads = a["resnet"]
    c.model.image.freeze_patch_embed = False  # No patch embedding.
  else:
    c.model.image.arch = "vit"
    c.model.image.width, c.model.image.layers, c.model.image.heads, c.model.image.patch_size = a["image"]
  c.model.text.width, c.model.text.layers, c.model.text.heads = a["text"]
  return c


def use_clip_baseline(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns a DeCLIP config into the official CLIP baseline of the same model, in place.

  One image view with RandomResizedCrop(scale 0.5-1) only, the plain caption, InfoNCE only; everything else
  (frozen patch embedding, optimiser, schedule) unchanged.
  """
  c.loss.weights.clip_mvs = 1.0
  c.loss.weights.iss = 0.0
  c.loss.weights.tss = 0.0
  c.loss.weights.nns = 0.0
  c.data.num_image_views = 1
  c.data.eda = False
  c.data.augment.recipe = "crop"
  c.data.augment.crop_scale = (0.5, 1.0)
  return c


def use_slip(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns a DeCLIP config into SLIP of the same model, in place (official `slip_vitb32`'s losses and views):
  1.0 x InfoNCE on a base view (RandomResizedCrop(0.5-1) only) with the plain caption, plus 1.0 x SimCLR between
  two MoCo-v2 views through the SimCLR head. The learning rate and weight decay are the config file's."""
  c.loss.weights.update({"clip_mvs": 1.0, "iss": 0.0, "tss": 0.0, "nns": 0.0, "simclr": 1.0, "filip": 0.0})
  c.data.num_image_views = 3
  c.data.eda = False
  c.data.augment.first_view = "crop"
  c.data.augment.first_view_crop_scale = (0.5, 1.0)
  return c


def use_filip(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns a DeCLIP config into FILIP of the same model, in place (official `yfcc15m_vit_filip`'s losses and
  views): the token-wise loss alone on one MoCo-v2 view and the MLM-masked caption (masked although there is no
  MLM loss). The official config keeps a global CLIP term at weight 0; here it is not computed, and the global
  projections, which get no gradient, are frozen (optim.frozen_patterns) instead of shrinking under weight decay."""
  c.loss.weights.update({"clip_mvs": 0.0, "iss": 0.0, "tss": 0.0, "nns": 0.0, "simclr": 0.0, "filip": 1.0})
  c.data.num_image_views = 1
  c.data.eda = False
  c.data.mask_captions = True
  return c


def use_defilip(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Turns a DeCLIP config into DeFILIP, in place (official `yfcc15m_vit_defilip`): DeCLIP's terms and weights
  plus 0.2 x the token-wise term on image view 1's tokens and the masked caption's."""
  c.loss.weights.filip = 0.2
  return c


def use_sigmoid(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Gives a config SigLIP's sigmoid loss (Zhai et al., ICCV 2023, arXiv 2303.15343) in place of InfoNCE for its
  image-text terms, in place: CLIP's (and MVS's view pairs) and NNS's. As in the paper, the temperature
  t = exp(logit_scale) starts at 10 and the bias b at -10, both learned, neither clamped nor capped. The terms are
  computed around a ring of devices (loss.sigmoid_implementation)."""
  c.loss.contrastive = "sigmoid"
  c.model.logit_scale.update({"init": math.log(10.0), "min": -math.inf, "max": math.inf, "cap": math.inf})
  c.model.logit_bias_init = -10.0
  return c
