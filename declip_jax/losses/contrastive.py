"""InfoNCE over the global batch: local rows scored against all-gathered columns.

Each device holds B_local rows of both embeddings. Inside `jax.shard_map` it gathers the other side's
columns ([B_global, D]), scores its own rows against them ([B_local, B_global] logits) and labels row i with
column `axis_index * B_local + i`. Gradients flow back through the gather. No device ever holds a
B_global x B_global matrix. With `mesh=None` the same code runs on unsharded arrays (one shard).
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def capped_logit_scale(logit_scale_param: jax.Array, cap: float) -> jax.Array:
  """min(exp(s), cap) in value, with the gradient of exp(s) (official torch `.data` clamp).

  `jnp.minimum` would zero the gradient above the cap; this passes it straight through.
  """
  e = jnp.exp(logit_scale_param)
  return e + jax.lax.stop_gradient(jnp.minimum(e, cap) - e)


def l2_normalize(x: jax.Array, eps: float = 0.0) -> jax.Array:
  """x / (||x|| + eps) along the last axis."""
  return x / (jnp.linalg.norm(x, axis=-1, keepdims=True) + eps)


def _cross_entropy_sum(rows: jax.Array, columns: jax.Array, scale: jax.Array, axis) -> jax.Array:
  """Sum over local rows of -log softmax(scale * rows @ all_columns.T)[i, own column i]."""
  n = rows.shape[0]
  offset = 0
  if axis is not None:
    columns = jax.lax.all_gather(columns, axis, tiled=True)
    offset = jax.lax.axis_index(axis) * n
  logits = scale * jnp.dot(rows, columns.T, preferred_element_type=jnp.promote_types(rows.dtype, jnp.float32))
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  labels = offset + jnp.arange(n)
  return -jnp.sum(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


def _global_mean(local_sum: jax.Array, local_rows: int, axis) -> jax.Array:
  if axis is None:
    return local_sum / local_rows
  return jax.lax.psum(local_sum, axis) / (local_rows * jax.lax.psum(1, axis))


def _contrastive(a: jax.Array, b: jax.Array, scale: jax.Array, symmetric: bool, mesh: Optional[Mesh],
                 batch_axes: Sequence[str]) -> jax.Array:
  def local(a, b, scale, axis):
    ce = _cross_entropy_sum(a, b, scale, axis)
    if symmetric:
      ce = 0.5 * (ce + _cross_entropy_sum(b, a, scale, axis))
    return _global_mean(ce, a.shape[0], axis)

  if mesh is None:
    return local(a, b, scale, None)
  axis = tuple(batch_axes)
  spec = P(axis)
  fn = jax.shard_map(lambda a, b, s: local(a, b, s, axis), mesh=mesh, in_specs=(spec, spec, P()), out_specs=P())
  return fn(a, b, scale)


def symmetric_info_nce(a: jax.Array, b: jax.Array, scale: jax.Array, mesh: Optional[Mesh] = None,
                       batch_axes: Sequence[str] = BATCH_AXES) -> jax.Array:
  """1/2 [CE(a -> b) + CE(b -> a)], mean over the global batch.

  Args:
    a, b: L2-normalised embeddings [B, D], row i of a paired with row i of b; sharded over `batch_axes`.
    scale: the (capped) logit scale, a scalar.
    mesh: the device mesh; None for unsharded arrays.
  Returns:
    A scalar.
  """
  return _contrastive(a, b, scale, True, mesh, batch_axes)


def one_way_info_nce(a: jax.Array, b: jax.Array, scale: jax.Array, mesh: Optional[Mesh] = None,
                     batch_axes: Sequence[str] = BATCH_AXES) -> jax.Array:
  """CE(a -> b) only (each row of a classifies its partner among all rows of b), mean over the global batch."""
  return _contrastive(a, b, scale, False, mesh, batch_axes)
