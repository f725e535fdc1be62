"""CLIP-style causal text transformer with end-of-text pooling."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from declip_jax.models import layers


def eot_positions(tokens: jax.Array, eot_id: int) -> jax.Array:
  """Index of the first `eot_id` in each row of tokens [B, L] -> [B] int32.

  Not `argmax(tokens)`: in the `declip` id layout [MASK] is not the largest id, and a row may hold [MASK]s.
  """
  return jnp.argmax(tokens == eot_id, axis=-1).astype(jnp.int32)


class TextTransformer(nn.Module):
  """Token + position embeddings -> causal transformer -> ln_final; pools the EOT token and projects it."""

  vocab_size: int
  context_length: int
  width: int
  layers: int
  heads: int
  embed_dim: int
  eot_id: int
  projection_bias: bool = True
  dtype: layers.Dtype = jnp.float32
  scan: bool = True
  scan_unroll: int = 1
  remat: str = "none"  # config.REMAT_POLICIES
  attention: Optional[str] = None  # layers.MultiHeadSelfAttention.attention

  @nn.compact
  def __call__(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """tokens: [B, L] int -> (text embeddings [B, embed_dim] not normalised, token states [B, L, width])."""
    x = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
                 name="token_embedding")(tokens)
    pos = self.param("positional_embedding", nn.initializers.normal(0.01), (self.context_length, self.width))
    x = (x + pos[: tokens.shape[1]]).astype(self.dtype)
    x = layers.Transformer(self.layers, self.heads, causal=True, dtype=self.dtype, scan=self.scan,
                           scan_unroll=self.scan_unroll, remat=self.remat, attention=self.attention,
                           name="transformer")(x)
    states = layers.layer_norm("ln_final", self.dtype)(x)
    pooled = jnp.take_along_axis(states, eot_positions(tokens, self.eot_id)[:, None, None], axis=1)[:, 0]
    z = nn.Dense(self.embed_dim, use_bias=self.projection_bias, dtype=self.dtype,
                 kernel_init=nn.initializers.normal(self.width**-0.5), name="projection")(pooled)
    return z, states
