"""A study's grid: its runs (method x training pairs x noise x seed, each with its config overrides), the command
that trains one, and whether a run's workdir holds its finished results."""

import dataclasses
import json
import sys
from typing import Any, Optional

import ml_collections
from etils import epath


@dataclasses.dataclass(frozen=True)
class Run:
  method: str
  num_train: int
  noise: str
  seed: int
  overrides: tuple[tuple[str, str], ...]  # (config key, value) in command-line form.
  values: tuple[tuple[str, Any], ...] = dataclasses.field(default=(), compare=False)  # The same, as Python values.

  @property
  def name(self) -> str:
    return f"{self.method}-n{self.num_train}-{self.noise}-s{self.seed}"


def _flag_value(value) -> str:
  return repr(tuple(value)) if isinstance(value, (list, tuple)) else str(value)


def pairs(mapping) -> list[tuple]:
  """The (name, value) pairs of a ConfigDict or of a sequence of such pairs."""
  return list(mapping.items()) if hasattr(mapping, "items") else [tuple(pair) for pair in mapping]


def runs_of(study: ml_collections.ConfigDict) -> list[Run]:
  """Every (method, num_train, noise, seed) of the study, with its config overrides."""
  out = []
  for method, method_overrides in pairs(study.methods):
    for num_train in study.num_train:
      for noise_name, noise in study.noise.items():
        for seed in study.seeds:
          overrides = {**dict(study.overrides), **dict(method_overrides),
                       "data.builtin.num_train": num_train, "train.seed": seed,
                       **{f"data.builtin.noise.{k}": v for k, v in noise.items()}}
          items = sorted(overrides.items())
          out.append(Run(method, int(num_train), noise_name, int(seed),
                         tuple((k, _flag_value(v)) for k, v in items), tuple(items)))
  return out


def command(study: ml_collections.ConfigDict, run: Run, workdir: epath.Path,
            python: str = sys.executable) -> list[str]:
  return [python, "-m", "declip_jax.main", f"--config={study.base}", f"--workdir={workdir / run.name}",
          *[f"--config.{k}={v}" for k, v in run.overrides]]


def results_of(run_dir: epath.Path) -> Optional[dict]:
  """The run's eval_results.json, or None when absent or unreadable."""
  try:
    return json.loads((run_dir / "eval_results.json").read_text())
  except (OSError, ValueError):
    return None


def is_complete(run_dir: epath.Path, steps: int) -> bool:
  results = results_of(run_dir)
  return bool(results) and all(r.get("step") == steps for r in results.values())


def seed_major(study: ml_collections.ConfigDict, runs: list[Run]) -> list[Run]:
  """`runs` with every cell's first seed before any cell's second (the grid's order otherwise), so that a study cut
  short still has every cell."""
  return sorted(runs, key=lambda run: list(study.seeds).index(run.seed))
