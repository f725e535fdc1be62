"""CLIP-style Vision Transformer image tower."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from declip_jax.models import layers
from declip_jax.models.patches import kept_patches


class VisionTransformer(nn.Module):
  """Patch conv (no bias) -> [CLS] + patches + positions -> ln_pre -> transformer -> ln_post([CLS]) -> proj.

  The patch embedding uses PyTorch's default conv init, U(+-1/sqrt(fan_in)); DeCLIP's recipe keeps it frozen
  there (the optimizer, not the model, enforces that). The projection has no bias.
  """

  patch_size: int
  width: int
  layers: int
  heads: int
  embed_dim: int
  dtype: layers.Dtype = jnp.float32
  scan: bool = True
  scan_unroll: int = 1
  remat: str = "none"  # config.REMAT_POLICIES
  attention: Optional[str] = None  # layers.MultiHeadSelfAttention.attention
  mask_ratio: float = 0.0  # FLIP's patch masking: the share of patch tokens dropped when `patch_noise` is given.

  @nn.compact
  def __call__(self, images: jax.Array, project: bool = True, train: bool = False, tokens: bool = False,
               patch_noise: Optional[jax.Array] = None):
    """images: [B, H, W, 3] normalised float -> image embeddings [B, embed_dim], not normalised; with
    project=False the features before the projection, ln_post([CLS]) [B, width] (what linear probes read).
    tokens=True: (that, the patch tokens [B, patches, width]: the transformer's outputs without [CLS], before
    ln_post: FILIP's image tokens). `train` is accepted for the towers' common signature (no BatchNorm).

    patch_noise: [B, patches] floats; with mask_ratio > 0 each image keeps only its `kept_patches` patches of
    lowest noise (after the position embeddings are added; [CLS] always stays), and the patch tokens returned
    are those. None: every patch (evaluation)."""
    del train
    p = self.patch_size
    x = nn.Conv(self.width, (p, p), strides=(p, p), padding="VALID", use_bias=False, dtype=self.dtype,
                kernel_init=layers.torch_default_init(), name="patch_embed")(images.astype(self.dtype))
    x = x.reshape(x.shape[0], -1, self.width)
    scale = self.width**-0.5
    cls = self.param("class_embedding", nn.initializers.normal(scale), (self.width,))
    pos = self.param("positional_embedding", nn.initializers.normal(scale), (x.shape[1] + 1, self.width))
    cls = jnp.broadcast_to(cls.astype(x.dtype), (x.shape[0], 1, self.width))
    if patch_noise is not None and self.mask_ratio > 0:
      keep = jnp.argsort(patch_noise, axis=1)[:, :kept_patches(x.shape[1], self.mask_ratio)]
      x = jnp.take_along_axis(x + pos[1:].astype(x.dtype), keep[..., None], axis=1)
      x = jnp.concatenate([cls + pos[0].astype(x.dtype), x], axis=1)
    else:
      x = jnp.concatenate([cls, x], axis=1) + pos.astype(x.dtype)
    x = layers.layer_norm("ln_pre", self.dtype)(x)
    x = layers.Transformer(self.layers, self.heads, causal=False, dtype=self.dtype, scan=self.scan,
                           scan_unroll=self.scan_unroll, remat=self.remat, attention=self.attention,
                           name="transformer")(x)
    patch_tokens = x[:, 1:]
    x = layers.layer_norm("ln_post", self.dtype)(x[:, 0])
    if project:
      proj = self.param("proj", nn.initializers.normal(scale), (self.width, self.embed_dim))
      x = jnp.dot(x, proj.astype(x.dtype))
    return (x, patch_tokens) if tokens else x
