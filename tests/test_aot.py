"""The AOT fit check: libtpu's refusals read as numbers, the settings ladder, the verdict; a real libtpu compile
of the ViT-B/32 step for a small v5e slice when libtpu is installed (slow)."""

import importlib.util
import os
import subprocess
import sys

import pytest

from declip_jax import aot
from tests.conftest import REPO
from tests.tiny_config import tiny_config


def test_out_of_memory_messages_of_both_phrasings_are_read():
  temporaries = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries "
                 "(32.51G) exceeds available HBM (15.75G).")
  needed, available, what = aot.parse_out_of_memory(temporaries)
  assert (round(needed, 2), round(available, 2), what) == (32.51, 15.75, "HLO temporaries")
  used = "XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 20.5G of 15.75G hbm."
  assert [round(x, 2) for x in aot.parse_out_of_memory(used)[:2]] == [20.5, 15.75]
  assert aot.parse_out_of_memory("INVALID_ARGUMENT: something else") is None


def test_ladder_is_cumulative_stops_at_the_first_fit_and_the_verdict_names_its_flags(monkeypatch):
  """A fake compiler that fits once the batch is halved (and bf16 and remat are on, from earlier rungs)."""
  seen = []

  def fake_try_compile(config, devices, label, overrides, available):
    seen.append((label, dict(overrides), config.train.batch_size, config.model.dtype))
    fits = config.train.batch_size <= 8 and config.model.text.remat == "full"
    return aot.Attempt(label, overrides, fits, 10.0 if fits else 20.0, "planned peak" if fits else "HLO temporaries")

  monkeypatch.setattr(aot, "try_compile", fake_try_compile)
  config = tiny_config()
  attempts = aot.fit(config, devices=None, available=15.75)
  assert [a.label for a in attempts] == [label for label, _ in aot.LADDER[:6]]
  assert seen[1][3] == "bfloat16" and seen[5][2] == 8 and seen[4][1]["mesh.shape"] == (1, -1, 1)
  text = aot.verdict(attempts, 15.75)
  assert text.startswith("DOES NOT FIT as configured: needs over 20.00 GiB per device (its HLO temporaries alone)")
  assert ("--config.model.dtype=bfloat16" in text and "--config.model.text.remat=full" in text
          and "--config.train.batch_size=8" in text and "--config.mesh.shape='(1, -1, 1)'" in text)
  assert aot.verdict(attempts[-1:], 15.75).startswith("FITS as configured: planned peak 10.00 GiB")


def test_a_compiled_program_whose_state_does_not_fit_is_refused():
  """libtpu checks temporaries only; the verdict adds the state and batch (arguments) to them."""
  config = tiny_config()
  import jax  # pylint: disable=g-import-not-at-top
  devices = jax.devices()[:1]
  assert aot.try_compile(config, devices, "x", {}, available=None).fits
  refused = aot.try_compile(config, devices, "x", {}, available=1e-6)
  assert not refused.fits and "compiles, but temporaries + state + batch need" in refused.error


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="libtpu not installed (pip install jax[tpu])")
def test_vit_b32_step_compiles_for_a_v5e_slice_with_libtpu():
  """The recipe's B/32 step at 128 images per chip on v5e 2x2: float32 does not fit 16 GiB; the ladder finds
  bf16 + save_dots remat, as the README's table says for v5e-32."""
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
    return aot.Attempt(label, overrides, "FSDP" in label, 1.0, "planned peak")

  monkeypatch.setattr(aot, "try_compile", fake_try_compile)
  config = tiny_config()
  config.model.dtype, config.model.image.remat, config.model.text.remat = "bfloat16", "full", "full"
  attempts = aot.fit(config, devices=None, available=15.75)
  assert labels == ["as configured", "+ FSDP over all devices"] and attempts[-1].overrides == {"mesh.shape": (1, -1, 1)}
