"""A study run's record: the file that keeps a finished run's results in the repository, so that a study spread
over machines and sessions resumes from what earlier ones committed (docs/design.md §16).

A record is `<study folder>/runs/<run name>.json`: the run's axes, the config it trained with (every key,
resolved: the base config with the study's overrides), every evaluation result, the training scalars at the end
of the run, the wall time, the host line, the commit, the date and the command. The study runner treats a run
whose record matches the run's current config as complete; a record made with another config (the recipe or
the method changed since) is reported by key and the run is made again.
"""

import dataclasses
import datetime
import json
import re
import shlex
import subprocess
import time
from typing import Any, Optional

import ml_collections
from etils import epath

from declip_jax import atomic_files
from declip_jax.config import files as config_files
from declip_jax.study import grid
from declip_jax.study.grid import Run

FORMAT = 1
# Keys that decide when and how often things happen, not what is trained or measured: a record made with other
# values of these still describes the run.
_SCHEDULING_KEYS = ("checkpoint.", "distributed.", "data.prefetch_batches", "eval.every_steps")


# A run's config is its base file's with the study's overrides (declip_jax/config/files.py).
load_config = config_files.load_config
resolved_config = config_files.with_overrides
flatten = config_files.flatten


def _is_scheduling(key: str) -> bool:
  return key.startswith(_SCHEDULING_KEYS) or (key.startswith("evals.") and key.endswith(".every_steps"))


def config_differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
  """What makes a record's config another run than `current` (both `flatten`ed): keys whose values differ and
  keys the current config no longer has, as "key: recorded -> current" lines. Scheduling keys (checkpoint and
  evaluation periods) do not count. A key the record lacks is an option added to the code since, whose default
  keeps the earlier behaviour (the project's rule for new options), so it does not count either."""
  out = []
  for key in sorted(recorded):
    if _is_scheduling(key):
      continue
    if key not in current:
      out.append(f"{key}: {recorded[key]!r} -> (no longer a config key)")
    elif recorded[key] != current[key]:
      out.append(f"{key}: {recorded[key]!r} -> {current[key]!r}")
  return out


def read(path: epath.Path) -> Optional[dict]:
  """A record, or None when the file is absent or not a record of this format."""
  try:
    record = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def write(path: epath.Path, record: dict) -> None:
  """Writes `record` as JSON (short lists on one line), atomically."""
  path.parent.mkdir(parents=True, exist_ok=True)
  text = json.dumps(record, indent=1, sort_keys=True)
  text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)  # Lists inline.
  atomic_files.write_text(path, text + "\n")


def commit_of(repo: str = ".") -> str:
  """The checked-out commit, with " + uncommitted changes" when the tracked files differ from it."""
  try:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           capture_output=True, text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown (not a git checkout)"
  return head + (" + uncommitted changes" if dirty else "")


def make(*, study: str, run, base: str, config: dict[str, Any], evaluations: dict, training: dict[str, float],
         wall_seconds: Optional[float], host: str, commit: str, command: list[str]) -> dict:
  """A record of a finished run (`run`: a `study.Run`)."""
  return {"format": FORMAT, "study": study, "run": run.name, "method": run.method, "num_train": run.num_train,
          "noise": run.noise, "seed": run.seed, "steps": config["train.num_steps"], "base": base,
          "overrides": dict(run.overrides), "config": config, "evaluations": evaluations, "training": training,
          "wall_seconds": wall_seconds, "host": host, "commit": commit,
          "finished": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
          "command": shlex.join(command)}


@dataclasses.dataclass
class Records:
  """Where a study's records are (`folder`/runs/<run>.json, its own), the other studies' folders whose records it
  may reuse (their parent's other subfolders), and the config each run trains with."""

  study: ml_collections.ConfigDict
  folder: epath.Path
  name: str

  def __post_init__(self):
    self._configs: dict[str, dict] = {}

  def path(self, run: Run) -> epath.Path:
    return self.folder / "runs" / f"{run.name}.json"

  def config(self, run: Run) -> dict[str, Any]:
    """The run's resolved config, `flatten`ed."""
    if run.name not in self._configs:
      self._configs[run.name] = flatten(
          resolved_config(self.study.base, dict(run.values)))
    return self._configs[run.name]

  def find(self, run: Run) -> tuple[Optional[dict], list[str]]:
    """(the run's matching record: its own, else another study's of the same name; None if none matches), and
    the differences of its own record when that one was made with another config (empty otherwise)."""
    own = read(self.path(run))
    if own is not None:
      differences = config_differences(own["config"], self.config(run))
      if not differences:
        return own, []
    others = sorted(p for p in self.folder.parent.glob(f"*/runs/{run.name}.json") if p != self.path(run))
    for path in others:
      record = read(path)
      if record is not None and not config_differences(record["config"], self.config(run)):
        return record, []
    return None, differences if own is not None else []

  def record(self, run: Run, run_dir: epath.Path, wall_seconds: Optional[float], cmd: list[str],
             timing: Optional[dict] = None) -> dict:
    """Writes the record of a complete run from its workdir (and `timing`, see `phases`); returns it."""
    record = make(
        study=self.name, run=run, base=self.study.base, config=self.config(run), evaluations=grid.results_of(run_dir),
        training=final_training_scalars(run_dir), wall_seconds=wall_seconds, host=_host_line(),
        commit=commit_of(), command=["python", *cmd[1:]])
    if timing:
      record["timing"] = timing
    write(self.path(run), record)
    return record


_ABSL_LINE = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d(?:\.\d+)?) .*?\] (.*)$")


def phases(log_text: str, started: float, ended: float, steps: int) -> Optional[dict]:
  """Where a run's wall time went, from its log (absl's timestamped lines, this machine's local time):
  {"startup_s": process start to the first step (imports, data, model, compiles), "training_s": the steps (and
  any evaluation during them), "final_s": the last step's evaluations, checkpoint and exit}; None when the log
  does not show them."""
  year = time.localtime(started).tm_year
  marks = {}
  for line in log_text.splitlines():
    match = _ABSL_LINE.match(line)
    if not match:
      continue
    month, day, hour, minute, second, message = match.groups()
    when = time.mktime((year, int(month), int(day), int(hour), int(minute), 0, 0, 0, -1)) + float(second)
    if when < started - 1:  # An earlier attempt of the same run (the log is appended to).
      continue
    if message.startswith("Training from step"):
      marks.setdefault("training", when)
    if message.startswith(f"[{steps}] train/"):
      marks["trained"] = when
  if set(marks) != {"training", "trained"}:
    return None
  return {"startup_s": round(marks["training"] - started, 1),
          "training_s": round(marks["trained"] - marks["training"], 1),
          "final_s": round(ended - marks["trained"], 1)}


def _host_line() -> str:
  from declip_jax import host_info  # pylint: disable=g-import-not-at-top  (imports JAX)
  return host_info.describe()


def final_training_scalars(run_dir: epath.Path, fraction: float = 0.1) -> dict[str, float]:
  """`train/<metric>` -> its mean over the logged steps in the last `fraction` of the run (loss terms,
  `nn_similarity`, the collapse gauges ...); empty when the run wrote no TensorBoard events."""
  from declip_jax import logs  # pylint: disable=g-import-not-at-top  (reading events imports TensorFlow)
  if not list(run_dir.glob("events.out.tfevents.*")):
    return {}
  out = {}
  for tag, points in logs.read_scalars(str(run_dir), ("train/",)).items():
    last = points[-1][0]
    tail = [v for step, v in points if step > (1 - fraction) * last] or [points[-1][1]]
    out[tag] = sum(tail) / len(tail)
  return out


def num_steps(study: ml_collections.ConfigDict, run=None) -> int:
  """A run's train.num_steps: its method's override (a method may train longer, e.g. at equal compute), else the
  study's, else the base config's. Without `run`: the study's, else the base config's."""
  overrides = {**dict(study.overrides), **(dict(run.values) if run is not None else {})}
  if "train.num_steps" in overrides:
    return int(overrides["train.num_steps"])
  return int(load_config(study.base).train.num_steps)


def plan(records: Records, workdir: epath.Path, say=print,
         record_workdirs: bool = True) -> tuple[dict[str, dict], list[Run]]:
  """Which runs are done: ({run name: its record} for the recorded ones, [the runs left, in `seed_major`
  order]). A run complete in `workdir` but without a record gets one (wall time unknown) when
  `record_workdirs`; a record made with another config is reported by `say` with the keys that differ."""
  study, recorded, left = records.study, {}, []
  for run in grid.runs_of(study):
    record, differences = records.find(run)
    if record is None and record_workdirs and grid.is_complete(workdir / run.name, num_steps(study, run)):
      record = records.record(run, workdir / run.name, None, grid.command(study, run, workdir))
    elif differences:
      say(f"study: {run.name}: its record {records.path(run)} was made with another config ("
          + "; ".join(differences[:8]) + (f"; {len(differences) - 8} more" if len(differences) > 8 else "")
          + "): running it again.")
    if record is None:
      left.append(run)
    else:
      recorded[run.name] = record
  return recorded, grid.seed_major(study, left)
