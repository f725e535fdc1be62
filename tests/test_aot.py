"""The AOT fit check: libtpu's refusals read as numbers, the settings ladder, the verdict; a real libtpu compile
of the ViT-B/32 step for a small v5e slice when libtpu is installed (slow)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from declip_jax.aot import gpu_target, ladder
from tests.conftest import REPO
from tests.tiny_config import tiny_config


def test_out_of_memory_messages_of_both_phrasings_are_read():
  temporaries = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
                 "(32.51G) exceeds available HBM (15.75G).")
  needed, available, what = ladder.parse_out_of_memory(temporaries)
  assert (round(needed, 2), round(available, 2), what) == (32.51, 15.75, "HLO temporaries")
  used = "XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 20.5G of 15.75G hbm."
  assert [round(x, 2) for x in ladder.parse_out_of_memory(used)[:2]] == [20.5, 15.75]
  assert ladder.parse_out_of_memory("INVALID_ARGUMENT: something else") is None


def test_ladder_is_cumulative_stops_at_the_first_fit_and_the_verdict_names_its_flags(monkeypatch):
  """A fake compiler that fits once the batch is accumulated over 4 micro-batches (and bf16 and save_dots remat
  are on, from earlier rungs)."""
  seen = []

  def fake_try_compile(config, devices, label, overrides, available):
    seen.append((label, dict(overrides), config.train.accum_steps, config.model.dtype))
    fits = config.train.accum_steps == 4 and config.model.text.remat == "save_dots"
    return ladder.Attempt(label, overrides, fits, 10.0 if fits else 20.0, "planned peak" if fits else "HLO temporaries")

  monkeypatch.setattr(ladder, "try_compile", fake_try_compile)
  config = tiny_config()
  attempts = ladder.fit(config, devices=None, available=15.75)
  assert [a.label for a in attempts] == [label for label, _ in ladder.LADDER[:4]]
  assert seen[1][3] == "bfloat16" and seen[3][2] == 4 and seen[2][2] == 1
  text = ladder.verdict(attempts, 15.75)
  assert text.startswith("DOES NOT FIT as configured: needs over 20.00 GiB per device (its HLO temporaries alone)")
  assert ("--config.model.dtype=bfloat16" in text and "--config.model.text.remat=save_dots" in text
          and "--config.train.accum_steps=4" in text)
  assert ladder.verdict(attempts[-1:], 15.75).startswith("FITS as configured: planned peak 10.00 GiB")


def test_a_rung_the_config_cannot_take_is_passed_over(monkeypatch):
  """Accumulation that a config refuses (a ResNet whose micro-batches would split BatchNorm groups): the next
  rungs go on without it."""
  seen = []

  def fake_try_compile(config, devices, label, overrides, available):
    seen.append(dict(overrides))
    if config.train.accum_steps > 1:
      return ladder.Attempt(label, overrides, False, None, "", "invalid config: whole ResNet BatchNorm groups")
    return ladder.Attempt(label, overrides, "batch" in label, 1.0, "planned peak")

  monkeypatch.setattr(ladder, "try_compile", fake_try_compile)
  attempts = ladder.fit(tiny_config(), devices=None, available=15.75)
  assert attempts[-1].fits and "train.accum_steps" not in attempts[-1].overrides
  assert [o.get("train.accum_steps") for o in seen[3:]] == [4, 16, None, None, None]


def test_a_compiled_program_whose_state_does_not_fit_is_refused():
  """libtpu checks temporaries only; the verdict adds the state and batch (arguments) to them."""
  config = tiny_config()
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()[:1]
  assert ladder.try_compile(config, devices, "x", {}, available=None).fits
  refused = ladder.try_compile(config, devices, "x", {}, available=1e-6)
  assert not refused.fits and "compiles, but temporaries + state + batch need" in refused.error


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install jax[tpu])")
def test_vit_b32_step_compiles_for_a_v5e_slice_with_libtpu():
  """The recipe's B/32 step at 128 images per chip on v5e 2x2: float32 does not fit 16 GiB; the ladder finds
  bf16 + save_dots remat, as the table in docs/accelerators.md says for v5e-32."""
  out = subprocess.run([sys.executable, "-m", "declip_jax.aot", "--config=configs/declip_vit_b32.py",
                        "--target=tpu:v5e:2x2", "--config.train.batch_size=512", "--config.nns.groups=4"],
                       cwd=REPO, capture_output=True, text=True, timeout=1200,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                            "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"})  # Compile only: another libtpu process may run.
  assert out.returncode == 3, out.stdout + out.stderr[-3000:]
  assert "HBM per device (libtpu): 15.75 GiB" in out.stdout
  assert "DOES NOT FIT as configured" in out.stdout
  assert "Fits with --config.model.dtype=bfloat16 --config.model.image.remat=save_dots" in out.stdout


def test_ladder_skips_rungs_the_config_already_has(monkeypatch):
  """A config with full remat and bf16 already: the bf16 and remat rungs are skipped, never downgraded."""
  labels = []

  def fake_try_compile(config, devices, label, overrides, available):
    labels.append(label)
    assert config.model.image.remat == "full" and config.model.dtype == "bfloat16"
    return ladder.Attempt(label, overrides, "FSDP" in label, 1.0, "planned peak")

  monkeypatch.setattr(ladder, "try_compile", fake_try_compile)
  config = tiny_config()
  config.model.dtype, config.model.image.remat, config.model.text.remat = "bfloat16", "full", "full"
  attempts = ladder.fit(config, devices=None, available=15.75)
  assert labels == ["as configured", "+ accumulation over 4 micro-batches", "+ accumulation over 16 micro-batches",
                    "+ FSDP over all devices"]
  assert attempts[-1].overrides == {"train.accum_steps": 16, "mesh.shape": (1, -1, 1)}


_GPU_COMPILER = gpu_target.has_module("jax_plugins.xla_cuda12")
_GPU_COMPILER_REQUIRED = os.environ.get("DECLIP_REQUIRE_GPU_COMPILER") == "1"  # .ci/run's requirements-gpu-aot env.


def _aot(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "declip_jax.aot", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.skipif(not (_GPU_COMPILER or _GPU_COMPILER_REQUIRED),
                    reason="XLA's GPU compiler not installed (pip install -r requirements-gpu-aot.txt)")
def test_the_step_compiles_for_eight_h100s_with_xlas_gpu_compiler():
  """XLA's GPU compiler, no GPU: the tiny config's train step for one host of 8 H100s, with the verdict and the
  roofline estimate. Fails the day the step no longer compiles for GPUs."""
  out = _aot("--config=tests/tiny_config.py", "--target=gpu:h100:8")
  assert out.returncode == 0, out.stdout + out.stderr[-3000:]
  lines = out.stdout.splitlines()
  assert "on 8 devices (2 per device)" in lines[0] and "NVIDIA H100 80GB HBM3 (SXM), compiled by XLA's GPU" in lines[0]
  assert lines[1] == ("GPU memory per device: 79.11 GiB, of which JAX allocates 59.33 GiB "
                      "(XLA_PYTHON_CLIENT_MEM_FRACTION, default 0.75)")
  assert any(l.startswith("FITS as configured: planned peak 0.0") for l in lines)
  roofline = next(l for l in lines if l.startswith("Roofline estimate"))
  assert "495 TFLOP/s (TF32 matrix peak)" in roofline and "3.35 TB/s" in roofline and "images/s per GPU" in roofline


def test_an_unknown_gpu_or_a_malformed_target_is_one_line_naming_the_known_ones():
  out = _aot("--config=tests/tiny_config.py", "--target=gpu:h101:8", timeout=120)
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip() == ("error: unknown GPU 'h101'; known: h100, h100-pcie, h200, a100-40, a100-80, "
                                "a100-80-pcie, b200.")
  out = _aot("--config=tests/tiny_config.py", "--target=gpu:h100", timeout=120)
  assert out.returncode == 1 and "expected gpu:<name>:<gpus> or gpu:<name>:<hosts>x<gpus per host>" in out.stderr


def test_gpu_targets_carry_the_datasheet_numbers():
  """Memory, bandwidth and dense matrix peaks read from XLA's descriptions, against NVIDIA's datasheets (dense,
  no sparsity): H100 SXM 989 TFLOP/s bf16, 495 TF32, 3.35 TB/s; A100 312 / 156, 1.56 TB/s (40 GB)."""
  h100, a100 = gpu_target.load("h100"), gpu_target.load("a100-40")
  assert round(h100.matrix_flops["bfloat16"] / 1e12) == 989 and round(h100.matrix_flops["float32"] / 1e12) == 495
  assert round(h100.memory_bandwidth / 1e12, 2) == 3.35 and round(h100.memory_bytes / 2**30, 2) == 79.11
  assert round(a100.matrix_flops["bfloat16"] / 1e12) == 312 and round(a100.matrix_flops["float32"] / 1e12) == 156
  assert round(a100.memory_bandwidth / 1e12, 2) == 1.56 and round(a100.usable_gib(), 2) == 29.57
  assert gpu_target.parse("gpu:h200:2x8") == ("h200", 2, 8)
  assert "mem_clock_ghz" in h100.text and "mem_clock_ghz" not in gpu_target.without_newer_fields(h100.text)
  assert gpu_target.without_newer_fields(h100.text).count("\n") == h100.text.count("\n") - 4


def test_the_roofline_is_the_larger_of_the_compute_and_the_memory_time():
  config = tiny_config()
  h100 = gpu_target.load("h100")
  estimate = ladder.roofline(config, {"flops": 0.0, "bytes accessed": 3.3523e9}, h100, num_devices=8)
  assert estimate["bound"] == "memory" and estimate["memory_ms"] == pytest.approx(1.0, rel=1e-3)
  assert estimate["images_per_s"] == pytest.approx(2 / 1e-3, rel=1e-3)  # 2 images per device per 1 ms.
  heavy = ladder.roofline(config, {"flops": 495.0e12, "bytes accessed": 1.0}, h100, num_devices=8)
  assert heavy["bound"] == "compute" and heavy["step_ms"] == pytest.approx(1000.0, rel=1e-3)
