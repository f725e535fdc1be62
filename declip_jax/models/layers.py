"""Transformer building blocks shared by the image and text towers (CLIP style: pre-LN, QuickGELU)."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def torch_default_init():
  """PyTorch's default Linear/Conv weight init, U(+-1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5))."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def layer_norm(name: str, dtype: Dtype) -> nn.LayerNorm:
  """LayerNorm with PyTorch's epsilon; statistics are computed in float32."""
  return nn.LayerNorm(epsilon=1e-5, dtype=dtype, name=name)


def remat_policy(name: str):
  """`jax.checkpoint` policy of a `model.*.remat` name (config.REMAT_POLICIES): "full" recomputes everything
  in the backward pass, "save_dots" keeps the matmul outputs (no batch dimensions) and recomputes the
  element-wise work."""
  if name not in ("full", "save_dots"):
    raise ValueError(f"remat policy {name!r} is neither 'full' nor 'save_dots'")
  return None if name == "full" else jax.checkpoint_policies.dots_with_no_batch_dims_saveable


def quick_gelu(x: jax.Array) -> jax.Array:
  """The sigmoid approximation of GELU used by OpenAI CLIP and DeCLIP."""
  return x * jax.nn.sigmoid(1.702 * x)


class MultiHeadSelfAttention(nn.Module):
  """Self-attention with one fused input projection (PyTorch `nn.MultiheadAttention` parameter layout).

  The input projection is `in_proj_kernel` [W, 3W] and `in_proj_bias` [3W], named as in PyTorch so that weight
  import/export and the weight-decay rules (this bias IS decayed, docs/design.md §8) can find it.
  """

  heads: int
  causal: bool
  num_layers: int  # For the CLIP init scale of the output projection.
  dtype: Dtype = jnp.float32
  attention: Optional[str] = None  # jax.nn.dot_product_attention's implementation: None (JAX picks), xla, cudnn.

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, T, W] -> [B, T, W]."""
    width = x.shape[-1]
    head_dim = width // self.heads
    std = width**-0.5
    kernel = self.param("in_proj_kernel", nn.initializers.normal(std), (width, 3 * width))
    bias = self.param("in_proj_bias", nn.initializers.zeros, (3 * width,))
    qkv = jnp.einsum("btw,wk->btk", x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)
    q, k, v = jnp.split(qkv.reshape(*x.shape[:2], 3 * self.heads, head_dim), 3, axis=2)
    out = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal, implementation=self.attention)
    out = out.reshape(*x.shape[:2], width)
    out_std = std * (2 * self.num_layers) ** -0.5
    return nn.Dense(width, dtype=self.dtype, kernel_init=nn.initializers.normal(out_std), name="out_proj")(out)


class ResidualAttentionBlock(nn.Module):
  """x + attn(ln_1(x)), then + mlp(ln_2(x)); MLP is Dense(4W) -> QuickGELU -> Dense(W)."""

  heads: int
  causal: bool
  num_layers: int
  dtype: Dtype = jnp.float32
  attention: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array, _=None):
    """x: [B, T, W] -> ([B, T, W], None); the (carry, output) signature lets `nn.scan` stack blocks."""
    width = x.shape[-1]
    std = width**-0.5
    h = layer_norm("ln_1", self.dtype)(x)
    x = x + MultiHeadSelfAttention(self.heads, self.causal, self.num_layers, self.dtype, self.attention,
                                   name="attn")(h)
    h = layer_norm("ln_2", self.dtype)(x)
    h = nn.Dense(4 * width, dtype=self.dtype, kernel_init=nn.initializers.normal((2 * width) ** -0.5),
                 name="c_fc")(h)
    h = quick_gelu(h)
    h = nn.Dense(width, dtype=self.dtype, kernel_init=nn.initializers.normal(std * (2 * self.num_layers) ** -0.5),
                 name="c_proj")(h)
    return x + h, None


def in_a_loop(scan: bool, scan_unroll: int, layers: int) -> bool:
  """Whether a stack of `layers` blocks runs in a loop: scanned, `scan_unroll` blocks per iteration, from 1 to
  fewer than `layers` (0 or `layers`: unrolled, no loop)."""
  return scan and 0 < scan_unroll < layers


class Transformer(nn.Module):
  """A stack of `layers` residual attention blocks.

  With `scan` the blocks' parameters are stacked on a leading [layers] axis under `blocks` (one compiled block,
  fast compiles); without it they are `block_0 ... block_{L-1}`. `scan_unroll` blocks run per iteration of the
  scan's loop; at 0 or `layers` there is no loop (docs/design.md §21). `remat` ("none", "full", "save_dots":
  `remat_policy`) recomputes each block's activations in the backward pass.
  """

  layers: int
  heads: int
  causal: bool
  dtype: Dtype = jnp.float32
  scan: bool = True
  scan_unroll: int = 1
  remat: str = "none"
  attention: Optional[str] = None  # MultiHeadSelfAttention.attention

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, T, W] -> [B, T, W]."""
    block = ResidualAttentionBlock
    unroll = min(self.scan_unroll or self.layers, self.layers)
    if self.remat != "none":
      # Outside a loop XLA would merge the recomputation with the forward pass (undoing the remat) unless kept
      # apart; inside one the loop keeps them apart.
      looped = in_a_loop(self.scan, self.scan_unroll, self.layers)
      block = nn.remat(block, prevent_cse=not looped, policy=remat_policy(self.remat))
    if self.scan:
      stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.layers,
                      unroll=unroll)
      x, _ = stack(self.heads, self.causal, self.layers, self.dtype, self.attention, name="blocks")(x, None)
      return x
    for i in range(self.layers):
      x, _ = block(self.heads, self.causal, self.layers, self.dtype, self.attention, name=f"block_{i}")(x)
    return x
