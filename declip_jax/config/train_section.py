"""train.*: the schedule's length, the global batch, the seed, logging, accumulation and loss-spike recovery."""

import ml_collections

from declip_jax.config.config_error import require


def defaults() -> ml_collections.ConfigDict:
  """train.*: the schedule's length, the global batch, the seed, logging, and loss-spike recovery."""
  train = ml_collections.ConfigDict()
  train.num_steps = 128_001
  train.batch_size = 4096  # Global: 128 per GPU x 32 GPUs (official).
  train.seed = 0
  train.log_every_steps = 100
  # Exact gradient accumulation (docs/design.md §17): each device's batch runs through the towers in this many
  # micro-batches (activation memory / accum_steps, the towers' forward run twice); the losses still see the
  # whole global batch, so the update equals the unaccumulated one. 1: off.
  train.accum_steps = 1
  # Official loss-spike recovery (docs/design.md §8): on a spike or a non-finite streak, restore a checkpoint at least
  # min_steps_back steps old and multiply the learning rate by lr_factor; give up after max_rollbacks.
  train.recovery = ml_collections.ConfigDict()
  train.recovery.spike_window = 100  # Running mean over the last this many finite losses.
  train.recovery.spike_threshold = 10.0  # Additive; float("inf") turns spike detection off.
  # Official: the first NaN rolls back. Here a non-finite step is skipped (the state does not change), so a
  # single bad batch costs one batch, and only a streak this long (a diverged model) rolls back.
  train.recovery.max_consecutive_nonfinite = 5
  train.recovery.min_steps_back = 600  # Official: reload from 600-800 steps back.
  train.recovery.lr_factor = 0.997
  train.recovery.max_rollbacks = 5  # Then abort with the cause; 0 aborts at the first trigger.
  return train


def validate(c: ml_collections.ConfigDict) -> None:
  """train.* and train.recovery.* (the batch against the mesh: `mesh.validate`)."""
  b = c.train.batch_size
  require(b > 0, f"train.batch_size must be positive, got {b}.")
  require(c.train.num_steps > 0, f"train.num_steps must be positive, got {c.train.num_steps}.")
  require(c.train.log_every_steps > 0, f"train.log_every_steps must be positive, got {c.train.log_every_steps}.")
  r = c.train.recovery
  for key in ("spike_window", "max_consecutive_nonfinite", "min_steps_back"):
    require(r[key] > 0, f"train.recovery.{key} must be positive, got {r[key]}.")
  require(r.spike_threshold > 0, f"train.recovery.spike_threshold must be positive, got {r.spike_threshold}.")
  require(0 < r.lr_factor <= 1, f"train.recovery.lr_factor must be in (0, 1], got {r.lr_factor}.")
  require(r.max_rollbacks >= 0, f"train.recovery.max_rollbacks must be >= 0, got {r.max_rollbacks}.")
