"""The workdir lock (training/workdir_lock.py): one holder at a time, named when refused; a dead or silent
holder's lock taken over with one warning; the heartbeat refreshed; released only by its own holder."""

import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from declip_jax.training import workdir_lock


def _write_lock(workdir, heartbeat=None, **fields):
  """A lock file of another run; its modification time (the heartbeat) set to `heartbeat` when given."""
  holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "command": "python -m x",
            "token": "someone-else", **fields}
  path = workdir / workdir_lock.LOCK_NAME
  path.write_text(json.dumps(holder))
  if heartbeat is not None:
    os.utime(path, (heartbeat, heartbeat))


def _dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", ""])
  child.wait()
  return child.pid


def test_one_holder_at_a_time_and_the_refusal_names_it(tmp_path):
  warnings = []
  with workdir_lock.WorkdirLock(str(tmp_path), command="python -m declip_jax.main --config=a", warn=warnings.append):
    held = json.loads((tmp_path / "run.lock").read_text())
    assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
    assert held["command"] == "python -m declip_jax.main --config=a"
    with pytest.raises(workdir_lock.WorkdirInUseError) as refused:
      workdir_lock.WorkdirLock(str(tmp_path), warn=warnings.append).acquire()
    message = str(refused.value)
    assert f"in use by pid {os.getpid()} on host {socket.gethostname()} since " in message
    assert "python -m declip_jax.main --config=a" in message and "\n" not in message
  assert not (tmp_path / "run.lock").exists() and not warnings
  with workdir_lock.WorkdirLock(str(tmp_path)):  # Free again.
    pass


def test_a_dead_holder_on_this_host_is_taken_over_with_one_warning(tmp_path):
  pid = _dead_pid()
  _write_lock(tmp_path, pid=pid)
  warnings = []
  lock = workdir_lock.WorkdirLock(str(tmp_path), warn=warnings.append)
  with lock:
    assert lock.read().pid == os.getpid()
  assert warnings == [f"warning: taking over the lock of {tmp_path} from pid {pid} on host {socket.gethostname()} "
                      f"(pid {pid} is not running)."]


@pytest.mark.parametrize("age, taken", [(10.0, False), (400.0, True)])
def test_another_hosts_lock_is_taken_over_only_when_its_heartbeat_is_stale(tmp_path, age, taken):
  _write_lock(tmp_path, host="another-host", pid=12345, heartbeat=time.time() - age)
  warnings = []
  lock = workdir_lock.WorkdirLock(str(tmp_path), stale_seconds=300.0, warn=warnings.append)
  if not taken:
    refusal = r"pid 12345 on host another-host .*\(heartbeat 1\d s ago\)"  # 10 s and the test's own time.
    with pytest.raises(workdir_lock.WorkdirInUseError, match=refusal):
      lock.acquire()
    return
  with lock:
    assert lock.read().host == socket.gethostname()
  assert len(warnings) == 1 and re.search(r"\(its heartbeat is 4\d\d s old\)\.$", warnings[0]), warnings


def test_an_unreadable_lock_is_taken_over(tmp_path):
  (tmp_path / "run.lock").write_text('{"host": "half-writ')
  warnings = []
  with workdir_lock.WorkdirLock(str(tmp_path), warn=warnings.append) as lock:
    assert lock.read().pid == os.getpid()
  assert warnings == [f"warning: taking over the lock of {tmp_path} (an unreadable run.lock)."]


def test_the_heartbeat_is_refreshed_and_a_lost_lock_is_not_removed(tmp_path):
  warnings = []
  lock = workdir_lock.WorkdirLock(str(tmp_path), heartbeat_seconds=0.05, warn=warnings.append)
  with lock:
    first = lock.read().heartbeat
    deadline = time.time() + 10
    while lock.read().heartbeat <= first and time.time() < deadline:
      time.sleep(0.05)
    assert lock.read().heartbeat > first
    _write_lock(tmp_path, token="the-new-holder")  # Taken over while this run thought it held it.
    deadline = time.time() + 10
    while not warnings and time.time() < deadline:
      time.sleep(0.05)
  assert json.loads((tmp_path / "run.lock").read_text())["token"] == "the-new-holder"  # Not removed by the loser.
  assert len(warnings) == 1 and "is no longer this run's" in warnings[0]


def test_of_two_runs_taking_over_the_same_dead_lock_one_wins(tmp_path):
  """Both start when a start file appears (however slowly each process came up); the winner holds the lock until
  the test has both answers."""
  workdir, start, release = tmp_path / "w", tmp_path / "start", tmp_path / "release"
  workdir.mkdir()
  _write_lock(workdir, pid=_dead_pid())
  script = ("import os, sys, time; from declip_jax.training import workdir_lock as w\n"
            "workdir, start, release = sys.argv[1:]\n"
            "while not os.path.exists(start): time.sleep(0.01)\n"
            "try:\n  lock = w.WorkdirLock(workdir, warn=lambda m: None); lock.acquire(); print('won', flush=True)\n"
            "  deadline = time.time() + 120\n"
            "  while not os.path.exists(release) and time.time() < deadline: time.sleep(0.05)\n"
            "  lock.release()\n"
            "except w.WorkdirInUseError:\n  print('refused', flush=True)\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  runs = [subprocess.Popen([sys.executable, "-c", script, str(workdir), str(start), str(release)],
                           stdout=subprocess.PIPE, text=True, cwd=repo) for _ in range(2)]
  time.sleep(1.0)
  start.write_text("go")
  outcomes = sorted(run.stdout.readline().strip() for run in runs)
  release.write_text("done")
  for run in runs:
    run.communicate(timeout=60)
  assert outcomes == ["refused", "won"], outcomes


def test_a_zombie_or_a_reused_pid_is_not_the_holder(tmp_path):
  """kill -9 leaves a zombie until its parent reaps it; and a pid may since belong to a process that started
  after the lock was written. Neither holds the lock."""
  zombie = subprocess.Popen([sys.executable, "-c", ""])
  deadline = time.time() + 30
  while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z" and time.time() < deadline:
    time.sleep(0.05)  # Not waited for: a zombie.
  _write_lock(tmp_path, pid=zombie.pid)
  warnings = []
  with workdir_lock.WorkdirLock(str(tmp_path), warn=warnings.append):
    pass
  zombie.wait()
  _write_lock(tmp_path, pid=os.getpid(), started=time.time() - 3600)  # A lock older than this process: not its.
  with workdir_lock.WorkdirLock(str(tmp_path), warn=warnings.append):
    pass
  assert len(warnings) == 2 and all("is not running" in w for w in warnings), warnings
