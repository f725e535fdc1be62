"""Ahead-of-time check: compile the train step for a config and a device count without the hardware, and print
the per-device memory XLA plans for it (arguments, outputs, temporaries).

  python -m declip_jax.aot --config=configs/declip_vit_b32.py --devices=32 [--target=cpu] [--config.* ...]
  python -m declip_jax.aot --config=configs/declip_vit_b32.py --target=tpu:v5e:16x16   (needs libtpu)

`cpu` compiles for that many fake CPU devices: the figures are indicative only (CPU layouts and fusions differ
from TPU/GPU). `tpu:<chip>:<topology>` compiles for a TPU topology through `jax.experimental.topologies` when
libtpu is installed. The data source and tokenizer do not change the step (only the batch shapes do), so the
check runs without the data: it uses the built-in source and word tokenizer in place of the config's.
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", 8, "Fake CPU devices to compile for (target cpu).")
_TARGET = flags.DEFINE_string("target", "cpu", "'cpu' or 'tpu:<chip>:<topology>', e.g. tpu:v5e:16x16.")
flags.mark_flags_as_required(["config"])

_GIB = 1 << 30


def compile_train_step(config, devices):
  """The train step compiled for a mesh over `devices` (real, fake CPU, or topology devices)."""
  import jax  # pylint: disable=g-import-not-at-top
  from declip_jax import parallel, state as state_lib, train  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  config.data.source, config.data.tokenizer, config.data.vocab_path = "builtin", "word", ""
  setup = train.Setup(config, devices, compile_only=True)
  batch_sharding = parallel.batch_sharding(setup.mesh)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
           for k, v in state_lib.sample_batch_spec(config).items()}
  return setup.jit_train_step(config).lower(setup.abstract_state, batch).compile()


def memory_report(compiled) -> dict[str, float]:
  """Per-device GiB from the compiled executable's memory analysis."""
  m = compiled.memory_analysis()
  report = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
            "aliased (donated state)": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes,
            "generated code": m.generated_code_size_in_bytes}
  report = {k: v / _GIB for k, v in report.items()}
  report["peak estimate (arguments + outputs - aliased + temporaries)"] = (
      report["arguments"] + report["outputs"] - report["aliased (donated state)"] + report["temporaries"])
  return report


def _devices(target: str, count: int):
  import jax  # pylint: disable=g-import-not-at-top
  if target == "cpu":
    devices = jax.devices("cpu")
    if len(devices) < count:
      raise SystemExit(f"error: only {len(devices)} CPU devices (XLA_FLAGS is set too late?)")
    return devices[:count], "fake CPU devices: indicative only (CPU layouts and fusions differ from TPU/GPU)"
  _, chip, topology = target.split(":")
  try:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    desc = topologies.get_topology_desc(topology_name=f"{chip}:{topology}", platform="tpu")
  except Exception as e:  # No libtpu, or an unknown topology.  # pylint: disable=broad-except
    raise SystemExit(f"error: cannot describe TPU topology {chip}:{topology} ({type(e).__name__}: {e}); "
                     "install libtpu (pip install 'jax[tpu]') or use --target=cpu.") from e
  return list(desc.devices), f"TPU {chip} {topology} ({len(desc.devices)} chips), compiled by libtpu"


def main(argv):
  del argv
  config = _CONFIG.value
  devices, label = _devices(_TARGET.value, _DEVICES.value)
  compiled = compile_train_step(config, devices)
  b = config.train.batch_size
  print(f"train step of {flags.FLAGS['config'].config_filename}, global batch {b} on {len(devices)} devices "
        f"({b // len(devices)} per device), mesh.shape {tuple(config.mesh.shape)}; {label}")
  print("| per device | GiB |\n|---|---|")
  for name, gib in memory_report(compiled).items():
    print(f"| {name} | {gib:.2f} |")


if __name__ == "__main__":
  if "--target=cpu" in sys.argv or not any(a.startswith("--target") for a in sys.argv):
    count = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--devices=")), "8")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={count}")
  app.run(main)
