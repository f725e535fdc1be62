"""Injects each fault a user meets into a real training run and prints what they see: the fault table of
docs/reliability.md.

Every run is `python -m declip_jax.main` on tests/tiny_config.py (every DeCLIP loss on, batch 16) for 12 steps,
a checkpoint every 3; the stops that promise a checkpoint (SIGTERM, Ctrl-C) run 120 steps with checkpoints far
apart (none before the last step), so that only the stop's own checkpoint can be resumed from. For each fault
the table gives the faulted command's exit code, the lines it printed after the fault (stdout and stderr
together, absl's prefixes included) and its last line, whether a Python traceback was among them, the newest
checkpoint it left, for a stop whether the checkpoint of the step it reached was written and the seconds from
the signal to that checkpoint and to the exit, and whether rerunning the same command reaches a final state
(parameters, optimizer state, BatchNorm statistics, NN queue, health record) bitwise equal to an
uninterrupted run's.

  python benchmarks/fault_table.py                 # ~10 min on 2 cores
  python benchmarks/fault_table.py --skip_peer     # without the two-process faults (~5 min of it)
"""

import argparse
import os
import pathlib
import platform
import re
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
FAR_STEPS = 120  # The stops' runs: checkpoints far apart, none before the last step.
FAR = [f"--config.train.num_steps={FAR_STEPS}", "--config.checkpoint.every_steps=1000000",
       "--config.eval.every_steps=1000", "--config.train.log_every_steps=1"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
SHOW = "--show" in sys.argv


class Run:
  """One `declip_jax.main` process whose output lines are read as they come, each with its arrival time."""

  def __init__(self, workdir, *flags, mode="train", preexec_fn=None, env=None, command=None, base=None):
    self.command = command or [sys.executable, "-m", "declip_jax.main", "--config=tests/tiny_config.py",
                               f"--workdir={workdir}", f"--mode={mode}", *(base or FLAGS), *flags]
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


def final_state(workdir: pathlib.Path, num_steps: int = NUM_STEPS) -> str:
  """A SHA-256 of the state checkpointed at `num_steps` ("" if there is none), computed in a child process: this
  one imports no JAX, so that it can fork the runs it starts (a fork of a JAX process may deadlock or crash)."""
  if num_steps not in checkpoints(workdir):
    return ""
  out = subprocess.run([sys.executable, __file__, "--digest", str(workdir), f"--digest_step={num_steps}"], cwd=REPO,
                       capture_output=True, text=True, env=ENV, timeout=600)
  return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else ""


def digest(workdir: str, num_steps: int) -> str:
  """SHA-256 over the bytes of every leaf of the state checkpointed at `num_steps` in `workdir`."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from declip_jax.training import checkpointing, train_setup  # pylint: disable=g-import-not-at-top
  from tests.tiny_config import tiny_config  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.train.num_steps = num_steps
  ckpt = checkpointing.Checkpointer(workdir, keep=3, async_save=False)
  try:
    state, _ = ckpt.restore(num_steps, train_setup.Setup(config).abstract_state)
  finally:
    ckpt.close()
  h = hashlib.sha256()
  for leaf in jax.tree.leaves(jax.device_get(state)):
    h.update(np.ascontiguousarray(leaf).tobytes())
  return h.hexdigest()


def same_state(a: str, b: str) -> bool:
  return bool(a) and a == b


def row(fault, run, since, workdir, resumed_equal, note="", stop="n/a"):
  shown = run.after(since)
  last = next((l for l in reversed(shown) if l.strip()), "")
  kept = checkpoints(workdir)
  if SHOW:
    print(f"--- {fault}: {len(shown)} lines after the fault ---\n" + "\n".join(shown), flush=True)
  return {"fault": fault, "exit": run.proc.returncode, "lines": len(shown),
          "traceback": any("Traceback" in l for l in shown), "last": last[:150],
          "kept": f"step {kept[-1]}" if kept else "none", "stop": stop, "resumes": resumed_equal, "note": note}


def rerun_equal(workdir, reference, base=None, num_steps=NUM_STEPS) -> str:
  again = Run(workdir, base=base)
  if again.wait() != 0:
    return f"no (rerun exit {again.proc.returncode})"
  return "yes" if same_state(final_state(workdir, num_steps), reference) else "no (state differs)"


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


def fault_sigkill(root, reference):
  """SIGKILL cannot be caught: the run resumes from its newest periodic checkpoint (every 3 steps here)."""
  workdir = root / "sigkill"
  run = Run(workdir)
  wait_for_checkpoint(run, workdir, 3)
  time.sleep(0.3)
  t = time.time()
  run.proc.send_signal(signal.SIGKILL)
  run.wait()
  return row("SIGKILL", run, t, workdir, rerun_equal(workdir, reference), "resumes from the last periodic checkpoint")


def fault_stop(root, reference_far, name, signals):
  """A stop with checkpoints far apart: `signals` [(seconds after the first, signal)] sent 0.3 s into training.
  The stop's own checkpoint is the one at the step the run's last line names; the seconds from the first signal
  to its directory appearing (Orbax renames it into place when complete) and to the exit are measured here."""
  workdir = root / name
  run = Run(workdir, base=FAR)
  run.training.wait(600)
  time.sleep(0.3)
  t = time.time()
  pending = sorted(signals)
  committed_at = None
  while run.proc.poll() is None:
    now = time.time()
    while pending and now - t >= pending[0][0]:
      run.proc.send_signal(pending.pop(0)[1])
    if committed_at is None and checkpoints(workdir):
      committed_at = time.time()
    time.sleep(0.005)
  run.wait()
  exited_at = time.time()
  committed_at = committed_at or (exited_at if checkpoints(workdir) else None)
  reached = stopped_at(run)
  own = reached is not None and reached in checkpoints(workdir)
  stop = (f"{'yes' if own else 'no'} (step {reached}); {committed_at - t:.2f} s to it, {exited_at - t:.2f} s to the "
          "exit" if committed_at else f"no (step {reached}); exit after {exited_at - t:.2f} s")
  labels = {"sigint": "Ctrl-C (SIGINT)", "sigterm": "SIGTERM (preemption)", "sigterm_twice": "SIGTERM twice, 1 s apart",
            "sigterm_then_kill": "SIGTERM, then SIGKILL 3 s later"}
  unsent = f"; {len(pending)} later signal(s) not sent: the run had exited" if pending else ""
  return row(labels[name], run, t, workdir, rerun_equal(workdir, reference_far, FAR, FAR_STEPS),
             "checkpoints far apart: only the stop's own can be resumed from" + unsent, stop)


def stopped_at(run: Run):
  """The step a stopped run's last line names (None when it names none)."""
  return next((int(m.group(1)) for _, l in reversed(run.lines) if (m := re.match(r"Stopped by .* at step (\d+)", l))),
              None)


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


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch_pair(workdir, *flags, base=None) -> list[Run]:
  """Two processes of 4 virtual devices each (gloo collectives on localhost)."""
  from tests.conftest import virtual_devices_flags  # pylint: disable=g-import-not-at-top
  env, port = {**ENV, "XLA_FLAGS": virtual_devices_flags(4)}, free_port()
  return [Run(workdir, "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}",
              f"--config.distributed.coordinator_address=localhost:{port}", *flags, env=env, base=base)
          for i in range(2)]


def fault_peer_death(root, reference):
  """Two processes; process 1 is killed (-9) once a checkpoint exists. Process 0 must exit by itself; both
  commands rerun then resume from the newest checkpoint."""
  del reference
  workdir = root / "peer"
  flags = ["--config.distributed.heartbeat_timeout_seconds=10", "--config.checkpoint.async_save=False"]
  pair = launch_pair(workdir, *flags)
  wait_for_checkpoint(pair[0], workdir, 3)
  t = time.time()
  pair[1].proc.send_signal(signal.SIGKILL)
  pair[0].wait(timeout=120)
  detected = max(when for when, _ in pair[0].lines) - t if pair[0].lines else float("nan")
  pair[1].wait()
  kept = checkpoints(workdir)
  rerun = launch_pair(workdir, *flags)
  codes = [r.wait() for r in rerun]
  resumed = (all(c == 0 for c in codes) and NUM_STEPS in checkpoints(workdir)
             and any(f"Resumed from the checkpoint at step {kept[-1]}" in l for _, l in rerun[0].lines))
  result = row("peer process killed (2 processes)", pair[0], t, workdir,
               f"resumed from step {kept[-1]} to the end" if resumed else f"no (rerun exits {codes})",
               f"the survivor's last line came {detected:.1f} s after the kill; equality of a 2-process run "
               "with one process of 8 devices: tests/test_multiprocess.py")
  result["kept"] = f"step {kept[-1]}"
  return result


def fault_peer_sigterm(root, reference):
  """Two processes, checkpoints far apart; SIGTERM to process 1 once both train. JAX's preemption service makes
  both stop at one step and save it; both commands rerun then resume from it to the end."""
  del reference
  workdir = root / "peer_sigterm"
  pair = launch_pair(workdir, base=FAR)
  pair[0].training.wait(900)
  time.sleep(1.0)
  t = time.time()
  pair[1].proc.send_signal(signal.SIGTERM)
  codes = [p.wait() for p in pair]
  exited_at = time.time()
  reached = [stopped_at(p) for p in pair]
  own = reached[0] is not None and reached[0] == reached[1] and reached[0] in checkpoints(workdir)
  rerun = launch_pair(workdir, base=FAR)
  rerun_codes = [r.wait() for r in rerun]
  resumed = (all(c == 0 for c in rerun_codes) and FAR_STEPS in checkpoints(workdir)
             and all(any(f"Resumed from the checkpoint at step {reached[0]} " in l for _, l in r.lines) for r in rerun))
  stop = f"{'yes' if own else 'no'} (steps {reached[0]}, {reached[1]}); {exited_at - t:.2f} s to both exits"
  result = row("SIGTERM to one of 2 processes (preemption notice)", pair[0], t, workdir,
               f"both resumed from step {reached[0]} to the end" if resumed else f"no (rerun exits {rerun_codes})",
               f"process 1's exit code {codes[1]}; both stop at JAX's preemption sync point", stop)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--skip_peer", action="store_true", help="leave out the two-process faults")
  parser.add_argument("--only", default="", help="comma-separated fault names (functions fault_<name>) to run")
  parser.add_argument("--show", action="store_true", help="also print each faulted command's lines after the fault")
  parser.add_argument("--digest", metavar="WORKDIR", help=argparse.SUPPRESS)  # A child's job (final_state).
  parser.add_argument("--digest_step", type=int, default=NUM_STEPS, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.digest:
    print(digest(args.digest, args.digest_step))
    return
  root = pathlib.Path(tempfile.mkdtemp(prefix="fault_table_"))
  try:
    reference_dir = root / "reference"
    if Run(reference_dir).wait() != 0:
      sys.exit("the uninterrupted reference run failed")
    reference = final_state(reference_dir)
    far_dir = root / "reference_far"
    if Run(far_dir, base=FAR).wait() != 0:
      sys.exit("the uninterrupted reference run with checkpoints far apart failed")
    reference_far = final_state(far_dir, FAR_STEPS)
    stops = {"sigint": [(0, signal.SIGINT)], "sigterm": [(0, signal.SIGTERM)],
             "sigterm_twice": [(0, signal.SIGTERM), (1, signal.SIGTERM)],
             "sigterm_then_kill": [(0, signal.SIGTERM), (3, signal.SIGKILL)]}
    faults = {"double_start": fault_double_start, "full_disk": fault_full_disk,
              **{name: (lambda r, ref, name=name, sent=sent: fault_stop(r, reference_far, name, sent))
                 for name, sent in stops.items()},
              "sigkill": fault_sigkill,
              "corrupt_newest": fault_corrupt_newest, "unwritable_workdir": fault_unwritable_workdir,
              "eval_empty": fault_eval_empty, "peer_death": fault_peer_death, "peer_sigterm": fault_peer_sigterm}
    peers = ("peer_death", "peer_sigterm")
    chosen = args.only.split(",") if args.only else [n for n in faults if not (args.skip_peer and n in peers)]
    rows = [faults[name](root, reference) for name in chosen]
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f"host: {platform.node()}, {os.cpu_count()} cores; tests/tiny_config.py, {NUM_STEPS} steps, a checkpoint "
        f"every 3; the stops {FAR_STEPS} steps, checkpoints far apart")
  print("| fault | exit | lines after the fault | traceback | last line | checkpoints kept | stop's own checkpoint "
        "written | same command resumes to an equal state | note |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    last = r["last"].replace("|", "\\|")
    print(f"| {r['fault']} | {r['exit']} | {r['lines']} | {'yes' if r['traceback'] else 'no'} | `{last}` | "
          f"{r['kept']} | {r['stop']} | {r['resumes']} | {r['note']} |")


if __name__ == "__main__":
  main()
