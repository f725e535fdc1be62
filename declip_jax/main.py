"""Command line: `python -m declip_jax.main --config=configs/demo.py --workdir=DIR [--mode=train|eval]`.

Config values are overridden with `--config.train.num_steps=50` style flags; a misspelled key is an error.
"""

import sys

from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and eval results.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (resuming if possible) or evaluate.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def _check_writable(workdir: str) -> None:
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write_probe"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    _fail(f"--workdir {workdir} is not writable ({e.strerror or e}).")


def _print_results(results: dict) -> None:
  for name, r in results.items():
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(r["metrics"].items()))
    print(f"[{name}] step {r['step']} on {r['dataset']}: {metrics}")


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  from declip_jax import config as config_lib  # Imported here so that --help stays fast.
  from declip_jax import train

  config, workdir = _CONFIG.value, _WORKDIR.value
  _check_writable(workdir)
  try:
    if _MODE.value == "train":
      out = train.run(config, workdir)
      for name, v in out["loss_summary"].items():
        print(f"{name}: first 10% of steps {v['first_10pct_mean']:.4f} -> final {v['final']:.4f}")
      _print_results(out["eval"])
    else:
      _print_results(train.evaluate(config, workdir))
      print(f"wrote {epath.Path(workdir) / 'eval_results.json'}")
  except (config_lib.ConfigError, FileNotFoundError) as e:
    _fail(str(e))
  except ValueError as e:
    if "mesh.shape" in str(e):
      _fail(str(e))
    raise


class _QuietLibraries:
  """Drops INFO records from Orbax's per-save chatter; warnings and errors still show."""

  def filter(self, record) -> bool:
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def run():
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(main)


if __name__ == "__main__":
  run()
