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

import dataclasses
import json
import math
import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from declip_jax.config import files as config_files
from declip_jax.plan import rules, written

_CONFIG = config_flags.DEFINE_config_file("config", None, "The experiment's config file (its recipe is carried over).",
                                          lock_config=True)
_TARGET = flags.DEFINE_string("target", None, "gpu:<name>:<gpus>, gpu:<name>:<hosts>x<gpus>, tpu:<chip>:<topology> "
                              "or cpu:<devices>.")
_EXAMPLES = flags.DEFINE_integer("examples", None, "Image-text pairs in the training data.")
_EPOCHS = flags.DEFINE_float("epochs", None, "Passes over the training data.")
_BATCH = flags.DEFINE_integer("batch_size", 0, "The global batch; 0 keeps the config's.")
_LR_RULE = flags.DEFINE_enum("lr_rule", "sqrt", list(rules.LR_RULES), "How the learning rate follows a changed "
                             "global batch.")
_MAX_PER_DEVICE = flags.DEFINE_integer("max_per_device_batch", 0, "Examples a device may take at once (larger "
                                       "per-device batches run as micro-batches); 0: the AOT check decides.")
_CHECK = flags.DEFINE_bool("check", True, "Compile the planned step for the target (the AOT ladder).")
_CHECK_EVALS = flags.DEFINE_bool("check_evals", True, "Switch off the evaluations whose data is not there (reads "
                                 "the start of each; needs TensorFlow).")
_OUT = flags.DEFINE_string("out", None, "The plan's config file to write.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Also write the plan and its check to this JSON file.")


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


def _given_overrides(config, path: str) -> dict:
  """The `--config.*` values given on this command line: where `config` differs from the file's own config."""
  original = config_files.flatten(config_files.load_config(path))
  return {k: v for k, v in config_files.flatten(config).items() if original.get(k) != v}


def _base_path(path: str) -> str:
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


def main(argv):
  del argv
  try:
    return _main()
  except (rules.PlanError, FileNotFoundError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1


def _main() -> int:
  from declip_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  path = flags.FLAGS["config"].config_filename
  config = _CONFIG.value
  given = _given_overrides(config, path)
  target = _TARGET.value
  devices, label = target_devices(target) if _CHECK.value else (None, None)
  request = rules.Request(devices=len(devices) if devices else device_count(target), examples=_EXAMPLES.value, epochs=_EPOCHS.value,
                          batch_size=_BATCH.value, lr_rule=_LR_RULE.value,
                          max_per_device_batch=_MAX_PER_DEVICE.value)
  missing = {}
  if _CHECK_EVALS.value:
    try:
      from declip_jax.evaluation import evaluations  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      print(f"evaluation data not checked (no TensorFlow here: {e}); pass --check_evals=false to say so")
    else:
      missing = evaluations.missing_data(config)
  choices = rules.plan(config, request, missing)
  planned = config_files.set_keys(config.copy_and_resolve_references(), rules.overrides(choices))
  try:
    config_lib.validate_training(planned, rules.batch_shards(planned, request.devices))
  except config_lib.ConfigError as e:
    raise rules.PlanError(f"the plan is not a valid config: {e}") from e

  checked = None
  if _CHECK.value:
    print(f"checking the plan for {target} with the AOT ladder (compiles; minutes for large models):", flush=True)
    attempts, available, label = check(planned, target, devices, label)
    fitting = next((a for a in attempts if a.fits), None)
    if fitting and "train.batch_size" in fitting.overrides:  # Only a smaller batch fits: plan for that batch.
      request = dataclasses.replace(request, batch_size=fitting.overrides["train.batch_size"])
      choices = rules.plan(config, request, missing)
    if fitting:
      why = (f"the AOT check: '{fitting.label}' is the first rung of the ladder that fits {target} "
             f"({fitting.needed_gib:.1f} GiB per device planned" +
             (f" of {available:.1f}" if available else "") + ", compiled without the device: an estimate)")
      choices += [rules.Choice(k, v, rules.value_of(config, k), why)
                  for k, v in fitting.overrides.items() if k != "train.batch_size"]
    checked = {"target": target, "what": label, "available_gib": available,
               "attempts": [{**dataclasses.asdict(a), "overrides": {k: repr(v) for k, v in a.overrides.items()}}
                            for a in attempts],
               "fits": fitting is not None, "needed_gib": fitting.needed_gib if fitting else None,
               "rung": fitting.label if fitting else None}

  command = "python -m declip_jax.plan " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  base = _base_path(path)
  print(written.table(choices, given))
  print(written.verdict(checked))
  if _OUT.value:
    with open(_OUT.value, "w") as f:
      f.write(written.config_file(base, given, choices, command, target, request, checked))
    print(f"wrote {_OUT.value}: python -m declip_jax.main --config={_OUT.value} --workdir=...")
  if _JSON_OUT.value:
    with open(_JSON_OUT.value, "w") as f:
      json.dump({"command": command, "base": base, "request": dataclasses.asdict(request), "given": given,
                 "choices": [{**dataclasses.asdict(c), "value": _jsonable(c.value), "was": _jsonable(c.was)}
                             for c in choices], "check": checked}, f, indent=1, default=str)
  return 3 if checked and not checked["fits"] else 0


def _jsonable(value):
  return list(value) if isinstance(value, tuple) else value


def run():
  target = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--target=")), "")
  if target.startswith("gpu:"):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # XLA's GPU compiler registers only then (no GPU backend).
  if target.startswith("cpu:"):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={target.split(':', 1)[1]}")
  flags.mark_flags_as_required(["config", "target", "examples", "epochs"])
  app.run(main)
