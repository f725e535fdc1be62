"""SLIP's image self-supervision: SimCLR's NT-Xent between two views of each image, over the global batch.

Each device holds the head outputs of its b examples in both views. Inside `jax.shard_map` it gathers the
normalised outputs of every device, scores its 2b rows ([z1; z2]) against the 2N gathered columns ([Z1; Z2]):
each row's positive is the other view of the same example, its negatives the 2N - 2 other columns (its own column
is left out). Gradients flow back through the gather; no device holds a 2N x 2N matrix. With `mesh=None` the same
code runs on unsharded arrays.
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from declip_jax.losses import contrastive


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float, mesh: Optional[Mesh] = None,
            batch_axes: Sequence[str] = contrastive.BATCH_AXES, chunk: Optional[int] = None) -> jax.Array:
  """NT-Xent (official SLIP: `NT_Xent_gather`), the mean over all 2N rows of the global batch.

  Args:
    z1, z2: [B, D] the SimCLR head's outputs of the two views (not normalised), sharded over `batch_axes`.
    temperature: the cosine similarities are divided by it (official: 0.1, fixed).
    mesh: the device mesh; None for unsharded arrays.
    chunk: score this many gathered columns at a time (None or 0: all at once).
  Returns:
    A scalar.
  """
  scale = 1.0 / temperature

  def local(z1, z2, axis):
    a, b = contrastive.l2_normalize(z1), contrastive.l2_normalize(z2)
    rows, partners = jnp.concatenate([a, b]), jnp.concatenate([b, a])
    n_local = a.shape[0]
    if axis is None:
      first, columns = 0, rows
    else:
      first = jax.lax.axis_index(axis) * n_local
      columns = jnp.concatenate([jax.lax.all_gather(a, axis, tiled=True), jax.lax.all_gather(b, axis, tiled=True)])
    n_global = columns.shape[0] // 2
    own = first + jnp.arange(n_local)
    exclude = jnp.concatenate([own, n_global + own])  # A row's own column: view 1 rows in [0, N), view 2 in [N, 2N).
    dtype = jnp.promote_types(rows.dtype, jnp.float32)
    target = scale * jnp.sum(rows.astype(dtype) * partners.astype(dtype), axis=-1)
    normaliser = contrastive.logsumexp_over_columns(rows, columns, scale, chunk, exclude)
    return contrastive.global_mean(jnp.sum(normaliser - target), 2 * n_local, axis)

  if mesh is None:
    return local(z1, z2, None)
  axis = tuple(batch_axes)
  spec = P(axis)
  return jax.shard_map(lambda a, b: local(a, b, axis), mesh=mesh, in_specs=(spec, spec), out_specs=P())(z1, z2)
