"""The command line: one clear error line for bad input, and kill -9 then rerun resumes from the checkpoint."""

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time

from tests.conftest import REPO

TINY = "tests/tiny_config.py"


def _main(*args, timeout=300):
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  return subprocess.run([sys.executable, "-m", "declip_jax.main", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env=env)


def _error_lines(stderr: str) -> list[str]:
  return [l for l in stderr.splitlines() if l.strip() and not l.startswith(("W0000", "I0000", "E0000", "WARNING"))]


def test_misspelled_config_key_names_itself(tmp_path):
  out = _main(f"--config={TINY}", f"--workdir={tmp_path}", "--config.train.num_stepz=5")
  assert out.returncode != 0
  lines = _error_lines(out.stderr)
  assert "num_stepz" in lines[0] and "Traceback" not in out.stderr and len(lines) <= 2


def test_missing_config_file(tmp_path):
  out = _main("--config=configs/nope.py", f"--workdir={tmp_path}")
  assert out.returncode != 0
  lines = _error_lines(out.stderr)
  assert "configs/nope.py" in lines[0] and "Traceback" not in out.stderr and len(lines) <= 2


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  out = _main(f"--config={TINY}", f"--workdir={blocker}/run")
  assert out.returncode == 2
  assert _error_lines(out.stderr) == [_error_lines(out.stderr)[0]]
  assert "not writable" in out.stderr and "Traceback" not in out.stderr


def test_invalid_config_value_is_one_line(tmp_path):
  out = _main(f"--config={TINY}", f"--workdir={tmp_path}", "--config.train.batch_size=12")
  assert out.returncode == 2
  assert "ssl.bn_group_size" in out.stderr and "Traceback" not in out.stderr


def test_sigkill_after_checkpoint_then_rerun_resumes(tmp_path):
  """Also the workdir lock: a second run while the first lives is refused in one line naming it (exit 75); the
  rerun after the kill takes the dead run's lock over with one warning; evaluation needs no lock."""
  args = [sys.executable, "-m", "declip_jax.main", f"--config={TINY}", f"--workdir={tmp_path}",
          "--config.train.num_steps=400", "--config.checkpoint.every_steps=2", "--config.eval.every_steps=1000"]
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  checkpoints = pathlib.Path(tmp_path) / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and not any(p.name.isdigit() for p in checkpoints.glob("*")):
    time.sleep(0.2)
  second = _main(*args[3:])
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert second.returncode == 75, second.stderr[-2000:]
  assert _error_lines(second.stderr) == [_error_lines(second.stderr)[0]], second.stderr[-2000:]
  assert f"is in use by pid {proc.pid} on host" in second.stderr and "Traceback" not in second.stderr
  saved = sorted(int(p.name) for p in checkpoints.glob("*") if p.name.isdigit())
  assert saved, "no checkpoint was written before the kill"
  out = _main(f"--config={TINY}", f"--workdir={tmp_path}", f"--config.train.num_steps={saved[-1] + 2}",
              "--config.checkpoint.every_steps=2", "--config.eval.every_steps=1000")
  assert out.returncode == 0, out.stderr[-2000:]
  assert f"Resumed from the checkpoint at step {saved[-1]}" in out.stderr
  assert out.stderr.count(f"taking over the lock of {tmp_path} from pid {proc.pid}") == 1
  assert not (tmp_path / "run.lock").exists()  # Released at the end.
  (tmp_path / "run.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                                 "started": time.time(), "command": "a live run", "token": "t"}))
  assert f"[zero_shot_shape] step {saved[-1] + 2}" in out.stdout
  out = _main(f"--config={TINY}", f"--workdir={tmp_path}", "--mode=eval")
  assert out.returncode == 0, out.stderr[-2000:]
  assert (tmp_path / "eval_results.json").exists()


def test_a_glob_that_matches_nothing_is_one_line(tmp_path):
  (tmp_path / "vocab.txt").write_text("red\ncircle\n")
  out = _main(f"--config={TINY}", f"--workdir={tmp_path}", "--config.data.source=tfrecord",
              f"--config.data.tfrecord.files={tmp_path}/none/*.tfrecord",
              f"--config.data.vocab_path={tmp_path}/vocab.txt")
  assert out.returncode == 2
  assert "no file matches" in out.stderr and "Traceback" not in out.stderr


def _is_progress_loss_or_result(line: str) -> bool:
  return any(marker in line for marker in ("steps/s", "steps_per_sec", "uptime=", "train/", "eval/", "data/",
                                           "first 10% of steps", "] step "))


def test_demo_output_repeats_no_warning_line(tmp_path):
  """README command 1's output, a few steps logged every step: apart from progress, loss logs and results, no
  line (timestamps and thread ids removed) appears more than 3 times (a per-step library warning would)."""
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # As a user runs it.
  out = subprocess.run([sys.executable, "-m", "declip_jax.main", "--config=configs/demo.py", f"--workdir={tmp_path}",
                        "--config.train.num_steps=6", "--config.train.log_every_steps=1",
                        "--config.evals.linear_probe_shape.enabled=False"], cwd=REPO, capture_output=True,
                       text=True, timeout=600, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = (out.stdout + out.stderr).splitlines()
  assert sum("train/loss_nns=" in l for l in lines) == 6 and any("ETA" in l for l in lines)
  assert any(l.startswith("[zero_shot_shape] step 6") for l in lines)
  counts = {}
  for line in lines:
    if line.strip() and not _is_progress_loss_or_result(line):
      message = re.sub(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ", "", line)
      counts[message] = counts.get(message, 0) + 1
  repeated = {m: n for m, n in counts.items() if n > 3}
  assert not repeated, repeated
