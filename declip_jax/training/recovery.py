"""Training health: non-finite streaks and loss spikes, detected in the train step (docs/design.md §8, the
official recovery).

The train step keeps a `Health` record in the TrainState and reports a rollback cause; the loop
(`declip_jax.train`) then restores a checkpoint at least `train.recovery.min_steps_back` steps old and multiplies
the learning rate by `train.recovery.lr_factor`. Because the record is part of the state, it rolls back and
resumes with everything else, so a resumed run detects exactly what an uninterrupted one would.
"""

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections

NO_ROLLBACK, NONFINITE_STREAK, LOSS_SPIKE, NONFINITE_PARAMS = 0, 1, 2, 3
CAUSES = {NONFINITE_STREAK: "non-finite loss or gradients", LOSS_SPIKE: "loss spike",
          NONFINITE_PARAMS: "non-finite parameters"}


class TrainingAbortedError(RuntimeError):
  """Recovery gave up: the run needed more than `train.recovery.max_rollbacks` rollbacks."""


@flax.struct.dataclass
class Health:
  """What the recovery rules need to know about the run so far (all scalars replicated).

  Attributes:
    loss_window: [spike_window] float32, the last finite, non-spiking losses (a ring, slot = count % size).
    loss_count: int32, how many losses were ever written to the window.
    consecutive_nonfinite: int32, current streak of steps with a non-finite loss or gradient norm.
    nonfinite_steps: int32, all steps whose update was skipped for a non-finite loss or gradient norm.
    lr_scale: float32, multiplies the learning-rate schedule (x lr_factor per rollback).
    rollbacks: int32, rollbacks so far.
  """

  loss_window: jax.Array
  loss_count: jax.Array
  consecutive_nonfinite: jax.Array
  nonfinite_steps: jax.Array
  lr_scale: jax.Array
  rollbacks: jax.Array


def init_health(window: int) -> Health:
  zero = jnp.zeros((), jnp.int32)
  return Health(loss_window=jnp.zeros((window,), jnp.float32), loss_count=zero, consecutive_nonfinite=zero,
                nonfinite_steps=zero, lr_scale=jnp.ones((), jnp.float32), rollbacks=zero)


def window_mean(health: Health) -> jax.Array:
  """Mean of the losses in the window (0 while it is empty)."""
  size = health.loss_window.shape[0]
  filled = jnp.minimum(health.loss_count, size)
  valid = jnp.arange(size) < filled
  return jnp.sum(jnp.where(valid, health.loss_window, 0.0)) / jnp.maximum(filled, 1)


def observe(health: Health, loss: jax.Array, finite: jax.Array,
            recovery: ml_collections.ConfigDict) -> tuple[Health, jax.Array]:
  """Records one step's loss; returns the new record and the rollback cause (an int32 of this module's codes).

  A loss spikes when the window is full and the loss exceeds the window's mean by more than
  `recovery.spike_threshold` (additive). Spiking and non-finite losses do not enter the window. A non-finite
  streak of `recovery.max_consecutive_nonfinite` steps asks for a rollback.
  """
  size = health.loss_window.shape[0]
  full = health.loss_count >= size
  spike = finite & full & (loss > window_mean(health) + recovery.spike_threshold)
  record = finite & ~spike
  slot = health.loss_count % size
  window = jnp.where(record, health.loss_window.at[slot].set(loss.astype(jnp.float32)), health.loss_window)
  streak = jnp.where(finite, 0, health.consecutive_nonfinite + 1)
  new = health.replace(loss_window=window, loss_count=health.loss_count + record.astype(jnp.int32),
                       consecutive_nonfinite=streak,
                       nonfinite_steps=health.nonfinite_steps + (~finite).astype(jnp.int32))
  cause = jnp.where(streak >= recovery.max_consecutive_nonfinite, NONFINITE_STREAK,
                    jnp.where(spike, LOSS_SPIKE, NO_ROLLBACK)).astype(jnp.int32)
  return new, cause


def all_finite(tree) -> jax.Array:
  """True when every floating-point leaf of `tree` is finite (a bool scalar)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)
