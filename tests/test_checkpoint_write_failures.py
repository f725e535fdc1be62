"""A checkpoint that cannot be written stops the run in one line (training/checkpointing.py, main.py): the space
check before a save, the translation of a failed write, and the command line's exit code, output and resume."""

import errno
import json
import os
import resource
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath

from declip_jax.training import checkpointing
from tests.conftest import REPO

TINY = "tests/tiny_config.py"


def test_a_save_that_cannot_fit_is_refused_before_it_starts(tmp_path, monkeypatch):
  state = {"w": jnp.zeros((256, 256), jnp.float32)}  # 256 KiB.
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3, async_save=False)
  assert ckpt.save(1, state, {})
  on_disk = sum(f.stat().st_size for f in (tmp_path / "checkpoints" / "1").rglob("*") if f.is_file())
  taken = max(on_disk, 256 * 256 * 4)  # What the last save took, or the state's bytes if more (zeros compress).
  monkeypatch.setattr(checkpointing, "free_bytes", lambda _: taken - 1)
  with pytest.raises(checkpointing.CheckpointWriteError) as refused:
    ckpt.save(2, state, {})
  message = str(refused.value)
  assert message.startswith(f"checkpoint 2 cannot be written in {tmp_path / 'checkpoints'}: a checkpoint takes")
  assert "the last good checkpoint is step 1" in message and "rerun the same command to resume" in message
  assert "\n" not in message and ckpt.all_steps() == [1]
  monkeypatch.setattr(checkpointing, "free_bytes", lambda _: taken + 1)  # Fits, but the next will not: a warning.
  assert ckpt.save(2, state, {}) and ckpt.all_steps() == [1, 2]
  ckpt.close()


@pytest.mark.parametrize("error, reason", [
    (ValueError("RESOURCE_EXHAUSTED: Error writing \"w/0\" in OCDBT database: Failed to write 206942 bytes to file "
                "5: No space left on device [os_error_code='28']"), "No space left on device"),
    (OSError(errno.EACCES, "Permission denied"), "Permission denied"),
    (RuntimeError("wrapped"), None),
    (ValueError("shapes do not match"), None),
])
def test_a_write_failure_is_told_from_other_errors(error, reason):
  assert checkpointing._write_failure_reason(error) == reason  # pylint: disable=protected-access


def test_a_write_failure_in_a_background_save_is_one_line_and_the_rerun_resumes(tmp_path):
  """Files over 150 KB fail to write (RLIMIT_FSIZE, as a quota would): the asynchronous save of step 2 fails in
  Orbax's writer threads; the run stops at the next save with exit 74 and one line, no traceback, no partial
  checkpoint; the same command without the limit then trains to the end."""
  args = [sys.executable, "-m", "declip_jax.main", f"--config={TINY}", f"--workdir={tmp_path}",
          "--config.train.num_steps=6", "--config.checkpoint.every_steps=2", "--config.eval.every_steps=1000"]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env, preexec_fn=limit)
  assert out.returncode == checkpointing.EXIT_CODE, out.stderr[-3000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "could not be written in" in errors[0] and "File too large" in errors[0], errors
  assert "rerun the same command to resume" in errors[0]
  assert not list((tmp_path / "checkpoints").glob("*orbax-checkpoint-tmp*"))
  assert not (tmp_path / "run.lock").exists()
  again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
  assert again.returncode == 0, again.stderr[-3000:]
  assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())[-1] == 6
  np.testing.assert_equal((tmp_path / "eval_results.json").exists(), True)


def test_eval_results_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
  """train._write_json writes a temp file and renames it: a write that fails leaves the old file as it was."""
  from declip_jax import train  # pylint: disable=g-import-not-at-top
  target = epath.Path(tmp_path) / "eval_results.json"
  train._write_json(target, {"step": 1})  # pylint: disable=protected-access
  assert json.loads(target.read_text()) == {"step": 1} and [p.name for p in tmp_path.iterdir()] == [target.name]

  def full_disk(self, text):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(type(target), "write_text", full_disk)
  with pytest.raises(OSError, match="No space left"):
    train._write_json(target, {"step": 2})  # pylint: disable=protected-access
  monkeypatch.undo()
  assert json.loads(target.read_text()) == {"step": 1}
