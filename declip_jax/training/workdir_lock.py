"""One run per workdir: an exclusive lock file that names its holder (docs/design.md §20).

A training run (process 0 of a multi-host run) or a study holds `<workdir>/run.lock`, a JSON record of the host,
pid, start time and command; a background thread touches the file while the run lives, so that its modification
time is the holder's heartbeat (touching never rewrites it, so a holder that lost its lock cannot overwrite the
lock of the run that took it over). A second run
on the same workdir is refused with one line naming the holder (`WorkdirInUseError`). A lock whose holder is
gone is taken over with one warning: on this host, a pid that no longer runs; on another host, a heartbeat older
than `stale_seconds`. Reading a workdir (evaluation, `declip_jax.load`) never needs the lock.

Local and network filesystems: the lock is created with O_CREAT | O_EXCL, atomic on local disks and on NFS v3+,
and a takeover renames the stale file away first, so that of two runs taking over at once one wins. Object
stores (`gs://`, through etils.epath) have no exclusive create here: the lock is written when absent and read
back, which catches runs that start more than a round trip apart but not two started in the same instant.
"""

import dataclasses
import datetime
import json
import os
import shlex
import socket
import sys
import threading
import time
import uuid
from typing import Callable, Optional

from etils import epath

LOCK_NAME = "run.lock"
EXIT_CODE = 75  # sysexits' EX_TEMPFAIL: the workdir is busy; the same command may work later.


class WorkdirInUseError(RuntimeError):
  """The workdir is held by a live run; the message is one line naming it."""


@dataclasses.dataclass
class Holder:
  host: str
  pid: int
  started: float  # Unix time.
  command: str
  token: str  # Tells this holder's file from a later one's.
  heartbeat: float = 0.0  # The lock file's modification time (not stored in it).

  def describe(self, now: float) -> str:
    since = datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return (f"pid {self.pid} on host {self.host} since {since} (heartbeat {now - self.heartbeat:.0f} s ago): "
            f"{self.command}")

  def as_json(self) -> str:
    return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if k != "heartbeat"})


def _process_start(pid: int) -> Optional[float]:
  """When a process started (Unix time), from Linux's /proc; None where there is no /proc, or when it is a zombie
  (killed but not yet reaped by its parent: it runs no more)."""
  try:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    if fields[0] == "Z":
      return None
    boot = next(float(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime "))
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
  except (OSError, IndexError, StopIteration, ValueError):
    return None


def _holder_running(holder: "Holder") -> bool:
  """Whether the lock's holder, a process of this host, still runs: its pid exists, is no zombie, and (on Linux)
  started no later than the lock (else the pid was reused by another process since)."""
  try:
    os.kill(holder.pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's live process.
    pass
  if not os.path.exists("/proc/self/stat"):
    return True
  started = _process_start(holder.pid)
  return started is not None and started <= holder.started + 2.0  # /proc's start time has 1/100 s steps.


def _is_local(path: epath.Path) -> bool:
  return "://" not in str(path)


class WorkdirLock:
  """Context manager holding `<workdir>/run.lock` from entry to exit.

  Args:
    workdir: the run's workdir (created if absent).
    heartbeat_seconds: how often the holder refreshes its heartbeat.
    stale_seconds: a lock from another host whose heartbeat is older than this is taken over.
    command: what the lock says the run is (default: this process's command line).
    warn: where the one takeover line goes.
  """

  def __init__(self, workdir: str, heartbeat_seconds: float = 30.0, stale_seconds: float = 300.0,
               command: Optional[str] = None, warn: Callable[[str], None] = print):
    self.path = epath.Path(workdir) / LOCK_NAME
    self.heartbeat_seconds, self.stale_seconds = heartbeat_seconds, stale_seconds
    self.command = command or shlex.join(["python", *sys.argv])
    self.warn = warn
    self.holder: Optional[Holder] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None

  def __enter__(self) -> "WorkdirLock":
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def read(self) -> Optional[Holder]:
    """The lock's holder, or None when there is no lock (or it is being written: an empty or partial file)."""
    try:
      fields = json.loads(self.path.read_text())
      return Holder(**{k: fields[k] for k in ("host", "pid", "started", "command", "token")},
                    heartbeat=self.path.stat().mtime)
    except (FileNotFoundError, ValueError, TypeError, KeyError):
      return None

  def _write_new(self, holder: Holder) -> bool:
    """Creates the lock file with `holder` unless one exists; True when it was created."""
    text = holder.as_json()
    if _is_local(self.path):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, "w") as f:
        f.write(text)
      return True
    if self.path.exists():
      return False
    self.path.write_text(text)
    return (self.read() or holder).token == holder.token  # Read back: a writer that came later wins.

  def _stale_reason(self, holder: Holder, now: float) -> Optional[str]:
    if holder.host == socket.gethostname():
      return None if _holder_running(holder) else f"pid {holder.pid} is not running"
    age = now - holder.heartbeat
    return f"its heartbeat is {age:.0f} s old" if age > self.stale_seconds else None

  def _take_over(self, stale: Holder) -> None:
    """Moves the stale lock aside, if it is still the one read (another run may have taken it over first)."""
    if not _is_local(self.path):
      if (self.read() or stale).token == stale.token:
        self.path.unlink(missing_ok=True)
      return
    aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return
    moved = json.loads(aside.read_text() or "{}").get("token")
    if moved != stale.token and not self.path.exists():  # A newer holder's lock: put it back.
      os.rename(aside, self.path)
    else:
      aside.unlink(missing_ok=True)

  def acquire(self) -> None:
    """Takes the lock, taking over a stale one with one warning.

    Raises:
      WorkdirInUseError: a live run holds it.
    """
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
      now = time.time()
      mine = Holder(socket.gethostname(), os.getpid(), now, self.command, uuid.uuid4().hex, now)
      if self._write_new(mine):
        self.holder = mine
        self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
        self._thread.start()
        return
      held = self.read()
      if held is None and attempt < 2:  # Being written by another run this instant: look again.
        time.sleep(0.5)
        continue
      if held is None:  # Still empty or partial: its writer died while writing it.
        self.warn(f"warning: taking over the lock of {self.path.parent} (an unreadable {LOCK_NAME}).")
        self.path.unlink(missing_ok=True)
        continue
      reason = self._stale_reason(held, now)
      if reason is None:
        raise WorkdirInUseError(f"--workdir {self.path.parent} is in use by {held.describe(now)}; stop that run "
                                f"or wait for it to end (its lock: {self.path}).")
      self.warn(f"warning: taking over the lock of {self.path.parent} from pid {held.pid} on host {held.host} "
                f"({reason}).")
      self._take_over(held)
    raise WorkdirInUseError(f"--workdir {self.path.parent}: could not take {self.path} (other runs keep taking "
                            "it); stop them first.")

  def _beat(self) -> None:
    while not self._stop.wait(self.heartbeat_seconds):
      current = self.read()
      if current is None or current.token != self.holder.token:
        self.warn(f"warning: the lock {self.path} is no longer this run's (taken over by "
                  f"{'nobody' if current is None else current.describe(time.time())}).")
        return
      try:
        if _is_local(self.path):
          os.utime(self.path)
        else:  # Object stores have no utime: write the same record again.
          self.path.write_text(self.holder.as_json())
      except OSError:  # A full disk or a network hiccup must not kill the run here; the next beat tries again.
        pass

  def release(self) -> None:
    """Stops the heartbeat and removes the lock if it is still this run's."""
    if self.holder is None:
      return
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=5)
    current = self.read()
    if current is not None and current.token == self.holder.token:
      self.path.unlink(missing_ok=True)
    self.holder = None
