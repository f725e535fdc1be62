"""`python -m declip_jax.plan`: the command line of declip_jax/plan/cli.py (its docstring says what it does); the
flags live here so that importing the plan's helpers defines none."""

import dataclasses
import json
import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from declip_jax.config import files as config_files
from declip_jax.plan import cli, rules, written

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
  given = cli.given_overrides(config, path)
  target = _TARGET.value
  devices, label = cli.target_devices(target) if _CHECK.value else (None, None)
  request = rules.Request(devices=len(devices) if devices else cli.device_count(target), examples=_EXAMPLES.value,
                          epochs=_EPOCHS.value,
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
    attempts, available, label = cli.check(planned, target, devices, label)
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
  base = cli.base_path(path)
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


if __name__ == "__main__":
  run()
