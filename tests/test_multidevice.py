"""8 virtual CPU devices compute the same training function as 1 device (run in a subprocess)."""

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, virtual_devices_flags

# Processes with 8 CPU device threads each: run them one at a time (pytest -n 2 --dist loadgroup).
pytestmark = pytest.mark.xdist_group("virtual_devices")


# "local" and "methods" run in CI's newest-JAX phase (-m "not slow or newest_jax"), not in the default suite, to keep
# the suite's time (each is 1.5-3 minutes on 2 cores).
_IN_THE_NEWEST_JAX_PHASE = (pytest.mark.slow, pytest.mark.newest_jax)


@pytest.mark.parametrize("search", [pytest.param("local", marks=_IN_THE_NEWEST_JAX_PHASE), "global", "resnet",
                                    pytest.param("methods", marks=_IN_THE_NEWEST_JAX_PHASE), "sigmoid"])
def test_eight_devices_match_one(search):
  """search: the NN search of the ViT runs, "resnet": a ResNet tower whose BatchNorm groups span devices, or
  "methods": SLIP's SimCLR and FILIP's token-wise term (multidevice_check.methods_config), "sigmoid": DeSigLIP
  (multidevice_check.sigmoid_config)."""
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": virtual_devices_flags(8)}
  out = subprocess.run([sys.executable, "tests/multidevice_check.py", search], cwd=REPO, capture_output=True,
                       text=True, timeout=900, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l for l in out.stdout.splitlines() if l.startswith("mesh=")]
  # (8,1,1), (4,2,1), (2,2,2), (1,8,1) with FSDP-split parameters; ResNet: (8,1,1); methods, sigmoid: (8,1,1),
  # (4,2,1).
  assert len(lines) == {"resnet": 1, "methods": 2, "sigmoid": 2}.get(search, 4), out.stdout
  for line in lines:
    for name, value in re.findall(r"(\w+)=([0-9.e+-]+)(?:\s|$)", line):
      # Losses, gradient norm, parameters, BatchNorm statistics and the queue to 1e-5 after two steps. Adam's
      # moments are looser: nu holds squared gradients, whose rounding differences are relatively larger.
      bound = 1e-4 if name == "opt_state" else 1e-5
      assert float(value) < bound, line
