"""nns.*: the nearest-neighbour queue (docs/design.md §3), and the caption views it holds."""

import ml_collections

from declip_jax.config.config_error import require


def defaults() -> ml_collections.ConfigDict:
  """nns.*: the nearest-neighbour queue (docs/design.md §3)."""
  nns = ml_collections.ConfigDict()
  nns.groups = 32  # Official: one queue per GPU, 32 GPUs.
  nns.group_size = 65_536
  # A buffer holds the last group_size / (1 + data.eda) pairs of its slice. On data with fewer than ~10x that
  # many pairs, lookups often find the pair's own caption from an earlier epoch and NNS repeats the CLIP term
  # (nn_queue.own_pair_fraction; training warns for built-in data). Small data: a smaller group_size.
  nns.search = "local"  # "local": own group's buffer (official); "global": all buffers.
  nns.chunk_size = 8192  # Queue slots scored at once in the lookup.
  return nns


def text_views(c: ml_collections.ConfigDict) -> int:
  """Captions per pair that the text tower encodes and NNS enqueues: the MLM one, and the EDA one with data.eda."""
  return 1 + int(c.data.eda)


def validate(c: ml_collections.ConfigDict, num_batch_shards: int) -> None:
  """nns.* (with NNS on), against the global batch and the mesh's batch shards."""
  b, w = c.train.batch_size, c.loss.weights
  if w.nns > 0:
    groups = c.nns.groups
    require(groups > 0 and b % groups == 0,
            f"train.batch_size ({b}) must be divisible by nns.groups ({groups}): each group's buffer is fed by "
            "its own contiguous slice of the batch.")
    per_group = (b // groups) * text_views(c)
    require(c.nns.group_size >= per_group,
            f"nns.group_size ({c.nns.group_size}) must hold one step's {per_group} enqueued embeddings per group "
            "(train.batch_size / nns.groups x text views).")
    require(c.nns.search in ("local", "global"), f"nns.search must be 'local' or 'global', got {c.nns.search!r}.")
    require(c.nns.chunk_size > 0, f"nns.chunk_size must be positive, got {c.nns.chunk_size}.")
    require(groups % num_batch_shards == 0 or num_batch_shards % groups == 0,
            f"nns.groups ({groups}) and the {num_batch_shards} batch shards of mesh.shape must divide one another.")
