"""The benchmark scripts run as a user runs them: the device check's dry run writes its results, the train-step
benchmark prints its table on the demo config. No TensorFlow needed (CI also runs this in the newest-JAX
environment, where the train-step benchmark falls back to synthetic batches; the dry run runs only there)."""

import json
import os
import subprocess
import sys

import pytest

from declip_jax.aot import gpu_target
from tests.conftest import REPO

_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}  # python3 = this one.


@pytest.mark.gpu_machine  # 3-5 min on 2 cores; CI's newest-JAX phase runs it, as the GPU machine has that stack.
def test_device_check_dry_run_writes_the_json_and_the_table(tmp_path):
  out = subprocess.run(["bash", "benchmarks/device_check.sh", "--dry-run", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=600, env=_ENV)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  result = json.loads((tmp_path / "device_check.json").read_text())
  env = result["environment"]
  assert env["dry_run"] and env["backend"] == "cpu" and env["jax"] and env["flax"] != "not installed"
  c = result["correctness"]
  assert c["passed"] and len(c["float32_losses_device"]) == 3 and c["bf16_finite"]
  assert [r["model"] for r in result["speed"]] == ["DeCLIP ViT-B/32", "CLIP ViT-B/32", "DeCLIP ViT-B/16"]
  assert all(r["step_s"] > 0 and r["images_per_s"] > 0 and r["batch"] == 16 for r in result["speed"])
  assert result["matmul_bf16_tflops"] > 0 and result["errors"] == []
  attention = {a["implementation"]: a for a in result["attention"]}
  assert set(attention) == {"xla", "cudnn"} and attention["xla"]["ran"]
  memory = result["compile_memory"]
  assert memory["target"] == "h100" and memory["on_device"]["planned_peak_gib"] > 0
  if gpu_target.has_module("jax_plugins.xla_cuda12"):  # CI's newest-JAX environment: XLA's GPU compiler.
    assert memory["deviceless"]["planned_peak_gib"] > 0 and memory["deviceless"]["compile_s"] > 0
  else:
    assert "requirements-gpu-aot.txt" in memory["deviceless"]["error"]
  table = (tmp_path / "device_check.md").read_text()
  assert "## Correctness" in table and "| DeCLIP ViT-B/16 | 16 | none |" in table
  assert "| on the device (autotuned) |" in table


def test_train_step_benchmark_prints_a_row_for_the_demo_config():
  out = subprocess.run([sys.executable, "benchmarks/train_step.py", "--config=configs/demo.py", "--steps=2",
                        "--data=synthetic", "--config.train.batch_size=32"], cwd=REPO, capture_output=True,
                       text=True, timeout=600, env=_ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("host: ") and "cores" in out.stdout.splitlines()[0]
  rows = [l for l in out.stdout.splitlines() if l.startswith("| configs/demo.py | DeCLIP | 32 |")]
  assert len(rows) == 1 and float(rows[0].split("|")[-2]) > 0  # CPU/wall ratio.


def test_cost_table_counts_declip_at_about_twice_clip_per_image():
  out = subprocess.run([sys.executable, "benchmarks/cost_table.py"], cwd=REPO, capture_output=True, text=True,
                       timeout=300, env=_ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = {tuple(c.strip() for c in l.split("|")[1:3]): l for l in out.stdout.splitlines() if l.startswith("| ")}
  assert "| 1.00x |" in rows[("CLIP", "full (224 px, unmasked)")]
  assert "| 2.09x |" in rows[("DeCLIP", "full (224 px, unmasked)")]
  assert "| 1.50x |" in rows[("DeCLIP", "patch mask 0.5")]
