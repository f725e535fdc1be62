"""Fault injection: SIGKILLs at random points (also half-way through an asynchronous checkpoint write), corrupted
checkpoint files and a loss spike. Every faulty run must end exactly where an uninterrupted run with the same
spike ends: same parameters, BatchNorm statistics, optimizer state, NN queue, health record, logged metrics and
eval results (bitwise, on CPU).

Each run is `tests/fault_worker.py` in a subprocess: 24 steps of the tiny config with a loss spike injected at
step 14 (rolled back to step 8), checkpoints every 4 steps. FAULT_SEED=<int> repeats a random-kill sequence.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest

from declip_jax import logs
from declip_jax.training import checkpointing, train_setup
from tests import fault_worker
from tests.conftest import REPO

PLAN = "14:0:spike"

# One worker runs the module, so the reference run (a minute of training) is made once, not once per worker.
pytestmark = pytest.mark.xdist_group("fault_injection")


def _start(workdir, *flags):
  return subprocess.Popen([sys.executable, "-m", "tests.fault_worker", str(workdir), f"--plan={PLAN}", *flags],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def _finish(workdir, *flags):
  proc = _start(workdir, *flags)
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  assert out.split()[:2] == ["done", str(fault_worker.NUM_STEPS)], out
  return err


def _final_state(workdir):
  setup = train_setup.Setup(fault_worker.worker_config())
  ckpt = checkpointing.Checkpointer(str(workdir), keep=3, async_save=False)
  try:
    state, _ = ckpt.restore(fault_worker.NUM_STEPS, setup.abstract_state)
  finally:
    ckpt.close()
  return jax.tree.map(np.asarray, jax.device_get(state))


def _scalars(workdir) -> dict:
  """{(tag, step): value} of the train/, eval/ and recovery/ scalars, the last one written for each (tag, step)."""
  return {(tag, step): value for tag, points in logs.read_scalars(workdir, ("train/", "eval/", "recovery/")).items()
          for step, value in points}


def _assert_same_run(workdir, reference):
  jax.tree.map(np.testing.assert_array_equal, _final_state(workdir), _final_state(reference))
  assert _scalars(workdir) == _scalars(reference)
  assert (json.loads((workdir / "eval_results.json").read_text())
          == json.loads((reference / "eval_results.json").read_text()))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  err = _finish(workdir)
  assert "loss spike at step 14" in err and "rolling back to the checkpoint at step 8" in err
  return workdir


def _kill_when_training(proc, delay_s: float) -> bool:
  """SIGKILLs `proc` `delay_s` after it logs its first train metrics (compiling is over); False if it ended
  first."""
  started = threading.Event()

  def watch():
    for line in proc.stderr:
      if "train/loss" in line:
        started.set()
    started.set()

  threading.Thread(target=watch, daemon=True).start()
  started.wait(timeout=300)
  time.sleep(delay_s)
  if proc.poll() is not None:
    return False
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  return True


def test_random_kills_resume_to_the_same_run(tmp_path, reference):
  seed = int(os.environ.get("FAULT_SEED", time.time_ns() % 2**31))
  rng = np.random.default_rng(seed)
  kills = []
  for _ in range(3):
    delay = float(rng.uniform(0.0, 6.0))  # Training the 24 steps, with the rollback, takes about 6 s here.
    if _kill_when_training(_start(tmp_path), delay):
      steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").glob("*") if p.name.isdigit())
      kills.append((round(delay, 2), steps[-1] if steps else None))
  _finish(tmp_path)
  print(f"FAULT_SEED={seed}: killed after (seconds of training, newest checkpoint) {kills}")
  _assert_same_run(tmp_path, reference)


def test_kill_during_an_async_checkpoint_write(tmp_path, reference):
  proc = _start(tmp_path, "--kill_during_save=8")
  proc.communicate(timeout=600)
  assert proc.returncode == -signal.SIGKILL
  names = {p.name for p in (tmp_path / "checkpoints").iterdir()}
  assert "8" not in names and any(n.startswith("8.") for n in names), names  # Killed mid-write.
  err = _finish(tmp_path)
  assert "Resumed from the checkpoint at step 4" in err
  _assert_same_run(tmp_path, reference)


def _flip_bytes(path: pathlib.Path):
  data = bytearray(path.read_bytes())
  for i in range(len(data) // 3, len(data) // 3 + 8):
    data[i] ^= 0xFF
  path.write_bytes(bytes(data))


def _truncate(path: pathlib.Path):
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {"flipped_bytes": _flip_bytes, "truncated": _truncate, "deleted": pathlib.Path.unlink}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupted_checkpoint_falls_back_and_resumes_to_the_same_run(tmp_path, reference, corruption):
  workdir = tmp_path / "run"
  shutil.copytree(reference, workdir)
  checkpoints = workdir / "checkpoints"
  shutil.rmtree(checkpoints / "24")
  (workdir / "eval_results.json").unlink()
  data_files = sorted((checkpoints / "20" / "state").rglob("d/*"), key=lambda p: p.stat().st_size)
  CORRUPTIONS[corruption](data_files[-1])
  err = _finish(workdir)
  assert "The checkpoint at step 20" in err and "Resumed from the checkpoint at step 16" in err
  assert (checkpoints / "20.unreadable").is_dir()
  _assert_same_run(workdir, reference)
