"""model.*: the towers, their heads and the logit scales (the recipe's ViT-B/32; presets.py has others)."""

import math

import ml_collections

from declip_jax.config.config_error import require

REMAT_POLICIES = ("none", "full", "save_dots")  # model.image.remat / model.text.remat (models/layers.py).


def defaults() -> ml_collections.ConfigDict:
  """model.*: the towers, their heads and the logit scales (the recipe's ViT-B/32; presets.py has others)."""
  model = ml_collections.ConfigDict()
  model.embed_dim = 512
  model.dtype = "float32"  # Compute dtype; parameters and optimizer state stay float32.
  model.scan_layers = True
  # Blocks per iteration of a scanned tower's loop; 0 (or the layer count): no loop, the parameters still stacked.
  # A loop compiles one block, but zero-fills its stacked residuals and keeps more of them (docs/design.md §21:
  # ViT-B/32 DeCLIP at 128 per H100, 33.4 GiB with the loop, 22.1 without).
  model.scan_unroll = 0
  # The two image views (ViT towers; a ResNet's BatchNorm keeps one call per view) and the two text views run
  # as one tower call each on twice the rows: the same function, larger matmuls.
  model.batch_views = True
  # jax.nn.dot_product_attention's implementation: "" (JAX chooses), "xla", or "cudnn" (NVIDIA GPUs, bf16/fp16).
  model.attention_implementation = ""
  model.image = ml_collections.ConfigDict()
  model.image.arch = "vit"  # "vit" or "resnet" (CLIP's ModifiedResNet); set_architecture picks both.
  model.image.image_size = 224
  model.image.patch_size = 32
  model.image.width = 768
  model.image.layers = 12
  model.image.heads = 12
  model.image.freeze_patch_embed = True  # Official: the ViT patch embedding stays at its random init.
  # Rematerialisation per tower and layer/Bottleneck: "none", "full" (recompute all in the backward pass) or
  # "save_dots" (keep matmul outputs, recompute the element-wise work).
  model.image.remat = "none"
  # FLIP's patch masking (ViT only, docs/design.md §18): each training image view keeps round((1 - mask_ratio) x
  # patches) of its patches, chosen per example from the step's RNG; evaluation never masks. The last
  # unmasked_final_fraction of train.num_steps trains unmasked (FLIP's unmasked tuning). 0: off.
  model.image.mask_ratio = 0.0
  model.image.unmasked_final_fraction = 0.0
  # ResNet towers only (width = stem width, heads = attention-pool heads): Bottlenecks per stage, and BatchNorm
  # statistics over groups of this many examples per view (official RN50: SyncBN over 32 GPUs x 128 images).
  model.image.resnet_layers = (3, 4, 6, 3)
  model.image.bn_group_size = 4096
  model.image.bn_momentum = 0.9  # flax convention; = PyTorch momentum 0.1.
  model.image.bn_epsilon = 1e-5
  model.text = ml_collections.ConfigDict()
  model.text.context_length = 77
  model.text.vocab_size = 49_409  # `declip` layout: 49,408 BPE tokens + [MASK].
  model.text.width = 512
  model.text.layers = 12
  model.text.heads = 8
  model.text.projection_bias = True  # Official DeCLIP text projection is a Linear with bias.
  model.text.remat = "none"  # As model.image.remat.
  model.logit_scale = ml_collections.ConfigDict()
  model.logit_scale.init = math.log(1 / 0.07)
  model.logit_scale.min = 3.0  # Official: s clamped to [3, 6] before and after each update.
  model.logit_scale.max = 6.0  # open_clip instead: min 0, max ln(100).
  model.logit_scale.cap = 100.0  # Forward uses min(exp(s), cap) with a straight-through gradient.
  # loss.contrastive "sigmoid" only: the learned bias b of SigLIP's logits t x.y + b (paper: initialised at -10;
  # the temperature t is exp(logit_scale), initialised at log 10 by presets.use_sigmoid).
  model.logit_bias_init = -10.0
  # SLIP's SimCLR head on the image tower's pre-projection feature (loss.weights.simclr > 0).
  model.simclr = ml_collections.ConfigDict()
  model.simclr.hidden_dim = 4096
  model.simclr.out_dim = 256
  # FILIP's token-wise term (loss.weights.filip > 0): per-token mappings to `dim`, top_k tokens per side and pair,
  # its own learnable log-scale (official: init ln(1/0.07), clamped to [3, 6], no cap on exp).
  model.filip = ml_collections.ConfigDict()
  model.filip.dim = 256
  model.filip.top_k = 16
  model.filip.mask_padding = False  # Official: padding positions count; True: the FILIP paper's masking.
  model.filip.logit_scale = ml_collections.ConfigDict()
  model.filip.logit_scale.init = math.log(1 / 0.07)
  model.filip.logit_scale.min = 3.0
  model.filip.logit_scale.max = 6.0
  return model


def validate(c: ml_collections.ConfigDict) -> None:
  """model.*: dtype, attention, remat, each tower's shapes, the logit-scale clamp."""
  b = c.train.batch_size
  require(c.model.dtype in ("float32", "bfloat16"), f"model.dtype must be float32 or bfloat16, got {c.model.dtype!r}.")
  img = c.model.image
  require(c.model.attention_implementation in ("", "xla", "cudnn"),
          "model.attention_implementation must be '', 'xla' or 'cudnn', got "
          f"{c.model.attention_implementation!r}.")
  for tower in ("image", "text"):
    require(c.model[tower].remat in REMAT_POLICIES,
            f"model.{tower}.remat must be one of {', '.join(REMAT_POLICIES)}, got {c.model[tower].remat!r}.")
  require(c.model.scan_unroll >= 0, f"model.scan_unroll must be 0 (no loop) or more, got {c.model.scan_unroll}.")
  require(img.arch in ("vit", "resnet"), f"model.image.arch must be 'vit' or 'resnet', got {img.arch!r}.")
  if img.arch == "vit":
    require(img.image_size % img.patch_size == 0,
            f"model.image.image_size ({img.image_size}) must be a multiple of model.image.patch_size "
            f"({img.patch_size}).")
    require(img.width % img.heads == 0, "model.image.width must be divisible by model.image.heads.")
    require(0.0 <= img.mask_ratio < 1.0, f"model.image.mask_ratio must be in [0, 1), got {img.mask_ratio}.")
  else:
    require(img.mask_ratio == 0.0, f"model.image.mask_ratio ({img.mask_ratio}) applies to ViT towers (it drops "
            "patch tokens); a ResNet has none: set it 0.")
    require(img.image_size % 32 == 0, f"model.image.image_size ({img.image_size}) must be a multiple of 32 for "
            "a ResNet tower (five halvings).")
    require(not img.freeze_patch_embed, "model.image.freeze_patch_embed applies to ViT towers; a ResNet has no "
            "patch embedding: set it False.")
    require(len(img.resnet_layers) == 4 and min(img.resnet_layers) >= 1,
            f"model.image.resnet_layers must be 4 positive block counts, got {tuple(img.resnet_layers)}.")
    require((img.width * 32) % img.heads == 0,
            "model.image.width x 32 (the attention pool's width) must be divisible by model.image.heads.")
    g = img.bn_group_size
    require(g > 1 and b % g == 0,
            f"train.batch_size ({b}) must be divisible by model.image.bn_group_size ({g}, > 1): the ResNet "
            "tower's BatchNorm statistics are taken over groups of that many examples.")
  require(c.model.text.width % c.model.text.heads == 0, "model.text.width must be divisible by model.text.heads.")
  f = img.unmasked_final_fraction
  require(0.0 <= f <= 1.0, f"model.image.unmasked_final_fraction must be in [0, 1], got {f}.")
  ls = c.model.logit_scale
  require(ls.min <= ls.max, "model.logit_scale.min must be <= model.logit_scale.max.")
