"""Command line: `python -m declip_jax.main --config=configs/demo.py --workdir=DIR [--mode=train|eval]`.

Config values are overridden with `--config.train.num_steps=50` style flags; a misspelled key is an error.
"""

import contextlib
import logging as std_logging
import os
import re
import sys
import tempfile
import traceback as tb_lib

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


def _abort(message: str) -> None:
  print(f"error: {message}", file=sys.stderr)
  sys.exit(1)


def _check_writable(workdir: str) -> None:
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{os.getpid()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    _fail(f"--workdir {workdir} is not writable ({e.strerror or e}).")


def _print_results(results: dict) -> None:
  for name, r in results.items():
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(r["metrics"].items()))
    print(f"[{name}] step {r['step']} on {r['dataset']}: {metrics}")


def stop_line(out: dict) -> str:
  """The last line of a stopped run (`train.run`'s dict): the step reached and the newest checkpoint on disk,
  which is what the same command resumes from; "saved" only when that is the step reached."""
  step, newest, where = out["step"], out["checkpoint_step"], out["checkpoint_dir"]
  head = f"Stopped by {out['stopped_by']} at step {step}"
  if out["trained_steps"] == 0:
    if newest is None:
      return f"{head}, before training: nothing was trained and there is no checkpoint; rerun the same command."
    return f"{head}, before training further: the newest checkpoint is step {newest} in {where}; rerun the same " \
           "command to resume."
  if newest == step:
    took = "" if out["stop_seconds"] is None else f", {out['stop_seconds']:.1f} s after the request"
    return f"{head}: checkpoint {step} saved in {where}{took}; rerun the same command to resume."
  if newest is None:
    return f"{head}, but no checkpoint was written: rerunning the same command starts again from step 0."
  return (f"{head}, but step {step}'s checkpoint was not written: the newest is step {newest} in {where}; rerun the "
          "same command to resume from there.")


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {argv[1:]}")
  # Imported here, so that --help stays fast.
  from declip_jax import config as config_lib, distributed, train  # pylint: disable=g-import-not-at-top
  from declip_jax.training import checkpointing, recovery, workdir_lock  # pylint: disable=g-import-not-at-top
  from declip_jax.data.errors import DataSourceError  # pylint: disable=g-import-not-at-top

  config, workdir = _CONFIG.value, _WORKDIR.value
  try:
    config_lib.validate_distributed(config)
  except config_lib.ConfigError as e:
    _fail(str(e))
  several_processes = distributed.maybe_initialize(config)  # Before anything starts a JAX backend.
  _check_writable(workdir)
  try:
    if _MODE.value == "train":
      with _workdir_lock(config, workdir, several_processes):
        out = train.run(config, workdir)
      if out["stopped_by"]:
        print(stop_line(out))
        return
      for step, reason in out["rollbacks"]:
        print(f"rolled back: {reason}")
      for name, v in out["loss_summary"].items():
        print(f"{name}: first 10% of steps {v['first_10pct_mean']:.4f} -> final {v['final']:.4f}")
      _print_results(out["eval"])
    else:
      _print_results(train.evaluate(config, workdir))
      print(f"wrote {epath.Path(workdir) / 'eval_results.json'}")
  except (config_lib.ConfigError, FileNotFoundError, checkpointing.UnreadableCheckpointsError,
          DataSourceError) as e:
    _fail(str(e))
  except recovery.TrainingAbortedError as e:
    _abort(f"training aborted: {e}")
  except workdir_lock.WorkdirInUseError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(workdir_lock.EXIT_CODE)
  except checkpointing.CheckpointWriteError as e:
    details = f" Orbax's own report: {_QuietLibraries.errors_file}." if _QuietLibraries.errors_logged else ""
    print(f"error: {e}{details}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    # Not sys.exit: at interpreter shutdown the failed save's orphaned writer threads and coroutines would print
    # pages of tracebacks ("Event loop is closed") after this line. The lock is already released.
    os._exit(checkpointing.EXIT_CODE)  # pylint: disable=protected-access
  except Exception as e:  # pylint: disable=broad-except
    reason = distributed.peer_failure(e) if several_processes else None
    if reason is None:
      raise
    _peer_failed(workdir, reason)


def _peer_failed(workdir: str, reason: str) -> None:
  """Another process of the run died: one line, then exit at once. Not sys.exit: JAX's exit handler would wait
  at the distributed shutdown barrier for the dead process, and its coordination client then aborts the
  process with pages of C++ and Python stacks."""
  import jax  # pylint: disable=g-import-not-at-top
  from declip_jax import distributed  # pylint: disable=g-import-not-at-top
  steps = sorted(int(p.name) for p in (epath.Path(workdir) / "checkpoints").glob("*") if p.name.isdigit())
  newest = f"the newest checkpoint is step {steps[-1]}" if steps else "there is no checkpoint yet"
  print(f"error: another process of this run stopped (process {jax.process_index()} of {jax.process_count()} saw: "
        f"{reason}); {newest}; rerun every process's command to resume.", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(distributed.EXIT_CODE)  # pylint: disable=protected-access


def _workdir_lock(config, workdir: str, several_processes: bool):
  """The workdir's lock, held by the one process of a run that writes it (process 0), unless turned off."""
  import jax  # pylint: disable=g-import-not-at-top
  from declip_jax.training import workdir_lock  # pylint: disable=g-import-not-at-top
  if not config.checkpoint.lock or (several_processes and jax.process_index() > 0):
    return contextlib.nullcontext()
  return workdir_lock.WorkdirLock(workdir, config.checkpoint.lock_heartbeat_seconds,
                                  config.checkpoint.lock_stale_seconds, warn=logging.warning)


class _QuietLibraries:
  """Drops INFO records from Orbax's per-save chatter; its warnings show. Its errors go to a file instead: a
  failed background save logs every writer thread's traceback (pages of them), and the run's one error line
  names the file."""

  errors_file = os.path.join(tempfile.gettempdir(), f"declip_jax-{os.getpid()}-orbax-errors.log")
  errors_logged = False

  def filter(self, record) -> bool:
    if "/orbax/" not in record.pathname:
      return True
    if record.levelno >= 40:
      try:
        with open(self.errors_file, "a") as f:
          f.write(std_logging.Formatter("%(asctime)s %(pathname)s:%(lineno)d %(message)s").format(record) + "\n")
        _QuietLibraries.errors_logged = True
        return False
      except OSError:  # Nowhere to put it: show it.
        return True
    return record.levelno >= 30


def _divert_orphaned_writer_errors() -> None:
  """After a failed background save, TensorStore's completion callbacks find their asyncio loop closed and print
  "RuntimeError: Event loop is closed" as unraisable errors (one traceback per pending write). Those go to
  _QuietLibraries' file with Orbax's own report; every other error is printed as before."""

  def diverted(value, lines: list[str]) -> bool:
    if not (isinstance(value, RuntimeError) and "Event loop is closed" in str(value)):
      return False
    try:
      with open(_QuietLibraries.errors_file, "a") as f:
        f.write("".join(lines))
    except OSError:
      return False
    _QuietLibraries.errors_logged = True
    return True

  unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook

  def unraisablehook(args):
    lines = tb_lib.format_exception(args.exc_type, args.exc_value, args.exc_traceback)
    if not diverted(args.exc_value, lines):
      unraisable_hook(args)

  def excepthook(kind, value, traceback):
    if not diverted(value, tb_lib.format_exception(kind, value, traceback)):
      except_hook(kind, value, traceback)

  sys.unraisablehook, sys.excepthook = unraisablehook, excepthook


def _one_line(error: Exception) -> str:
  return " ".join(str(error).replace("\\n", " ").split()).replace("\\'", "'")


def _parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a bad flag, config file or config override ends the program with one line saying which."""
  try:
    rest = flags.FLAGS(argv)
    flags.FLAGS["config"].value.get("train")  # A config file that failed to load raises here.
    return rest
  except flags.Error as e:
    _fail(_one_line(e))
  except OSError as e:
    reason = _one_line(e).rsplit("]:", 1)[-1].split(":", 1)[0].strip() or _one_line(e)
    _fail(f"cannot load --config={flags.FLAGS['config'].config_filename}: {reason}.")
  except AttributeError as e:
    message = _one_line(e)
    key = re.search(r"'(\w+)'", message)
    suggestion = re.search(r'Did you mean "(\w+)"', message)
    _fail("invalid --config override: the config has no key " + (f"'{key.group(1)}'" if key else message) +
          (f" (did you mean '{suggestion.group(1)}'?)" if suggestion else "") + ".")
  except (KeyError, TypeError, ValueError) as e:
    _fail(f"invalid --config override: {_one_line(e)}")


def run():
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  _divert_orphaned_writer_errors()
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
