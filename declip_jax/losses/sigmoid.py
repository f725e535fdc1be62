"""SigLIP's sigmoid loss over the global batch (Zhai et al., ICCV 2023, arXiv 2303.15343; docs/design.md §19).

  L = -1/B sum_{i,j} log sigmoid(z_ij (t x_i.y_j + b)),  z_ij = +1 when i == j (a pair), -1 otherwise,

on unit rows x, y [B, D], with the temperature t and the bias b learned (the paper initialises t = 10, b = -10).
Every (i, j) is an independent binary term, so no normaliser over the batch is needed, and the sum can be taken
one block of columns at a time. Two exact ways, equal to float rounding:

- ring: inside `jax.shard_map`, each device keeps its B_local rows of x and holds one device's block of y at a
  time. It scores the block (B_local x B_local logits), adds its terms, and passes the block on to the next
  device with `jax.lax.ppermute`: devices - 1 hops. No device holds more than one foreign block or more than
  B_local x B_local logits; the gradient flows back through the hops in reverse, and each hop's logits are
  recomputed there instead of kept.
- gathered: local rows against the all-gathered y ([B_local, B_global] logits, or blocks of `chunk` columns).
  The reference, and the choice on one device or where the gather is cheap.

With `mesh=None` both run on unsharded arrays.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from declip_jax.losses.contrastive import BATCH_AXES

IMPLEMENTATIONS = ("ring", "gathered")


def _terms(x: jax.Array, y: jax.Array, scale: jax.Array, bias: jax.Array, positive: jax.Array) -> jax.Array:
  """sum_ij -log sigmoid(z_ij (scale x_i.y_j + bias)) of rows x [n, D] against columns y [m, D], with z_ij = +1
  where positive [n, m] (bool) is True, else -1. Logits in float32 at least."""
  dtype = jnp.promote_types(x.dtype, jnp.float32)
  logits = scale * jnp.dot(x, y.T, preferred_element_type=dtype) + bias
  return -jnp.sum(jax.nn.log_sigmoid(jnp.where(positive, logits, -logits)))


_terms_rematerialised = jax.checkpoint(_terms)  # Its [n, m] logits are recomputed in the backward pass.


def _negatives(x: jax.Array, y: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
  """`_terms` of a block in which no pair is positive (another device's texts)."""
  return _terms_rematerialised(x, y, scale, bias, jnp.zeros((x.shape[0], y.shape[0]), bool))


def _own_block(x: jax.Array, y: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
  """`_terms` of a device's own pairs: row i's positive is column i."""
  return _terms_rematerialised(x, y, scale, bias, jnp.eye(x.shape[0], y.shape[0], dtype=bool))


def _ring_sum(x, y, scale, bias, axis, devices: int) -> jax.Array:
  """This device's rows against every device's columns, the column blocks passed around the ring."""
  total = _own_block(x, y, scale, bias)
  if devices == 1:
    return total
  step_to_next = [(d, (d + 1) % devices) for d in range(devices)]

  def hop(carry, _):
    block, total = carry
    block = jax.lax.ppermute(block, axis, step_to_next)
    return (block, total + _negatives(x, block, scale, bias)), None

  (_, total), _ = jax.lax.scan(hop, (y, total), None, length=devices - 1)
  return total


def _gathered_sum(x, y, scale, bias, axis, chunk: Optional[int]) -> jax.Array:
  """This device's rows against the all-gathered columns, in blocks of `chunk` columns when given."""
  n = x.shape[0]
  first_row = 0 if axis is None else jax.lax.axis_index(axis) * n
  columns = y if axis is None else jax.lax.all_gather(y, axis, tiled=True)
  total_columns = columns.shape[0]
  own_column = first_row + jnp.arange(n)
  if not chunk or chunk >= total_columns:
    return _terms(x, columns, scale, bias, own_column[:, None] == jnp.arange(total_columns)[None, :])
  pad = (-total_columns) % chunk
  blocks = jnp.pad(columns, ((0, pad), (0, 0))).reshape(-1, chunk, columns.shape[1])
  index = jnp.arange(total_columns + pad).reshape(-1, chunk)

  @jax.checkpoint
  def block_sum(_, block):
    cols, col_index = block
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    logits = scale * jnp.dot(x, cols.T, preferred_element_type=dtype) + bias
    signed = jnp.where(own_column[:, None] == col_index[None, :], logits, -logits)
    return None, jnp.sum(jnp.where((col_index < total_columns)[None, :], -jax.nn.log_sigmoid(signed), 0.0))

  _, sums = jax.lax.scan(block_sum, None, (blocks, index))
  return jnp.sum(sums)


def sigmoid_loss(x: jax.Array, y: jax.Array, scale: jax.Array, bias: jax.Array, mesh: Optional[Mesh] = None,
                 batch_axes: Sequence[str] = BATCH_AXES, implementation: str = "ring",
                 chunk: Optional[int] = None) -> jax.Array:
  """SigLIP's loss of paired unit rows, summed over every (row, column) pair of the global batch, divided by B.

  Args:
    x, y: L2-normalised embeddings [B, D] (images and texts), row i of x paired with row i of y; sharded over
      `batch_axes` of `mesh`.
    scale: the temperature t = exp(t'), a scalar; bias: b, a scalar.
    mesh: the device mesh; None for unsharded arrays.
    implementation: "ring" (ppermute the text blocks; per-device logits B_local x B_local) or "gathered"
      (all-gather the texts; B_local x B_global, or B_local x chunk with `chunk`).
    chunk: "gathered" only: score this many gathered columns at a time (None or 0: all at once).
  Returns:
    A scalar.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"sigmoid loss implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}.")
  if mesh is None:
    return _gathered_sum(x, y, scale, bias, None, chunk) / x.shape[0]
  axis = tuple(batch_axes)
  devices = int(np.prod([mesh.shape[a] for a in axis]))

  def local(x, y, scale, bias):
    if implementation == "ring":
      total = _ring_sum(x, y, scale, bias, axis, devices)
    else:
      total = _gathered_sum(x, y, scale, bias, axis, chunk)
    return jax.lax.psum(total, axis) / (x.shape[0] * devices)

  spec = P(axis)
  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, P(), P()), out_specs=P())(x, y, scale, bias)
