"""Exact gradient accumulation (docs/design.md §17): with train.accum_steps = 4 every method's update, metrics,
BatchNorm statistics and NN queue equal the full batch's, on 1 and on 8 CPU devices (tests/accumulation_check.py,
in a subprocess per device count), with FLIP's patch masking too (§18); and what the config refuses."""

import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from declip_jax import config as config_lib
from declip_jax.training import accumulation
from tests.conftest import REPO
from tests.tiny_config import tiny_config, tiny_resnet_config

pytestmark = pytest.mark.xdist_group("virtual_devices")  # Runs with 8 device threads: one at a time.

METHODS = ("clip", "declip", "slip", "filip", "defilip", "desiglip", "declip_rn50", "declip_masked", "defilip_masked")
# The default suite's share; `declip_masked` is DeCLIP with every term plus FLIP's patch masking.
DEFAULT = {1: ("declip", "slip", "filip"), 8: ("declip_masked", "declip_rn50")}


def _check(devices: int, methods) -> None:
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  out = subprocess.run([sys.executable, "tests/accumulation_check.py", str(devices), *methods], cwd=REPO,
                       capture_output=True, text=True, timeout=1200, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  lines = [l for l in out.stdout.splitlines() if l.startswith("method=")]
  assert [re.match(r"method=(\w+)", l).group(1) for l in lines] == list(methods), out.stdout
  for line in lines:
    for name, value in re.findall(r"(\w+)=([0-9.e+-]+)(?:\s|$)", line):
      if name in ("devices", "accum_steps"):
        continue
      # As tests/test_multidevice.py: 1e-5 after two steps, Adam's moments 1e-4 (nu holds squared gradients).
      assert float(value) < (1e-4 if name == "opt_state" else 1e-5), line


@pytest.mark.parametrize("devices", [1, 8])
def test_accumulated_updates_equal_the_full_batch(devices):
  _check(devices, DEFAULT[devices])


@pytest.mark.slow  # The default suite covers every term, masking, and a ResNet (on 8 devices); these complete
# the table (about 8 min on 2 cores).
@pytest.mark.parametrize("devices", [1, 8])
def test_accumulated_updates_equal_the_full_batch_for_the_other_methods(devices):
  _check(devices, [m for m in METHODS if m not in DEFAULT[devices]])


def test_micro_batches_keep_each_devices_rows_and_join_back():
  x = jnp.arange(32 * 3).reshape(32, 3)
  micro = accumulation.split_micro(x, num_micro=4, shards=2)
  assert micro.shape == (4, 8, 3)
  # Micro-batch 1: rows 4-7 of device 0's block (rows 0-15) and rows 20-23 of device 1's (16-31).
  np.testing.assert_array_equal(micro[1, :, 0] // 3, [4, 5, 6, 7, 20, 21, 22, 23])
  np.testing.assert_array_equal(accumulation.join_micro(micro, shards=2), x)


def test_accumulation_steps_that_do_not_split_the_batch_are_config_errors():
  config = tiny_config()
  config.train.accum_steps = 3
  with pytest.raises(config_lib.ConfigError, match=r"divisible by train.accum_steps \(3\)"):
    config_lib.validate(config)
  resnet = tiny_resnet_config()  # Batch 16, BatchNorm groups of 8: 4 micro-batches of 4 would split groups.
  resnet.train.accum_steps = 4
  with pytest.raises(config_lib.ConfigError, match="whole ResNet BatchNorm groups"):
    config_lib.validate(resnet)
  resnet.train.accum_steps = 2
  config_lib.validate(resnet)


def test_patch_masking_is_refused_for_a_resnet_and_bounds_filips_top_k():
  resnet = tiny_resnet_config()
  resnet.model.image.mask_ratio = 0.5
  with pytest.raises(config_lib.ConfigError, match=r"model.image.mask_ratio \(0.5\) applies to ViT towers"):
    config_lib.validate(resnet)
  from declip_jax import presets  # pylint: disable=g-import-not-at-top
  filip = presets.use_filip(tiny_config())  # 16 patches; at 0.75, 4 stay visible.
  filip.model.image.mask_ratio, filip.model.filip.top_k = 0.75, 5
  with pytest.raises(config_lib.ConfigError, match=r"model.filip.top_k \(5\) must be in \[1, 4\]"):
    config_lib.validate(filip)
  filip.model.filip.top_k = 4
  config_lib.validate(filip)
  for bad in (1.0, -0.1):
    config = tiny_config()
    config.model.image.mask_ratio = bad
    with pytest.raises(config_lib.ConfigError, match="model.image.mask_ratio must be in"):
      config_lib.validate(config)
