"""A study run's record: the file that keeps a finished run's results in the repository, so that a study spread
over machines and sessions resumes from what earlier ones committed (DESIGN §16).

A record is `<study folder>/runs/<run name>.json`: the run's axes, the config it trained with (every key,
resolved: the base config with the study's overrides), every evaluation result, the training scalars at the end
of the run, the wall time, the host line, the commit, the date and the command. The study runner treats a run
whose record matches the run's current config as complete; a record made with another config (the recipe or
the method changed since) is reported by key and the run is made again.
"""

import datetime
import importlib.util
import json
import re
import shlex
import subprocess
from typing import Any, Optional

import ml_collections
from etils import epath

FORMAT = 1
# Keys that decide when and how often things happen, not what is trained or measured: a record made with other
# values of these still describes the run.
_SCHEDULING_KEYS = ("checkpoint.", "distributed.", "data.prefetch_batches", "eval.every_steps")


def load_config(path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file (a path relative to the repository root, as studies name their base)."""
  spec = importlib.util.spec_from_file_location("study_base_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def resolved_config(base: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config a run trains with: the base config file's, with each ("key.path" -> value) override set (as
  `--config.key.path=value` would)."""
  config = load_config(base)
  for key, value in overrides.items():
    *parents, name = key.split(".")
    node = config
    for parent in parents:
      node = node[parent]
    if name not in node:
      raise KeyError(f"study override {key!r}: the config {base} has no such key.")
    node[name] = type(node[name])(value) if isinstance(node[name], (tuple, list)) else value
  return config


def flatten(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{"section.key": value} for every leaf of a config, in JSON's types (tuples as lists)."""
  out = {}

  def walk(node: dict, prefix: str):
    for key, value in node.items():
      if isinstance(value, dict):
        walk(value, f"{prefix}{key}.")
      else:
        out[f"{prefix}{key}"] = json.loads(json.dumps(value))
  walk(config.to_dict(), "")
  return out


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
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f".{path.name}.tmp"
  text = json.dumps(record, indent=1, sort_keys=True)
  text = re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)  # Lists inline.
  tmp.write_text(text + "\n")
  tmp.replace(path)


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
