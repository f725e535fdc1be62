"""Shared fixtures: a tiny config that exercises every code path in seconds, and the official reference."""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from tests.tiny_config import tiny_config

REPO = pathlib.Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "official_declip_losses.npz"  # Copy of shared/reference (see its README).


@pytest.fixture
def config():
  """A fresh tiny DeCLIP config (tests may change it)."""
  return tiny_config()


@pytest.fixture(scope="session")
def reference():
  return dict(np.load(REFERENCE))
