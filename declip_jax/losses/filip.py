"""FILIP's token-wise contrastive loss (late interaction), as the official code computes it.

For a pair of token sets, image i ([n_img, d]) and text j ([n_txt, d]), both L2-normalised per token:
  image -> text logit L_I[i, j] = s * mean over i's tokens of the max over j's selected text tokens of the cosine,
  text -> image logit L_T[j, i] = s * mean over j's tokens of the max over i's selected image tokens.
Token selection (official, top_k = 16): in each pair, C = X_i Y_i^T; an image token's score is its row sum, a text
token's its column sum; each side keeps its `top_k` best. Only the selected tokens are all-gathered across
devices (with gradient); the local side uses all its tokens. The loss is the symmetric cross-entropy of L_I and
L_T over the global batch (labels at the global index).

Memory: the logits are computed in blocks of `chunk` gathered examples, each block rematerialised, so a device
holds [b, n_tokens, chunk, top_k] similarities at a time, never [b, n, N, top_k] for the whole global batch N.

The official code scores every text position, padding included; `text_mask` (the FILIP paper's variant) leaves
padding out of the selection, of the means and of the maxima.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from declip_jax.losses import contrastive


def select_tokens(image_tokens: jax.Array, text_tokens: jax.Array, top_k: int,
                  text_mask: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Each pair's `top_k` image and text tokens by their in-pair similarity sums.

  Args:
    image_tokens: [B, n, d] and text_tokens [B, m, d], normalised per token.
    text_mask: [B, m] bool, False at padding (never selected); None: every position counts (official).
  Returns:
    (selected image tokens [B, k, d], their validity [B, k], selected text tokens [B, k, d], their validity [B, k]);
    a text with fewer than k valid positions fills its selection with invalid ones.
  """
  similarity = jnp.einsum("bnd,bmd->bnm", jax.lax.stop_gradient(image_tokens), jax.lax.stop_gradient(text_tokens))
  text_valid = jnp.ones(text_tokens.shape[:2], bool) if text_mask is None else text_mask
  image_scores = jnp.sum(jnp.where(text_valid[:, None, :], similarity, 0.0), axis=2)
  text_scores = jnp.where(text_valid, jnp.sum(similarity, axis=1), -jnp.inf)
  _, image_index = jax.lax.top_k(image_scores, top_k)
  _, text_index = jax.lax.top_k(text_scores, top_k)
  pick = lambda x, index: jnp.take_along_axis(x, index[..., None], axis=1)
  return (pick(image_tokens, image_index), jnp.ones(image_index.shape, bool), pick(text_tokens, text_index),
          jnp.take_along_axis(text_valid, text_index, axis=1))


def token_wise_logits(tokens: jax.Array, token_valid: jax.Array, others: jax.Array, others_valid: jax.Array,
                      scale: jax.Array, chunk: Optional[int] = None) -> jax.Array:
  """[b, N] logits s * mean over each row's valid tokens of the max over each column's valid selected tokens.

  Args:
    tokens: [b, n, d] a side's tokens (normalised), token_valid [b, n] bool.
    others: [N, k, d] the other side's selected tokens (normalised), others_valid [N, k] bool.
    chunk: columns per block (None or 0: all N at once); each block is rematerialised.
  """
  dtype = jnp.promote_types(tokens.dtype, jnp.float32)
  count = jnp.maximum(jnp.sum(token_valid, axis=1), 1).astype(dtype)

  def block(cols, cols_valid):
    cosine = jnp.einsum("bnd,jkd->bnjk", tokens, cols, preferred_element_type=dtype)
    best = jnp.max(jnp.where(cols_valid[None, None], cosine, -jnp.inf), axis=-1)  # [b, n, j]
    return jnp.sum(jnp.where(token_valid[:, :, None], best, 0.0), axis=1) / count[:, None]  # [b, j]

  total = others.shape[0]
  if not chunk or chunk >= total:
    return scale * block(others, others_valid)
  pad = (-total) % chunk
  cols = jnp.pad(others, ((0, pad), (0, 0), (0, 0))).reshape(-1, chunk, *others.shape[1:])
  valid = jnp.pad(others_valid, ((0, pad), (0, 0)), constant_values=True).reshape(-1, chunk, others.shape[1])
  blocks = jax.lax.map(lambda x: jax.checkpoint(block)(*x), (cols, valid))  # [blocks, b, chunk]
  return scale * jnp.moveaxis(blocks, 0, 1).reshape(tokens.shape[0], -1)[:, :total]


def filip_loss(image_tokens: jax.Array, text_tokens: jax.Array, scale: jax.Array, top_k: int,
               mesh: Optional[Mesh] = None, batch_axes: Sequence[str] = contrastive.BATCH_AXES,
               chunk: Optional[int] = None, text_mask: Optional[jax.Array] = None) -> jax.Array:
  """The symmetric token-wise InfoNCE: 1/2 [CE(L_I) + CE(L_T)], mean over the global batch.

  Args:
    image_tokens: [B, n, d] mapped image tokens, text_tokens [B, m, d] mapped text tokens (not normalised),
      sharded over `batch_axes`; row i of each is pair i.
    scale: the token-wise logit scale (exp of FILIP's own learnable log-scale), a scalar.
    top_k: tokens selected per side and pair (at most n and m).
    mesh: the device mesh; None for unsharded arrays.
    chunk: gathered pairs scored per block (None or 0: all at once).
    text_mask: [B, m] bool, False at padding (the FILIP paper); None: every position counts (official).
  Returns:
    A scalar.
  """
  if text_mask is None:
    text_mask = jnp.ones(text_tokens.shape[:2], bool)
    official = True
  else:
    official = False

  def local(image_tokens, text_tokens, text_mask, scale, axis):
    x, y = contrastive.l2_normalize(image_tokens), contrastive.l2_normalize(text_tokens)
    selected_x, valid_x, selected_y, valid_y = select_tokens(x, y, top_k, None if official else text_mask)
    n_local = x.shape[0]
    if axis is None:
      first = 0
    else:
      first = jax.lax.axis_index(axis) * n_local
      gather = lambda t: jax.lax.all_gather(t, axis, tiled=True)
      selected_x, valid_x, selected_y, valid_y = map(gather, (selected_x, valid_x, selected_y, valid_y))
    image_valid = jnp.ones(x.shape[:2], bool)
    per_image = token_wise_logits(x, image_valid, selected_y, valid_y, scale, chunk)  # [b, N]
    per_text = token_wise_logits(y, text_mask, selected_x, valid_x, scale, chunk)  # [b, N]
    labels = first + jnp.arange(n_local)
    cross_entropy = lambda logits: jnp.sum(jax.nn.logsumexp(logits, axis=-1)
                                           - jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0])
    return contrastive.global_mean(0.5 * (cross_entropy(per_image) + cross_entropy(per_text)), n_local, axis)

  if mesh is None:
    return local(image_tokens, text_tokens, text_mask, scale, None)
  axis = tuple(batch_axes)
  spec = P(axis)
  fn = jax.shard_map(lambda x, y, m, s: local(x, y, m, s, axis), mesh=mesh, in_specs=(spec, spec, spec, P()),
                     out_specs=P())
  return fn(image_tokens, text_tokens, text_mask, scale)
