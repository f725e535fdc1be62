"""The compiled train step on 8 devices never holds a B_global x B_global logits buffer: each device scores
its B_local rows against the B_global gathered columns (docs/design.md §5)."""

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

# Processes with 8 CPU device threads each: run them one at a time (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("virtual_devices")


def test_no_device_holds_global_by_global_logits():
  out = subprocess.run([sys.executable, "tests/hlo_check.py"], cwd=REPO, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["local_x_global"], "expected [B_local, B_global] logits in the HLO"
  assert not result["global_x_global"], "a [B_global, B_global] f32 buffer is in the compiled step"


def test_aot_memory_command_prints_the_per_device_table():
  out = subprocess.run([sys.executable, "-m", "declip_jax.aot", "--config=tests/tiny_config.py", "--devices=8"],
                       cwd=REPO, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert out.returncode == 0, out.stderr[-3000:]
  assert "on 8 devices (2 per device)" in out.stdout and "indicative only" in out.stdout
  rows = dict(line.strip("|").split("|")[:2] for line in out.stdout.splitlines() if line.startswith("| ") and
              "GiB" not in line)
  assert {" arguments ", " temporaries ", " outputs "} <= set(rows) and float(rows[" arguments "]) >= 0
