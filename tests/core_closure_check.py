"""`python -m tests.core_closure_check DIR`: sets up the training core from DIR/config.json (a ConfigDict written
with to_json), runs one train step on a synthetic batch, saves a checkpoint in DIR, and prints what it loaded:
{"step", "checkpoints", "data_modules": the declip_jax.data modules in sys.modules, "tensorflow": whether
TensorFlow was imported}. tests/test_layers.py runs it."""

import json
import sys

import ml_collections

from declip_jax import parallel, synthetic
from declip_jax.training import checkpointing, train_setup


def main(workdir: str) -> None:
  with open(f"{workdir}/config.json") as f:
    config = ml_collections.ConfigDict(json.load(f))
  setup = train_setup.Setup(config)
  state, step = setup.init_state(), setup.jit_train_step(config)
  batch = parallel.host_to_global(synthetic.batch(config, setup.token_ids), setup.mesh)
  state, _ = step(state, batch)
  ckpt = checkpointing.Checkpointer(workdir, keep=1, async_save=False)
  ckpt.save(1, state, {"step": 1})
  ckpt.wait()
  steps = ckpt.all_steps()
  ckpt.close()
  print(json.dumps({"step": int(state.step), "checkpoints": steps,
                    "data_modules": sorted(m for m in sys.modules if m.startswith("declip_jax.data")),
                    "tensorflow": "tensorflow" in sys.modules}))


if __name__ == "__main__":
  main(sys.argv[1])
