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


def test_scan_fill_counts_the_buffers_a_program_fills_with_a_constant():
  sys.path.insert(0, os.path.join(REPO, "benchmarks"))
  import scan_fill  # pylint: disable=g-import-not-at-top
  hlo = """
%fused_broadcast.1 () -> (f32[12,4,8], f32[12,4,8]) {
  %constant_1 = f32[] constant(0)
  %broadcast.2 = f32[12,4,8]{2,1,0} broadcast(%constant_1), dimensions={}
  %copy.3 = f32[12,4,8]{2,1,0} copy(%broadcast.2)
  ROOT %tuple.4 = (f32[12,4,8]{2,1,0}, f32[12,4,8]{2,1,0}) tuple(%broadcast.2, %copy.3)
}

%fused_add.5 (p0: f32[4,8]) -> f32[4,8] {
  %p0 = f32[4,8]{1,0} parameter(0)
  ROOT %add.6 = f32[4,8]{1,0} add(%p0, %p0)
}

ENTRY %main (param.1: f32[4,8]) -> f32[4,8] {
  %param.1 = f32[4,8]{1,0} parameter(0)
  %loop_broadcast_fusion.7 = (f32[12,4,8]{2,1,0}, f32[12,4,8]{2,1,0}) fusion(), kind=kLoop, calls=%fused_broadcast.1
  ROOT %loop_add_fusion.8 = f32[4,8]{1,0} fusion(%param.1), kind=kLoop, calls=%fused_add.5
}
"""
  assert scan_fill.constant_fill_bytes(hlo) == 2 * 12 * 4 * 8 * 4


@pytest.mark.slow  # Three compiles of the tiny config's step: ~40 s on 2 cores.
def test_scan_fill_compares_the_layers_in_a_loop_with_none(tmp_path):
  out = subprocess.run([sys.executable, "benchmarks/scan_fill.py", "--config=tests/tiny_config.py", "--target=cpu",
                        "--per_device_batch=16", f"--json_out={tmp_path / 'rows.json'}"], cwd=REPO,
                       capture_output=True, text=True, timeout=600, env=_ENV)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
  assert rows["loop"]["while_loops"] > rows["unrolled"]["while_loops"] == rows["unscanned"]["while_loops"]
  assert rows["loop"]["peak_gib"] > rows["unrolled"]["peak_gib"]
  assert [l.split("|")[1].strip() for l in out.stdout.splitlines() if l.startswith("| ")][1:] == [
      "loop", "unrolled", "unscanned"]
