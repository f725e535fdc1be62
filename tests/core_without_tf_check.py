"""Run in a fresh process (see test_core_without_tf.py): with TensorFlow, tensorflow_text, tensorflow_datasets
and clu made unimportable, builds the demo config's train state and runs 2 train steps on synthetic batches,
then prints one `losses=` line per step and the names of any blocked module that got imported (none)."""

import importlib.abc
import json
import os
import sys

BLOCKED = ("tensorflow", "tensorflow_text", "tensorflow_datasets", "clu")


class _Refuse(importlib.abc.MetaPathFinder):
  """Raises on any import of a blocked package, installed or not."""

  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ImportError(f"{name} is blocked: the training core must not import it")
    return None


sys.meta_path.insert(0, _Refuse())
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from configs import demo  # noqa: E402
from declip_jax import parallel, synthetic  # noqa: E402,F401  (checkpointing: imports)
from declip_jax.training import checkpointing, train_setup


def main():
  config = demo.get_config()
  setup = train_setup.Setup(config)
  state, step = setup.init_state(), setup.jit_train_step(config)
  for _, batch in zip(range(2), synthetic.batches(config, setup.token_ids)):
    state, metrics = step(state, parallel.host_to_global(batch, setup.mesh))
    print("losses=" + json.dumps({k: float(v) for k, v in metrics.items() if k.startswith("loss")}), flush=True)
  print(f"step={int(jax.device_get(state.step))}")
  print("imported=" + json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)))


if __name__ == "__main__":
  main()
