"""Masked language modelling (TSS)."""

import jax
import jax.numpy as jnp

IGNORE_LABEL = -100


def masked_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy averaged over the chosen positions of the whole (global) batch.

  Args:
    logits: [B, L, V] float.
    labels: [B, L] int, the original token id at chosen positions and IGNORE_LABEL elsewhere.
  Returns:
    A scalar; 0 when no position was chosen.
  """
  chosen = labels != IGNORE_LABEL
  log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
  picked = jnp.take_along_axis(log_probs, jnp.where(chosen, labels, 0)[..., None], axis=-1)[..., 0]
  return -jnp.sum(jnp.where(chosen, picked, 0.0)) / jnp.maximum(jnp.sum(chosen), 1)
