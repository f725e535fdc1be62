"""How many tokens an image tower gives per image: a ViT's patches, FLIP's kept patches under masking, a
ResNet's final feature map. Plain arithmetic on the config's numbers (no JAX), shared by the ViT, the config's
checks and the FLOP counter."""

import ml_collections


def kept_patches(patches: int, mask_ratio: float) -> int:
  """How many of `patches` patch tokens an image keeps at `mask_ratio` (at least one)."""
  return max(1, round(patches * (1.0 - mask_ratio)))


def image_tokens(image: ml_collections.ConfigDict) -> int:
  """The tokens per training image of the tower `model.image` describes (FILIP's image tokens): a ViT's
  (image_size / patch_size)^2 patches, of which `kept_patches` with model.image.mask_ratio > 0; a ResNet's
  (image_size / 32)^2 positions of its final feature map."""
  if image.arch != "vit":
    return (image.image_size // 32) ** 2
  patches = (image.image_size // image.patch_size) ** 2
  return kept_patches(patches, image.mask_ratio) if image.mask_ratio > 0 else patches
