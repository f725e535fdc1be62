"""Injects each fault a user meets into a real training run and prints what they see: the fault table of
docs/reliability.md.

Every run is `python -m declip_jax.main` on tests/tiny_config.py (every DeCLIP loss on, batch 16) for 12 steps,
a checkpoint every 3. For each fault the table gives the faulted command's exit code, the lines it printed after
the fault (stdout and stderr together, absl's prefixes included) and its last line, whether a Python traceback
was among them, the newest checkpoint it left, and whether rerunning the same command reaches a final state
(parameters, optimizer state, BatchNorm statistics, NN queue, health record) bitwise equal to an
uninterrupted run's.

  python benchmarks/fault_table.py                 # ~10 min on 2 cores
  python benchmarks/fault_table.py --skip_peer     # without the two-process peer death (~2 min of it)
"""

import argparse
import os
import pathlib
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NUM_STEPS = 12
FLAGS = [f"--config.train.num_steps={NUM_STEPS}", "--config.checkpoint.every_steps=3",
         "--config.eval.every_steps=1000", "--config.train.log_every_steps=1"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
SHOW = "--show" in sys.argv


class Run:
  """One `declip_jax.main` process whose output lines are read as they come, each with its arrival time."""

  def __init__(self, workdir, *flags, mode="train", preexec_fn=None, env=None, command=None):
    self.command = command or [sys.executable, "-m", "declip_jax.main", "--config=tests/tiny_config.py",
                               f"--workdir={workdir}", f"--mode={mode}", *FLAGS, *flags]
    self.proc = subprocess.Popen(self.command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=env or ENV, preexec_fn=preexec_fn)
    self.lines: list[tuple[float, str]] = []
    self.training = threading.Event()
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.append((time.time(), line.rstrip("\n")))
      if "train/loss" in line:
        self.training.set()
    self.training.set()

  def wait(self, timeout=900) -> int:
    self.proc.wait(timeout=timeout)
    self._reader.join(timeout=10)
    return self.proc.returncode

  def after(self, t: float) -> list[str]:
    return [line for when, line in self.lines if when >= t]


def checkpoints(workdir: pathlib.Path) -> list[int]:
  return sorted(int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit())


def wait_for_checkpoint(run: Run, workdir: pathlib.Path, step: int, timeout=600):
  deadline = time.time() + timeout
  while time.time() < deadline and run.proc.poll() is None and not [s for s in checkpoints(workdir) if s >= step]:
    time.sleep(0.05)


def final_state(workdir: pathlib.Path) -> str:
  """A SHA-256 of the state checkpointed at NUM_STEPS ("" if there is none), computed in a child process: this
  one imports no JAX, so that it can fork the runs it starts (a fork of a JAX process may deadlock or crash)."""
  if NUM_STEPS not in checkpoints(workdir):
    return ""
  out = subprocess.run([sys.executable, __file__, "--digest", str(workdir)], cwd=REPO, capture_output=True,
                       text=True, env=ENV, timeout=600)
  return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""


def digest(workdir: str) -> str:
  """SHA-256 over the bytes of every leaf of the state checkpointed at NUM_STEPS in `workdir`."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from declip_jax import train  # pylint: disable=g-import-not-at-top
  from declip_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  from tests.tiny_config import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.train.num_steps = NUM_STEPS
  ckpt = checkpointing.Checkpointer(workdir, keep=3, async_save=False)
  try:
    state, _ = ckpt.restore(NUM_STEPS, train.Setup(config).abstract_state)
  finally:
    ckpt.close()
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state)):
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


def same_state(a: str, b: str) -> bool:
  return bool(a) and a == b


def row(fault, run, since, workdir, resumed_equal, note=""):
  shown = run.after(since)
  last = next((l for l in reversed(shown) if l.strip()), "")
  kept = checkpoints(workdir)
  if SHOW:
    print(f"--- {fault}: {len(shown)} lines after the fault ---\n" + "\n".join(shown), flush=True)
  return {"fault": fault, "exit": run.proc.returncode, "lines": len(shown),
          "traceback": any("Traceback" in l for l in shown), "last": last[:150],
          "kept": f"step {kept[-1]}" if kept else "none", "resumes": resumed_equal, "note": note}


def rerun_equal(workdir, reference) -> str:
  again = Run(workdir)
  if again.wait() != 0:
    return f"no (rerun exit {again.proc.returncode})"
  return "yes" if same_state(final_state(workdir), reference) else "no (state differs)"


def fault_double_start(root, reference):
  """A second run on a workdir held by a first that is still training (a long one, stopped with Ctrl-C after)."""
  del reference
  workdir = root / "double_start"
  first = Run(workdir, "--config.train.num_steps=1000000")
  first.training.wait(600)
  t = time.time()
  second = Run(workdir)
  second.wait()
  alive = first.proc.poll() is None
  first.proc.send_signal(signal.SIGINT)
  first.wait()
  untouched = alive and first.proc.returncode == 0 and any("Stopped by SIGINT" in l for _, l in first.lines)
  return row("second run on a held workdir", second, t, workdir,
             "n/a: the first run trained on untouched (then stopped by Ctrl-C, exit 0)" if untouched
             else "no: the first run was disturbed")


def fault_signal(root, reference, name, sig):
  workdir = root / name
  run = Run(workdir)
  wait_for_checkpoint(run, workdir, 3)
  time.sleep(0.3)
  t = time.time()
  run.proc.send_signal(sig)
  run.wait()
  return row({"sigint": "Ctrl-C (SIGINT)", "sigterm": "SIGTERM (preemption)", "sigkill": "SIGKILL"}[name], run, t,
             workdir, rerun_equal(workdir, reference))


def fault_full_disk(root, reference):
  """A file-size limit (RLIMIT_FSIZE, 150 KB) makes checkpoint writes fail with EFBIG, as a full disk or a quota
  does (ENOSPC takes the same path; the space check before each save is tested separately)."""
  workdir = root / "full_disk"
  limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
  run = Run(workdir, preexec_fn=limit)
  run.training.wait(600)
  t = time.time()
  run.wait()
  return row("checkpoint write fails (disk full / quota)", run, t, workdir, rerun_equal(workdir, reference),
             "rerun after space is freed")


def fault_corrupt_newest(root, reference):
  workdir = root / "corrupt"
  run = Run(workdir)
  wait_for_checkpoint(run, workdir, 6)
  run.proc.send_signal(signal.SIGKILL)
  run.wait()
  newest = checkpoints(workdir)[-1]
  files = sorted(p for p in (workdir / "checkpoints" / str(newest)).rglob("*") if p.is_file() and p.stat().st_size)
  target = max(files, key=lambda p: p.stat().st_size)
  data = bytearray(target.read_bytes())
  data[len(data) // 2] ^= 0xFF
  target.write_bytes(bytes(data))
  t = time.time()
  again = Run(workdir)
  again.wait()
  equal = "yes" if again.proc.returncode == 0 and same_state(final_state(workdir), reference) else "no"
  return row(f"corrupt newest checkpoint (a byte of step {newest} flipped)", again, t, workdir, equal,
             "the rerun itself is the resume")


def fault_unwritable_workdir(root, reference):
  """An unwritable workdir: a read-only directory for a normal user; as root (who may write anywhere) a workdir
  under a regular file, which no user can create."""
  del reference
  if os.geteuid() != 0:
    parent = root / "read_only"
    parent.mkdir()
    parent.chmod(0o555)
    workdir, what = parent / "run", "read-only parent directory"
  else:
    blocker = root / "a_file"
    blocker.write_text("")
    workdir, what = blocker / "run", "workdir under a regular file (root ignores permissions)"
  t = time.time()
  run = Run(workdir)
  run.wait()
  return row(f"unwritable workdir ({what})", run, t, root / "none", "n/a", "nothing to keep")


def fault_eval_empty(root, reference):
  del reference
  workdir = root / "empty"
  workdir.mkdir()
  t = time.time()
  run = Run(workdir, mode="eval")
  run.wait()
  return row("--mode=eval on a workdir without checkpoints", run, t, workdir, "n/a", "nothing to keep")


def fault_peer_death(root, reference):
  """Two processes of 4 virtual devices each; process 1 is killed (-9) once a checkpoint exists. Process 0 must
  exit by itself; both commands rerun then resume from the newest checkpoint."""
  del reference
  from tests.conftest import virtual_devices_flags  # pylint: disable=g-import-not-at-top
  workdir = root / "peer"
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]

  def launch(process_id, port):
    env = {**ENV, "XLA_FLAGS": virtual_devices_flags(4)}
    flags = ["--config.distributed.num_processes=2", f"--config.distributed.process_id={process_id}",
             f"--config.distributed.coordinator_address=localhost:{port}",
             "--config.distributed.heartbeat_timeout_seconds=10", "--config.checkpoint.async_save=False"]
    return Run(workdir, *flags, env=env)

  pair = [launch(i, port) for i in range(2)]
  wait_for_checkpoint(pair[0], workdir, 3)
  t = time.time()
  pair[1].proc.send_signal(signal.SIGKILL)
  pair[0].wait(timeout=120)
  detected = max(when for when, _ in pair[0].lines) - t if pair[0].lines else float("nan")
  pair[1].wait()
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  kept = checkpoints(workdir)
  rerun = [launch(i, port) for i in range(2)]
  codes = [r.wait() for r in rerun]
  resumed = (all(c == 0 for c in codes) and NUM_STEPS in checkpoints(workdir)
             and any(f"Resumed from the checkpoint at step {kept[-1]}" in l for _, l in rerun[0].lines))
  result = row("peer process killed (2 processes)", pair[0], t, workdir,
               f"resumed from step {kept[-1]} to the end" if resumed else f"no (rerun exits {codes})",
               f"the survivor's last line came {detected:.1f} s after the kill; equality of a 2-process run "
               "with one process of 8 devices: tests/test_multiprocess.py")
  result["kept"] = f"step {kept[-1]}"
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--skip_peer", action="store_true", help="leave out the two-process peer death")
  parser.add_argument("--only", default="", help="comma-separated fault names (functions fault_<name>) to run")
  parser.add_argument("--show", action="store_true", help="also print each faulted command's lines after the fault")
  parser.add_argument("--digest", metavar="WORKDIR", help=argparse.SUPPRESS)  # A child's job (final_state).
  args = parser.parse_args()
  if args.digest:
    print(digest(args.digest))
    return
  root = pathlib.Path(tempfile.mkdtemp(prefix="fault_table_"))
  try:
    reference_dir = root / "reference"
    if Run(reference_dir).wait() != 0:
      sys.exit("the uninterrupted reference run failed")
    reference = final_state(reference_dir)
    faults = {"double_start": fault_double_start, "full_disk": fault_full_disk,
              "sigint": lambda r, ref: fault_signal(r, ref, "sigint", signal.SIGINT),
              "sigterm": lambda r, ref: fault_signal(r, ref, "sigterm", signal.SIGTERM),
              "sigkill": lambda r, ref: fault_signal(r, ref, "sigkill", signal.SIGKILL),
              "corrupt_newest": fault_corrupt_newest, "unwritable_workdir": fault_unwritable_workdir,
              "eval_empty": fault_eval_empty, "peer_death": fault_peer_death}
    chosen = args.only.split(",") if args.only else [n for n in faults if not (args.skip_peer and n == "peer_death")]
    rows = [faults[name](root, reference) for name in chosen]
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f"host: {platform.node()}, {os.cpu_count()} cores; tests/tiny_config.py, {NUM_STEPS} steps, "
        "a checkpoint every 3")
  print("| fault | exit | lines after the fault | traceback | last line | checkpoints kept | same command resumes "
        "to an equal state | note |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    last = r["last"].replace("|", "\\|")
    print(f"| {r['fault']} | {r['exit']} | {r['lines']} | {'yes' if r['traceback'] else 'no'} | `{last}` | "
          f"{r['kept']} | {r['resumes']} | {r['note']} |")


if __name__ == "__main__":
  main()
