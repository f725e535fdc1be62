"""How long a stop takes: SIGTERM (a preemption notice) to the committed checkpoint and to the exit, measured on
real `python -m declip_jax.main` runs, with checkpoints far apart so that the stop writes its own.

  python benchmarks/stop_latency.py                      # the tiny config and the demo, 3 signals each (~3 min)
  python benchmarks/stop_latency.py --cases=recipe_size  # DeCLIP ViT-B/32's state at batch 32 (~5 min, 23 GB RAM)

For each signal: the step reached, the checkpoint's size on disk, the steady step time (between consecutive
logged steps before the signal), the seconds from the signal to the step's checkpoint directory appearing
(Orbax renames it into place when complete), to the process's exit, and what the run itself printed ("N s after
the request", from its signal handler to the commit it waited for). The platforms' grace between notice and kill
is 30 s (GCE spot VMs, Kubernetes' default); `checkpoint.preemption_grace_seconds` is what the run compares with.
"""

import argparse
import os
import pathlib
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
FAR_APART = ["--config.checkpoint.every_steps=1000000", "--config.train.log_every_steps=1",
             "--config.eval.every_steps=1000000"]
# name -> (config file, overrides, delays in seconds after the first logged step at which SIGTERM is sent)
CASES = {
    "tiny": ("tests/tiny_config.py", ["--config.train.num_steps=100000"], (0.2, 0.5, 1.0)),
    "demo": ("configs/demo.py", ["--config.train.num_steps=100000"], (1.0, 2.5, 4.0)),
    # The recipe's state (DeCLIP ViT-B/32: 180 M parameters, AdamW's two moments, the NN queue of 32 x 65,536 x
    # 512 text embeddings, 5.4 GB on disk) trained at batch 32 on the built-in data: its step is a CPU's, its
    # checkpoint the recipe's size.
    "recipe_size": ("configs/declip_vit_b32.py",
                    ["--config.train.num_steps=100", "--config.train.batch_size=32", "--config.ssl.bn_group_size=32",
                     "--config.data.source=builtin", "--config.data.tokenizer=word",
                     "--config.data.builtin.num_train=512", "--config.data.builtin.num_test=64",
                     "--config.evals.zero_shot_imagenet.enabled=False"], (20.0,)),
}


def _committed(workdir: pathlib.Path) -> set[int]:
  return {int(p.name) for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()}


def _bytes_under(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(config: str, overrides: list[str], delay: float) -> dict:
  """One run, stopped by SIGTERM `delay` s after its first logged step."""
  workdir = pathlib.Path(tempfile.mkdtemp(prefix="stop_latency_"))
  try:
    command = [sys.executable, "-m", "declip_jax.main", f"--config={config}", f"--workdir={workdir}", *FAR_APART,
               *overrides]
    proc = subprocess.Popen(command, cwd=REPO, env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[tuple[float, str]] = []
    training = threading.Event()

    def read():
      for line in proc.stdout:
        lines.append((time.monotonic(), line.rstrip("\n")))
        if "train/loss=" in line:
          training.set()
      training.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    training.wait(timeout=3600)
    time.sleep(delay)
    before = _committed(workdir)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    committed_at = None
    while proc.poll() is None:
      if committed_at is None and _committed(workdir) - before:
        committed_at = time.monotonic()
      time.sleep(0.01)
    exited_at = time.monotonic()
    reader.join(timeout=30)
    if committed_at is None and _committed(workdir) - before:
      committed_at = exited_at
    last = next((l for _, l in reversed(lines) if l.startswith("Stopped by")), "")
    match = re.match(r"Stopped by \S+ at step (\d+): checkpoint (\d+) saved in \S+, ([\d.]+) s after", last)
    steps = [t for t, l in lines if "train/loss=" in l and t < sent]
    step_s = statistics.median(b - a for a, b in zip(steps[1:], steps[2:])) if len(steps) > 3 else float("nan")
    # The run's own figures when it warns that a stop outlasts the grace (its first save: here the stop's).
    warned = next((m for _, l in lines if (m := re.search(r"up to a step of ([\d.]+) s and a checkpoint write of "
                                                         r"([\d.]+) s", l))), None)
    step = int(match.group(1)) if match else None
    return {"exit": proc.returncode, "step": step, "saved": bool(match) and match.group(1) == match.group(2),
            "mb": _bytes_under(workdir / "checkpoints" / str(step)) / 2**20 if step else float("nan"),
            "step_s": step_s, "to_checkpoint": (committed_at - sent) if committed_at else float("nan"),
            "to_exit": exited_at - sent, "reported": float(match.group(3)) if match else float("nan"),
            "write_s": float(warned.group(2)) if warned else float("nan"), "last": last}
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def _seconds(value: float) -> str:
  return "-" if value != value else f"{value:.1f} s"  # NaN: not reported.


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--cases", default="tiny,demo", help=f"comma-separated, of {', '.join(CASES)}")
  args = parser.parse_args()
  rows = []
  for name in args.cases.split(","):
    config, overrides, delays = CASES[name]
    for delay in delays:
      r = measure(config, overrides, delay)
      rows.append((name, config, delay, r))
      print(f"{name} +{delay:g} s: {r}", file=sys.stderr, flush=True)
  print(f"host: {platform.node()}, {os.cpu_count()} cores, {platform.processor() or platform.machine()}; "
        f"local disk; {time.strftime('%Y-%m-%d')}")
  print("| case | config | signal after the first step | step reached | stop's own checkpoint written | checkpoint "
        "size | step time | signal to checkpoint committed | signal to exit | the run's own line | write (its "
        "warning) | exit |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name, config, delay, r in rows:
    print(f"| {name} | `{config}` | {delay:g} s | {r['step']} | {'yes' if r['saved'] else 'no'} | {r['mb']:,.1f} MB | "
          f"{r['step_s']:.2f} s | {r['to_checkpoint']:.2f} s | {r['to_exit']:.2f} s | {r['reported']:.1f} s | "
          f"{_seconds(r['write_s'])} | {r['exit']} |")


if __name__ == "__main__":
  main()
