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


def _chunked_logsumexp(rows: jax.Array, columns: jax.Array, scale: jax.Array, chunk: int, dtype,
                       exclude: Optional[jax.Array] = None) -> jax.Array:
  """[n] logsumexp_j(scale * rows @ columns[j]) computed `chunk` columns at a time (streaming max and sum),
  leaving out column exclude[i] of row i when `exclude` ([n] int) is given.

  The scan body is rematerialised, so neither pass keeps more than one [n, chunk] block of logits.
  """
  n, total = rows.shape[0], columns.shape[0]
  pad = (-total) % chunk
  blocks = jnp.pad(columns, ((0, pad), (0, 0))).reshape((total + pad) // chunk, chunk, columns.shape[1])
  index = jnp.arange(total + pad).reshape(-1, chunk)

  @jax.checkpoint
  def body(carry, block):
    running_max, running_sum = carry
    cols, col_index = block
    logits = scale * jnp.dot(rows, cols.T, preferred_element_type=dtype)
    keep = (col_index < total)[None, :]
    if exclude is not None:
      keep = keep & (col_index[None, :] != exclude[:, None])
    logits = jnp.where(keep, logits, -jnp.inf)
    new_max = jnp.maximum(running_max, jnp.max(logits, axis=1))
    running_sum = running_sum * jnp.exp(running_max - new_max) + jnp.sum(jnp.exp(logits - new_max[:, None]), 1)
    return (new_max, running_sum), None

  init = (jnp.full((n,), -jnp.inf, dtype), jnp.zeros((n,), dtype))
  (running_max, running_sum), _ = jax.lax.scan(body, init, (blocks, index))
  return running_max + jnp.log(running_sum)


def logsumexp_over_columns(rows: jax.Array, columns: jax.Array, scale: jax.Array, chunk: Optional[int] = None,
                           exclude: Optional[jax.Array] = None) -> jax.Array:
  """[n] logsumexp_j(scale * rows @ columns[j]) over all columns [m, D] (in blocks of `chunk` when given), leaving
  out column exclude[i] of row i when `exclude` ([n] int) is given."""
  dtype = jnp.promote_types(rows.dtype, jnp.float32)
  if chunk and chunk < columns.shape[0]:
    return _chunked_logsumexp(rows, columns, scale, chunk, dtype, exclude)
  logits = scale * jnp.dot(rows, columns.T, preferred_element_type=dtype)
  if exclude is not None:
    logits = jnp.where(jnp.arange(columns.shape[0])[None, :] == exclude[:, None], -jnp.inf, logits)
  return jax.nn.logsumexp(logits, axis=-1)


def _cross_entropy_sum(rows: jax.Array, columns: jax.Array, scale: jax.Array, axis,
                       chunk: Optional[int] = None) -> jax.Array:
  """Sum over local rows of -log softmax(scale * rows @ all_columns.T)[i, own column i].

  Row i's own column is the local columns[i], so the target logit needs no gathered data; with `chunk`, the
  normaliser is accumulated over blocks of gathered columns instead of one [n, B_global] matrix.
  """
  dtype = jnp.promote_types(rows.dtype, jnp.float32)
  target = scale * jnp.sum(rows.astype(dtype) * columns.astype(dtype), axis=-1)
  if axis is not None:
    columns = jax.lax.all_gather(columns, axis, tiled=True)
  return jnp.sum(logsumexp_over_columns(rows, columns, scale, chunk) - target)


def global_mean(local_sum: jax.Array, local_rows: int, axis) -> jax.Array:
  """A sum over this device's `local_rows` rows -> the mean over the rows of every device of `axis` (None: one)."""
  if axis is None:
    return local_sum / local_rows
  return jax.lax.psum(local_sum, axis) / (local_rows * jax.lax.psum(1, axis))


def _contrastive(a: jax.Array, b: jax.Array, scale: jax.Array, symmetric: bool, mesh: Optional[Mesh],
                 batch_axes: Sequence[str], chunk: Optional[int]) -> jax.Array:
  def local(a, b, scale, axis):
    ce = _cross_entropy_sum(a, b, scale, axis, chunk)
    if symmetric:
      ce = 0.5 * (ce + _cross_entropy_sum(b, a, scale, axis, chunk))
    return global_mean(ce, a.shape[0], axis)

  if mesh is None:
    return local(a, b, scale, None)
  axis = tuple(batch_axes)
  spec = P(axis)
  fn = jax.shard_map(lambda a, b, s: local(a, b, s, axis), mesh=mesh, in_specs=(spec, spec, P()), out_specs=P())
  return fn(a, b, scale)


def symmetric_info_nce(a: jax.Array, b: jax.Array, scale: jax.Array, mesh: Optional[Mesh] = None,
                       batch_axes: Sequence[str] = BATCH_AXES, chunk: Optional[int] = None) -> jax.Array:
  """1/2 [CE(a -> b) + CE(b -> a)], mean over the global batch.

  Args:
    a, b: L2-normalised embeddings [B, D], row i of a paired with row i of b; sharded over `batch_axes`.
    scale: the (capped) logit scale, a scalar.
    mesh: the device mesh; None for unsharded arrays.
    chunk: score this many gathered columns at a time (None or 0: all at once); memory per device
      O(B_local x chunk) instead of O(B_local x B_global).
  Returns:
    A scalar.
  """
  return _contrastive(a, b, scale, True, mesh, batch_axes, chunk)


def one_way_info_nce(a: jax.Array, b: jax.Array, scale: jax.Array, mesh: Optional[Mesh] = None,
                     batch_axes: Sequence[str] = BATCH_AXES, chunk: Optional[int] = None) -> jax.Array:
  """CE(a -> b) only (each row of a classifies its partner among all rows of b), mean over the global batch."""
  return _contrastive(a, b, scale, False, mesh, batch_axes, chunk)
