"""`python -m declip_jax.plan`: carry a config's recipe to your devices, data and epochs, check that it fits, and
write the result as a config file.

  python -m declip_jax.plan --config=configs/declip_vit_b32.py --target=gpu:a100-40:8 \\
      --examples=3000000 --epochs=32 --out=my_plan.py [--config.data.* ...]
  python -m declip_jax.main --config=my_plan.py --workdir=...

Targets are the AOT command's: `gpu:<name>:<gpus>` or `gpu:<name>:<hosts>x<gpus per host>` (XLA's GPU compiler
without the GPU: `pip install -r requirements-gpu-aot.txt`), `tpu:<chip>:<topology>` (libtpu: `pip install
"jax[tpu]"`), or `cpu:<devices>`. The rules (`declip_jax/plan/rules.py`, sources in docs/design.md §22) set the global
batch, accumulation, learning rate, steps, warmup, the evaluation period, NNS groups and queue size and the
BatchNorm groups; each enabled evaluation whose data is not there (e.g. ImageNet not prepared) is switched off. Then
the planned step is compiled for the target's devices with the AOT ladder (`declip_jax/aot/ladder.py`): when it
does not fit, the cheapest rung that fits (bf16, rematerialisation, more micro-batches, FSDP) joins the plan. A
compile without the device is an estimate of its memory, and the plan says so.

`--config.*` values given here are written into the plan (data settings, for instance), so the plan file is the
whole experiment. Exit status: 0 written and fits (or not checked), 3 written but nothing on the ladder fits, 1 on
errors (one line).
"""

import math
import os

from declip_jax.config import files as config_files
from declip_jax.plan import rules

# JAX devices per TPU chip as libtpu's topology description counts them without the hardware (v4 2x2x4: 32 devices
# of 15.25 GiB, docs/accelerators.md); v5e and v5p chips are one device each.
_TPU_DEVICES_PER_CHIP = {"v2": 2, "v3": 2, "v4": 2}


def device_count(target: str) -> int:
  """The devices of a target, from its name alone (no JAX): GPUs = hosts x GPUs per host, TPU = the topology's
  chips x devices per chip, cpu:<n> = n. With --check the plan counts the devices the compiler is given."""
  kind, _, rest = target.partition(":")
  if kind == "gpu":
    from declip_jax.aot import gpu_target  # pylint: disable=g-import-not-at-top
    try:
      _, hosts, gpus = gpu_target.parse(target)
    except gpu_target.TargetError as e:
      raise rules.PlanError(str(e)) from e
    return hosts * gpus
  try:
    if kind == "tpu":
      chip, topology = rest.split(":")
      return math.prod(int(size) for size in topology.split("x")) * _TPU_DEVICES_PER_CHIP.get(chip, 1)
    if kind == "cpu":
      return int(rest)
  except ValueError:
    pass
  raise rules.PlanError(f"--target {target!r}: expected gpu:<name>:<gpus>, gpu:<name>:<hosts>x<gpus>, "
                        "tpu:<chip>:<topology> (e.g. tpu:v5e:2x4) or cpu:<devices>.")


def given_overrides(config, path: str) -> dict:
  """The `--config.*` values given on this command line: where `config` differs from the file's own config."""
  original = config_files.flatten(config_files.load_config(path))
  return {k: v for k, v in config_files.flatten(config).items() if original.get(k) != v}


def base_path(path: str) -> str:
  """The config file as the plan names it: relative to the repository when it is in it (works from any directory
  of a checkout on another machine), else as given."""
  absolute = os.path.abspath(path)
  root = config_files.REPOSITORY_ROOT + os.sep
  return os.path.relpath(absolute, config_files.REPOSITORY_ROOT) if absolute.startswith(root) else path


def target_devices(target: str):
  """(the target's devices, without the hardware, and what they are): `declip_jax.aot.targets.devices`. A TPU's
  JAX devices may outnumber its chips (two TensorCores per chip before v4), so the plan counts these."""
  from declip_jax.aot import targets  # pylint: disable=g-import-not-at-top
  kind = target.split(":")[0]
  return targets.devices("cpu" if kind == "cpu" else target, device_count(target))


def check(config, target: str, devices, label: str, report=print):
  """Compiles `config`'s step for the target's `devices` with the AOT ladder; returns (attempts, available GiB
  per device, what the figures are)."""
  from declip_jax.aot import gpu_target, ladder  # pylint: disable=g-import-not-at-top
  kind = target.split(":")[0]
  if kind == "gpu":
    available = gpu_target.load(gpu_target.parse(target)[0]).usable_gib()
  elif kind == "tpu":
    available = ladder.available_hbm_gib(devices[0])
  else:
    available = None
  steps = ladder.LADDER if available else ladder.LADDER[:1]
  attempts = ladder.fit(config, devices, available, steps,
                        report=lambda a: report(f"  {a.label}: {'fits' if a.fits else 'does not fit'}" +
                                                (f", {a.needed_gib:.1f} GiB per device" if a.needed_gib else "") +
                                                (f" ({a.error[:120]})" if a.error else ""), flush=True))
  return attempts, available, label
