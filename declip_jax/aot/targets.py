"""The devices of an AOT target, without the hardware: fake CPU devices, a TPU topology from libtpu
(`jax.experimental.topologies`), or GPUs of a kind `gpu_target` describes (XLA's GPU compiler, deviceless)."""

from declip_jax.aot import gpu_target


def devices(target: str, count: int):
  """(devices, a line saying what they are) for `cpu`, `tpu:<chip>:<topology>` or `gpu:<name>:<gpus>`; exits
  with one error line when the target cannot be had."""
  import jax  # pylint: disable=g-import-not-at-top
  if target == "cpu":
    devices = jax.devices("cpu")
    if len(devices) < count:
      raise SystemExit(f"error: only {len(devices)} CPU devices (XLA_FLAGS is set too late?)")
    return devices[:count], "fake CPU devices: indicative only (CPU layouts and fusions differ from TPU/GPU)"
  if target.startswith("gpu:"):
    try:
      name, hosts, gpus = gpu_target.parse(target)
      devices = gpu_target.devices(name, hosts, gpus)
    except gpu_target.TargetError as e:
      raise SystemExit(f"error: {e}") from e
    return devices, (f"{hosts} x {gpus} {gpu_target.load(name).title}, compiled by XLA's GPU compiler (jax "
                     f"{jax.__version__}) without a GPU: no kernel autotuning")
  if target.startswith("tpu:"):
    return tpu_devices(target), f"TPU {target.split(':', 1)[1]}, compiled by libtpu"
  raise SystemExit(f"error: --target {target!r}: expected cpu, tpu:<chip>:<topology> or gpu:<name>:<gpus>.")


def tpu_devices(target: str) -> list:
  """The devices of `tpu:<chip>:<topology>` (e.g. tpu:v5e:4x8) from libtpu, without the hardware."""
  try:
    _, chip, topology = target.split(":")
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    desc = topologies.get_topology_desc(topology_name=f"{chip}:{topology}", platform="tpu")
  except Exception as e:  # No libtpu, or an unknown topology.  # pylint: disable=broad-except
    raise SystemExit(f"error: cannot describe TPU topology {target!r} ({type(e).__name__}: {str(e)[:200]}); "
                     "install libtpu (pip install 'jax[tpu]') or use --target=cpu.") from e
  return list(desc.devices)
