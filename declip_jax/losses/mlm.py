"""Masked language modelling (TSS)."""

import jax
import jax.numpy as jnp

IGNORE_LABEL = -100


def cross_entropy_sums(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-row cross-entropy summed over the chosen positions, and how many were chosen.

  Args:
    logits: [B, T, V] float.
    labels: [B, T] int, the original token id at chosen positions and IGNORE_LABEL elsewhere.
  Returns:
    ([B] float32 sums of -log p(label), [B] float32 counts of chosen positions).
  """
  chosen = labels != IGNORE_LABEL
  log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
  picked = jnp.take_along_axis(log_probs, jnp.where(chosen, labels, 0)[..., None], axis=-1)[..., 0]
  return -jnp.sum(jnp.where(chosen, picked, 0.0), axis=-1), jnp.sum(chosen, axis=-1).astype(picked.dtype)


def loss_from_sums(ce_sums: jax.Array, counts: jax.Array) -> jax.Array:
  """[B] per-row sums and counts -> the mean cross-entropy over all chosen positions of the (global) batch; 0
  when none was chosen."""
  return jnp.sum(ce_sums) / jnp.maximum(jnp.sum(counts), 1)


def masked_lm_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Cross-entropy averaged over the chosen positions of the whole (global) batch.

  Args:
    logits: [B, L, V] float.
    labels: [B, L] int, the original token id at chosen positions and IGNORE_LABEL elsewhere.
  Returns:
    A scalar; 0 when no position was chosen.
  """
  return loss_from_sums(*cross_entropy_sums(logits, labels))


def chosen_positions(labels: jax.Array, max_predictions: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The first `max_predictions` chosen positions of each row, in order.

  Args:
    labels: [B, L] as in `cross_entropy_sums`.
  Returns:
    positions [B, K] int32 (rows with fewer chosen positions are padded with unchosen ones), their labels [B, K]
    (IGNORE_LABEL on padding), and whether any row has more than K chosen positions (bool scalar).
  """
  chosen = labels != IGNORE_LABEL
  positions = jnp.argsort(~chosen, axis=-1, stable=True)[:, :max_predictions].astype(jnp.int32)
  return (positions, jnp.take_along_axis(labels, positions, axis=-1),
          jnp.any(jnp.sum(chosen, axis=-1) > max_predictions))
