"""Times the jitted DeCLIP train step for a config and prints a table row.

  python benchmarks/train_step.py --config=configs/demo.py [--steps=20] [--config.train.batch_size=256]

Columns: compile time (first call), median steady-state step time over --steps calls on one real batch,
images/s (global batch / median step time), backend and device count. The input pipeline is not timed.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from declip_jax import parallel, train  # noqa: E402
from declip_jax.data import pipeline  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps after compilation.")


def main(_):
  config = _CONFIG.value
  setup = train.Setup(config)
  batch = next(pipeline.numpy_batches(pipeline.train_dataset(config, setup.tokenizer)))
  batch = parallel.host_to_global(batch, setup.mesh)
  step = setup.jit_train_step(config)
  state = setup.init_state()
  start = time.perf_counter()
  state, metrics = step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  times = []
  for _ in range(_STEPS.value):
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  b = config.train.batch_size
  print("| config | batch | compile s | median step ms | images/s | backend x devices |")
  print("|---|---|---|---|---|---|")
  print(f"| {flags.FLAGS['config'].config_filename} | {b} | {compile_s:.1f} | {median * 1e3:.1f} | "
        f"{b / median:.0f} | {jax.default_backend()} x {jax.device_count()} |")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
