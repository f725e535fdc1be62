"""Loss-spike / non-finite recovery and checkpoint fingerprints: the rules against NumPy, the rollback in the loop."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from declip_jax import train
from declip_jax.training import checkpointing, recovery, train_setup
from tests import faults
from tests.tiny_config import tiny_config


def numpy_causes(losses, window, threshold, max_streak):
  """The official rule in plain Python: running mean of the last `window` accepted losses, additive threshold."""
  accepted, streak, causes = [], 0, []
  for loss in losses:
    finite = np.isfinite(loss)
    spike = finite and len(accepted) >= window and loss > np.mean(accepted[-window:]) + threshold
    if finite and not spike:
      accepted.append(loss)
    streak = 0 if finite else streak + 1
    causes.append(recovery.NONFINITE_STREAK if streak >= max_streak else recovery.LOSS_SPIKE if spike else 0)
  return causes


def test_observe_matches_the_numpy_rule():
  rng = np.random.default_rng(0)
  losses = 5 + rng.normal(0, 1, 300)
  losses[[40, 41, 120, 121, 122, 200, 201, 202, 203]] = np.nan
  losses[[160, 161, 250]] += 12.0  # Spikes, once the window holds 100 losses (two in a row: no effect on the mean).
  losses[190] += 9.0  # Below the threshold.
  r = ml_collections.ConfigDict({"spike_threshold": 10.0, "max_consecutive_nonfinite": 3})
  observe = jax.jit(lambda h, loss: recovery.observe(h, loss, jnp.isfinite(loss), r))
  health, causes = recovery.init_health(100), []
  for loss in losses:
    health, cause = observe(health, jnp.float32(loss))
    causes.append(int(cause))
  expected = numpy_causes(losses.astype(np.float32), 100, 10.0, 3)
  assert causes == expected
  assert causes[160] == causes[161] == causes[250] == recovery.LOSS_SPIKE and causes[190] == 0
  assert [i for i, c in enumerate(causes) if c == recovery.NONFINITE_STREAK] == [122, 202, 203]
  assert int(health.nonfinite_steps) == 9
  assert int(health.loss_count) == 300 - 9 - 3


def test_fingerprint_sees_one_flipped_bit_and_moved_values():
  tree = {"a": jnp.arange(12.0).reshape(3, 4), "b": jnp.array([1, 2, 3], jnp.int32), "c": jnp.array(True)}
  base = np.asarray(checkpointing.fingerprint(tree))
  flipped = np.asarray(tree["a"]).copy()
  flipped.view(np.uint32)[1, 2] ^= 1
  assert (np.asarray(checkpointing.fingerprint({**tree, "a": jnp.asarray(flipped)})) != base).tolist() == [
      True, False, False]
  swapped = jnp.asarray(np.asarray(tree["a"])[:, ::-1])
  assert np.asarray(checkpointing.fingerprint({**tree, "a": swapped}))[0] != base[0]
  assert (np.asarray(checkpointing.fingerprint(tree)) == base).all()


def recovery_config(num_steps=24):
  c = tiny_config()
  c.train.num_steps = num_steps
  c.checkpoint.every_steps = 4
  c.checkpoint.keep = 10
  c.eval.every_steps = 1000
  c.train.recovery.spike_window = 4
  c.train.recovery.min_steps_back = 6
  c.train.recovery.max_rollbacks = 3
  return c


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def test_rollbacks_restore_everything_but_the_health_record(tmp_path, monkeypatch):
  """A skipped NaN batch, NaN parameters caught before a save, and a loss spike, in one run."""
  config = recovery_config()
  remove = faults.install({(5, 0): "nan_batch", (10, 0): "nan_params", (18, 1): "spike"})
  after_rollback = []
  original = train._Trainer.roll_back

  def recording_roll_back(self, *args):
    original(self, *args)
    after_rollback.append((self.step, _host(self.state)))

  monkeypatch.setattr(train._Trainer, "roll_back", recording_roll_back)
  try:
    out = train.run(config, str(tmp_path))
  finally:
    remove()
  reasons = [reason for _, reason in out["rollbacks"]]
  assert [step for step, _ in out["rollbacks"]] == [12, 18]
  assert reasons[0].startswith("non-finite parameters") and reasons[1].startswith("loss spike at step 18")
  assert [step for step, _ in after_rollback] == [4, 12]
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=10, async_save=False)
  setup = train_setup.Setup(config)
  for (target, state), rollbacks in zip(after_rollback, (1, 2)):
    saved = _host(ckpt.restore(target, setup.abstract_state)[0])
    jax.tree.map(np.testing.assert_array_equal, state.replace(health=saved.health), saved)
    assert int(state.health.rollbacks) == rollbacks
    np.testing.assert_allclose(state.health.lr_scale, 0.997**rollbacks, rtol=1e-6)
  final = _host(ckpt.restore(24, setup.abstract_state)[0])
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(final) if x.dtype.kind == "f")
  assert int(final.health.rollbacks) == 2 and int(final.health.nonfinite_steps) == 0
  assert ckpt.all_steps() == [4, 8, 12, 16, 20, 24]  # 8 and 16 were deleted by the rollbacks and saved again.
  ckpt.close()


def test_a_fault_that_keeps_coming_back_aborts_with_the_cause(tmp_path):
  config = recovery_config(num_steps=16)
  config.train.recovery.max_rollbacks = 2
  remove = faults.install({(10, r): "spike" for r in range(3)})
  try:
    with pytest.raises(recovery.TrainingAbortedError, match=r"loss spike at step 10.*max_rollbacks"):
      train.run(config, str(tmp_path))
  finally:
    remove()
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=10, async_save=False)
  assert ckpt.all_steps() == [4, 8]
  ckpt.close()
