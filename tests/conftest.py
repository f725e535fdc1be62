"""Shared fixtures: a tiny config that exercises every code path in seconds, and the official reference."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # The interop extra: open_clip's import reaches triton (via torch._dynamo), whose native library segfaults
  import open_clip  # noqa: F401  when loaded after TensorFlow and JAX; loaded first, all three coexist.
except ImportError:
  pass

import numpy as np
import pytest

from tests.tiny_config import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]


def virtual_devices_flags(count: int) -> str:
  """XLA_FLAGS for a test process with `count` CPU devices. On a loaded 2-core machine the device threads of a
  collective can take longer than XLA's default 40 s to meet, which it treats as fatal: allow 10 minutes."""
  return (f"--xla_force_host_platform_device_count={count} "
          "--xla_cpu_collective_call_terminate_timeout_seconds=600")
REFERENCE = REPO / "tests" / "data" / "official_declip_losses.npz"  # Copy of shared/reference (see its README).


@pytest.fixture
def config():
  """A fresh tiny DeCLIP config (tests may change it)."""
  return tiny_config()


@pytest.fixture(scope="session")
def reference():
  return dict(np.load(REFERENCE))
