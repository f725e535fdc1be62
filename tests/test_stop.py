"""A stop request (SIGTERM, Ctrl-C, a preemption notice) at any point of a step leaves the checkpoint of the step
reached, the final line says so, and the same command resumes from exactly that step to the run an
uninterrupted one makes, bitwise (docs/reliability.md, "Preemption"). Checkpoints are far apart, so that a
missing stop checkpoint cannot hide behind a periodic one.

In process: a chain of runs in one workdir, each stopped by a request raised at another phase of a step; then
with real signals at several delays in `python -m declip_jax.main`.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from clu import periodic_actions

from declip_jax import logs, main, train
from declip_jax.data import pipeline
from declip_jax.evaluation import encoding
from declip_jax.training import checkpointing, train_setup
from tests.conftest import REPO, virtual_devices_flags
from tests.stop_config import get_config as stop_config

NUM_STEPS = 16


def _final_state(workdir):
  """The newest checkpoint's state, as host arrays."""
  setup = train_setup.Setup(stop_config())
  ckpt = checkpointing.Checkpointer(str(workdir), keep=3, async_save=False)
  try:
    state, _ = ckpt.restore(ckpt.latest_step(), setup.abstract_state)
  finally:
    ckpt.close()
  return jax.tree.map(np.asarray, jax.device_get(state))


def _scalars(workdir) -> dict:
  """{(tag, step): value} of every train/ and eval/ scalar (the last written for each)."""
  return {(tag, step): value for tag, points in logs.read_scalars(str(workdir), ("train/", "eval/")).items()
          for step, value in points}


def _assert_same_run(workdir, straight):
  scalars, expected = _scalars(workdir), _scalars(straight)
  assert sorted(scalars) == sorted(expected)
  assert scalars == expected  # Bitwise: float32 values written by both runs.
  jax.tree.map(np.testing.assert_array_equal, _final_state(workdir), _final_state(straight))
  assert (json.loads((workdir / "eval_results.json").read_text())
          == json.loads((straight / "eval_results.json").read_text()))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight")
  out = train.run(stop_config(), str(workdir))
  assert out["stopped_by"] is None and out["step"] == NUM_STEPS
  assert {step for (tag, step) in _scalars(workdir) if tag.startswith("eval/")} == {6, 12, 16}
  return workdir


class _Requests:
  """Raises a stop request, as the signal handler does, when a hooked phase of the loop is at a planned step."""

  def __init__(self, monkeypatch):
    self.stop = None
    self.step = 0  # The step the loop is at (0 before the first).
    self.plan: dict[str, list[int]] = {}  # phase -> the steps at which it raises a request
    original_enter = train.StopRequests.__enter__

    def enter(stop):
      self.stop = stop
      return original_enter(stop)

    monkeypatch.setattr(train.StopRequests, "__enter__", enter)
    trainer = train._Trainer  # pylint: disable=protected-access
    for owner, name, phase, before in [
        (trainer, "_restart_from", "during setup", True),
        (pipeline.TrainBatches, "__next__", "before the step", True),
        (trainer, "_dispatch_step", "after dispatch", False),
        (periodic_actions.ReportProgress, "__call__", "during the report", True),
        (trainer, "_write_train_scalars", "during the log write", True),
        (checkpointing.Checkpointer, "save", "during the save", False),
        (encoding.Encoder, "encode", "during an evaluation", False)]:
      monkeypatch.setattr(owner, name, self._hooked(getattr(owner, name), phase, before))
    dispatch = trainer._dispatch_step  # pylint: disable=protected-access

    def counting(trainer_self, step):
      self.step = step
      return dispatch(trainer_self, step)

    monkeypatch.setattr(trainer, "_dispatch_step", counting)

  def _hooked(self, original, phase, before):
    def hooked(*args, **kwargs):
      if before:
        self._maybe_request(phase)
      result = original(*args, **kwargs)
      if not before:
        self._maybe_request(phase)
      return result
    return hooked

  def _maybe_request(self, phase):
    if self.stop is not None and self.step in self.plan.get(phase, []):
      self.plan[phase].remove(self.step)
      self.stop._handle(signal.SIGTERM, None)  # pylint: disable=protected-access

  def run(self, workdir, plan: dict[str, list[int]]) -> dict:
    self.plan, self.step, self.stop = {phase: list(steps) for phase, steps in plan.items()}, 0, None
    return train.run(stop_config(), str(workdir))


# (phase -> the steps at which a request is raised, the step the run stops at), one run each, in one workdir. The
# request is read once per step, before the next step is dispatched, so a run stops at the step it is in; an
# evaluation in progress is abandoned, and the rerun runs the step's evaluations first. The first run is asked
# during setup (nothing trained, nothing written); the last gets a second request while the stop's checkpoint is
# being written.
CHAIN = [
    ({"during setup": [0]}, 0),
    ({"before the step": [2]}, 2),
    ({"after dispatch": [4]}, 4),
    ({"during the report": [6]}, 6),  # Step 6's evaluation is due: left to the rerun, which runs it first.
    ({"during the log write": [8]}, 8),
    ({"during an evaluation": [12]}, 12),
    ({"before the step": [13], "during the save": [13]}, 13),
]


def test_a_request_at_any_phase_of_a_step_saves_that_step_and_resumes_to_the_straight_run(tmp_path, straight,
                                                                                          monkeypatch):
  requests = _Requests(monkeypatch)
  workdir = tmp_path / "stopped"
  previous = 0
  for plan, expected in CHAIN:
    out = requests.run(workdir, plan)
    assert out["stopped_by"] == "SIGTERM" and out["step"] == expected, (plan, out)
    assert out["trained_steps"] == expected - previous, (plan, out)  # Resumed from exactly the previous stop.
    line = main.stop_line(out)
    if expected == 0:
      assert out["checkpoint_step"] is None and "nothing was trained and there is no checkpoint" in line, line
    else:
      assert out["checkpoint_step"] == expected and (workdir / "checkpoints" / str(expected)).is_dir(), (plan, out)
      assert line.startswith(f"Stopped by SIGTERM at step {expected}: checkpoint {expected} saved in "), line
    assert not any(requests.plan.values()), f"a planned request was not raised: {requests.plan}"
    previous = expected
  out = requests.run(workdir, {})
  assert out["stopped_by"] is None and out["trained_steps"] == NUM_STEPS - previous
  _assert_same_run(workdir, straight)


SIGNAL_STEPS = 120  # Enough that each delay below lands in training (about 45 steps/s here after compiling).
# (signal, seconds after the run logs its first train metrics, how many: a second one 1 s later, while the stop
# saves or the process exits).
SIGNALS = [(signal.SIGTERM, 0.05, 1), (signal.SIGINT, 0.4, 1), (signal.SIGTERM, 0.8, 2)]


def _main_command(workdir, *flags):
  return [sys.executable, "-m", "declip_jax.main", "--config=tests/stop_config.py", f"--workdir={workdir}",
          f"--config.train.num_steps={SIGNAL_STEPS}", "--config.eval.every_steps=25", *flags]


@pytest.fixture(scope="module")
def straight_long(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("straight_long")
  config = stop_config()
  config.train.num_steps, config.eval.every_steps = SIGNAL_STEPS, 25
  assert train.run(config, str(workdir))["step"] == SIGNAL_STEPS
  return workdir


def _signal_when_training(watched, signum, delay, count, signalled=None) -> list[str]:
  """Sends `signum` `count` times (1 s apart) to `signalled` (default: `watched`) `delay` s after `watched`
  logs its first train metrics; waits for `watched` to end and returns the lines it wrote to stderr."""
  lines, started = [], threading.Event()

  def read():
    for line in watched.stderr:
      lines.append(line)
      if "train/loss" in line:
        started.set()
    started.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  assert started.wait(timeout=600)
  time.sleep(delay)
  for i in range(count):
    if i:
      time.sleep(1.0)
    (signalled or watched).send_signal(signum)
  watched.wait(timeout=600)
  reader.join(timeout=60)
  return lines


def test_real_signals_at_several_delays_save_the_step_reached_and_resume_exactly(tmp_path, straight_long):
  workdir, previous = tmp_path / "run", 0
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  for signum, delay, count in SIGNALS:
    proc = subprocess.Popen(_main_command(workdir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    stderr = "".join(_signal_when_training(proc, signum, delay, count))
    stdout = proc.stdout.read()
    assert proc.returncode == 0, stderr[-3000:]
    name = signal.Signals(signum).name
    match = re.fullmatch(rf"Stopped by {name} at step (\d+): checkpoint (\d+) saved in \S+, [\d.]+ s after the "
                         r"request; rerun the same command to resume\.", stdout.strip().splitlines()[-1])
    assert match and match.group(1) == match.group(2), stdout
    step = int(match.group(1))
    assert previous < step < SIGNAL_STEPS and (workdir / "checkpoints" / str(step)).is_dir()
    assert previous == 0 or f"Resumed from the checkpoint at step {previous} " in stderr
    assert "Traceback" not in stderr
    previous = step
  out = subprocess.run(_main_command(workdir), cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
  assert out.returncode == 0 and f"Resumed from the checkpoint at step {previous} " in out.stderr, out.stderr[-3000:]
  _assert_same_run(workdir, straight_long)


TWO_PROCESS_STEPS = 30


def _launch_two(workdir):
  """The stop config on 2 processes x 4 CPU devices (gloo collectives)."""
  with socket.socket() as free:
    free.bind(("localhost", 0))
    port = free.getsockname()[1]
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": virtual_devices_flags(4)}
  return [subprocess.Popen(_main_command(workdir, f"--config.train.num_steps={TWO_PROCESS_STEPS}",
                                         "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
                                         f"--config.distributed.coordinator_address=localhost:{port}"),
                           cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for i in range(2)]


def _finish_two(procs) -> list[tuple[str, str]]:
  outs = [proc.communicate(timeout=900) for proc in procs]
  for proc, (_, err) in zip(procs, outs):
    assert proc.returncode == 0, err[-3000:]
  return outs


@pytest.mark.slow  # Three pairs of launches with 4 virtual devices each: minutes on a 2-core host.
@pytest.mark.xdist_group("virtual_devices")
@pytest.mark.skipif(sys.platform != "linux", reason="gloo CPU collectives")
def test_sigterm_to_one_of_two_processes_stops_both_at_one_step_with_its_checkpoint(tmp_path):
  """JAX's preemption service takes process 1's SIGTERM; both processes reach its sync point at the same step,
  save that step, say so and exit 0; the same two commands then resume to the straight two-process run, bitwise."""
  _finish_two(_launch_two(tmp_path / "straight"))
  workdir = tmp_path / "stopped"
  procs = _launch_two(workdir)
  drained = {}
  drain = threading.Thread(target=lambda: drained.update(zip(("out", "err"), procs[1].communicate(timeout=900))))
  drain.start()
  _signal_when_training(procs[0], signal.SIGTERM, 1.0, 1, signalled=procs[1])
  drain.join()
  lines = [procs[0].stdout.read().strip().splitlines()[-1], drained["out"].strip().splitlines()[-1]]
  assert [p.returncode for p in procs] == [0, 0], drained["err"][-3000:]
  steps = {int(re.match(r"Stopped by preemption notice at step (\d+): checkpoint \1 saved in ", l).group(1))
           for l in lines}
  assert len(steps) == 1, lines
  step = steps.pop()
  assert 0 < step < TWO_PROCESS_STEPS and (workdir / "checkpoints" / str(step)).is_dir()
  outs = _finish_two(_launch_two(workdir))
  assert all(f"Resumed from the checkpoint at step {step} " in err for _, err in outs)
  _assert_same_run(workdir, tmp_path / "straight")
