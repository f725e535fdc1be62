"""The nearest-neighbour supervision queue: `groups` FIFO ring buffers of unit text embeddings (docs/design.md §3).

State: `queue` [G, S, D] (unit rows) and `ptr` [G] int32, the next write slot of each buffer. The global batch
[B, ...] is split into G contiguous slices; slice g is looked up in buffer g ("local", the official per-GPU
queue) or in every buffer ("global"), and is enqueued into buffer g. Everything here is a pure function of
arrays; with the batch and the queue sharded the same way over the batch axes, local lookup and enqueue need
no communication.
"""

import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P


def init_queue(key: jax.Array, groups: int, group_size: int, dim: int) -> tuple[jax.Array, jax.Array]:
  """Random unit vectors [G, S, D] float32 and write pointers [G] int32 (all 0)."""
  queue = jax.random.normal(key, (groups, group_size, dim), jnp.float32)
  queue = queue / jnp.linalg.norm(queue, axis=-1, keepdims=True)
  return queue, jnp.zeros((groups,), jnp.int32)


def own_pair_fraction(group_size: int, text_views: int, num_pairs: int) -> float:
  """The expected fraction of lookups whose buffer already holds an embedding of the looked-up pair itself, from
  an earlier epoch, when batches are drawn uniformly from `num_pairs` pairs: 1 - exp(-M / num_pairs), where a
  buffer holds the last M = group_size / text_views pairs of its slice. Such a lookup finds the pair's own
  caption, and NNS then repeats the CLIP term instead of adding a neighbour's caption. Independent of the number
  of groups. Recipe (YFCC-15M, 65,536 slots, 2 views): 0.2%; the demo's 2,048 slots on 500 pairs: 87%."""
  return 1.0 - math.exp(-(group_size / text_views) / num_pairs)


def _largest_divisor_at_most(n: int, limit: int) -> int:
  for c in range(min(n, limit), 0, -1):
    if n % c == 0:
      return c
  return 1


def _top1(queries: jax.Array, buffers: jax.Array, chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """Best cosine slot of each query, scanning the slots in chunks.

  Args:
    queries: [G, b, D] unit rows.
    buffers: [G, S, D] unit rows.
    chunk_size: at most this many slots are scored at once ([G, b, chunk] similarities).
  Returns:
    (scores [G, b], slot indices [G, b] int32); ties go to the lowest slot.
  """
  s = buffers.shape[1]
  c = _largest_divisor_at_most(s, chunk_size)
  score_dtype = jnp.promote_types(queries.dtype, jnp.float32)

  def chunk_best(start):
    chunk = jax.lax.dynamic_slice_in_dim(buffers, start, c, axis=1)
    sims = jnp.einsum("gbd,gcd->gbc", queries, chunk, preferred_element_type=score_dtype)
    idx = jnp.argmax(sims, axis=-1)
    return jnp.take_along_axis(sims, idx[..., None], axis=-1)[..., 0], start + idx.astype(jnp.int32)

  def scan_chunk(carry, start):
    best, best_idx = carry
    score, idx = chunk_best(start)
    better = score > best
    return (jnp.where(better, score, best), jnp.where(better, idx, best_idx)), None

  # The first chunk starts the carry, so that it has the chunks' type (also inside shard_map).
  (best, best_idx), _ = jax.lax.scan(scan_chunk, chunk_best(jnp.int32(0)), jnp.arange(c, s, c, dtype=jnp.int32))
  return best, best_idx


def _global_lookup_sharded(queue: jax.Array, queries: jax.Array, chunk_size: int, mesh: Mesh,
                           axes: tuple[str, ...]) -> tuple[jax.Array, jax.Array]:
  """Global top-1 with the buffers split over `axes`: every device scores all queries (all-gathered) against
  its own buffers in chunks; the best score per query is agreed on from the gathered [devices, B] scores, and
  the winners' rows are summed back to their queries' devices (reduce-scatter). No device holds the queue.
  Returns (unnormalised neighbours [B, D], scores [B]), sharded like `queries`."""

  def local(queue, queries):
    dim = queue.shape[-1]
    everyone = jax.lax.all_gather(queries, axes, tiled=True)
    flat = queue.reshape(1, -1, dim)
    score, idx = _top1(everyone[None], flat, chunk_size)
    score, candidates = score[0], jnp.take_along_axis(flat, idx[..., None], axis=1)[0]
    scores = jax.lax.all_gather(score, axes)  # [devices, B]
    winner = jnp.argmax(scores, axis=0)  # Ties: the lowest device, i.e. the lowest group, as unsharded.
    mine = (winner == jax.lax.axis_index(axes))[:, None]
    neighbours = jax.lax.psum_scatter(jnp.where(mine, candidates, 0.0), axes, scatter_dimension=0, tiled=True)
    n = queries.shape[0]
    best = jax.lax.dynamic_slice_in_dim(jnp.max(scores, axis=0), jax.lax.axis_index(axes) * n, n)
    return neighbours, best

  spec = P(axes)
  return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec), out_specs=(spec, spec))(queue, queries)


def lookup(queue: jax.Array, queries: jax.Array, search: str = "local", chunk_size: int = 8192,
           mesh: Optional[Mesh] = None, batch_axes: tuple[str, ...] = ("data", "fsdp")) -> tuple[jax.Array, jax.Array]:
  """Top-1 cosine neighbour of each query in the queue.

  Args:
    queue: [G, S, D] unit rows.
    queries: [B, D] unit rows (B divisible by G); rows [g*B/G, (g+1)*B/G) belong to group g.
    search: "local" (own group's buffer) or "global" (all buffers).
    chunk_size: slots scored at once.
    mesh: when given and the buffers are split over `batch_axes` (G divisible by their size), "global" runs
      sharded (`_global_lookup_sharded`); otherwise as plain array code.
  Returns:
    (neighbours [B, D], renormalised, stop-gradient; their cosine similarity [B]).
  """
  groups, size, dim = queue.shape
  queries = jax.lax.stop_gradient(queries)
  shards = 1 if mesh is None else math.prod(mesh.shape[a] for a in batch_axes)
  if search == "global" and shards > 1 and groups % shards == 0:
    neighbours, score = _global_lookup_sharded(queue, queries, chunk_size, mesh, tuple(batch_axes))
  elif search == "local":
    q = queries.reshape(groups, -1, dim)
    score, idx = _top1(q, queue, chunk_size)
    neighbours = jnp.take_along_axis(queue, idx[..., None], axis=1)
  elif search == "global":
    flat = queue.reshape(1, groups * size, dim)
    score, idx = _top1(queries[None], flat, chunk_size)
    neighbours = jnp.take_along_axis(flat, idx[..., None], axis=1)
  else:
    raise ValueError(f"nns.search must be 'local' or 'global', got {search!r}")
  neighbours = neighbours.reshape(-1, dim)
  neighbours = neighbours / jnp.linalg.norm(neighbours, axis=-1, keepdims=True)
  return jax.lax.stop_gradient(neighbours), jax.lax.stop_gradient(score.reshape(-1))


def enqueue(queue: jax.Array, ptr: jax.Array, embeddings: list[jax.Array]) -> tuple[jax.Array, jax.Array]:
  """Writes each group's slice of every array in `embeddings`, in list order, at its buffer's pointer (FIFO).

  Args:
    queue: [G, S, D]; ptr: [G] int32.
    embeddings: arrays [B, D] of unit rows (official order: text_eda, then text).
  Returns:
    (new queue, new ptr); writes past the end wrap around to slot 0.
  """
  groups, size, dim = queue.shape
  rows = jnp.concatenate([jax.lax.stop_gradient(e).reshape(groups, -1, dim) for e in embeddings], axis=1)
  n = rows.shape[1]
  slots = (ptr[:, None] + jnp.arange(n, dtype=jnp.int32)[None]) % size

  def write(buffer, slot, new):
    return buffer.at[slot].set(new.astype(buffer.dtype))

  return jax.vmap(write)(queue, slots, rows), (ptr + n) % size
