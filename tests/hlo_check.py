"""Run in a fresh process with 8 virtual CPU devices (see test_hlo.py): compiles the tiny DeCLIP train step at
global batch 112 (14 per device) on mesh (8, 1, 1) and prints, as JSON, which [rows, columns] logit shapes
the optimised HLO holds."""

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                           " --xla_cpu_collective_call_terminate_timeout_seconds=600")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402  pylint: disable=g-import-not-at-top

from declip_jax.aot import ladder  # noqa: E402  pylint: disable=g-import-not-at-top
from tests.tiny_config import tiny_config  # noqa: E402  pylint: disable=g-import-not-at-top

GLOBAL, LOCAL = 112, 14


def main():
  config = tiny_config()
  config.train.batch_size = GLOBAL
  config.nns.group_size = 128
  compiled = ladder.compile_train_step(config, jax.devices()[:8])
  hlo = compiled.as_text()
  shapes = set(re.findall(r"f32\[(\d+),(\d+)\]", hlo))
  print(json.dumps({"global_x_global": [GLOBAL, GLOBAL] in [[int(a), int(b)] for a, b in shapes],
                    "local_x_global": [LOCAL, GLOBAL] in [[int(a), int(b)] for a, b in shapes],
                    "temp_bytes": compiled.memory_analysis().temp_size_in_bytes}))


if __name__ == "__main__":
  main()
