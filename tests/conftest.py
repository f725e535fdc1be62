"""Shared fixtures: a tiny config that exercises every code path in seconds, and the official reference."""

import os
import pathlib
import shutil
import tempfile

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
REFERENCE = REPO / "tests" / "data" / "official_declip_losses.npz"  # The authors' outputs (see its README).


def pytest_configure(config):
  """One persistent JAX compilation cache for the whole run, shared by the xdist workers and every subprocess
  they start (both inherit this process's environment): most tests train the same tiny config, and a tiny
  `declip_jax.main` run takes 39 s compiling its programs, 22 s with them cached. Each run starts empty (nothing
  carries over between runs) and removes it at the end. JAX reads these variables when it is imported, which
  happens after this hook (this file imports no JAX)."""
  if hasattr(config, "workerinput") or "JAX_COMPILATION_CACHE_DIR" in os.environ:
    return  # An xdist worker (it inherited the controller's), or a cache the caller chose.
  cache = tempfile.mkdtemp(prefix="declip_jax_tests_jit_cache_")
  config._declip_jit_cache = cache
  os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # The tiny programs compile in under 1 s.


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
  """Makes `--dist loadgroup` group again under pytest 9.2: pytest-xdist 3.8 (its worker's hook, which runs
  before this one) marks a test of an `xdist_group` by setting `item._nodeid` to "<node id>@<group>", and its
  scheduler reads the group from the node id, but pytest 9.2 keeps the node id in `item._id`, so the suffix was
  lost and every group spread over the workers. This copies it over (a no-op where xdist did not set one)."""
  del config
  try:
    from _pytest.nodeid import coerce_node_id  # pylint: disable=g-import-not-at-top  (pytest 9.2)
  except ImportError:
    return  # A pytest that keeps the node id where xdist writes it.
  for item in items:
    grouped = item.__dict__.get("_nodeid")
    if isinstance(grouped, str) and grouped != item.nodeid and hasattr(item, "_id"):
      item._id = coerce_node_id(grouped)  # pylint: disable=protected-access


def pytest_unconfigure(config):
  if getattr(config, "_declip_jit_cache", None):
    shutil.rmtree(config._declip_jit_cache, ignore_errors=True)


@pytest.fixture
def config():
  """A fresh tiny DeCLIP config (tests may change it)."""
  return tiny_config()


@pytest.fixture(scope="session")
def reference():
  return dict(np.load(REFERENCE))


@pytest.fixture(scope="session")
def benchmark_case(tmp_path_factory):
  """tests/clip_benchmark_case.py built once: (the run's workdir, the tars' root, the run's config). Modules that
  use it carry the xdist group "benchmark", so that one worker runs them all (`pytest_collection_modifyitems`)."""
  from tests import clip_benchmark_case  # pylint: disable=g-import-not-at-top
  return clip_benchmark_case.build(tmp_path_factory.mktemp("benchmark_case"))
