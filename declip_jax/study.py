"""A grid of training runs, each an ordinary `declip_jax.main` workdir, collected into one CSV and a plot.

  python -m declip_jax.study --study=configs/studies/data_efficiency.py --workdir=studies/data_efficiency \
      [--parallel=2] [--dry_run]

A study config (`get_config()`) names the base experiment config (`base`), config overrides shared by every run
(`overrides`: ("key.path", value) pairs), and its axes: `methods` (name -> such pairs), `num_train` (data sizes),
`noise` (name -> data.builtin.noise fractions) and `seeds` (train.seed; the data seed stays); `plot` maps panel
titles to metric columns. `methods` and `plot` may be (name, value) pairs instead of a ConfigDict (which sorts its
keys), to keep their order in the table and the plot. Each combination is a run in
`<workdir>/<method>-n<num_train>-<noise>-s<seed>`, so resume, `--mode=eval` and TensorBoard work on each. A
run whose eval_results.json holds every evaluation at the last step is complete and skipped; a killed run
resumes from its checkpoint. Runs go one at a time or `--parallel` at once (processes); progress shows runs
done / total and an ETA. Then `<workdir>/results.csv` holds every evaluation metric of every run and its final
training scalars (loss terms, NN similarity, embedding spread), and
`<workdir>/results.png` plots zero-shot and linear-probe top-1 against the number of training pairs, per method
and noise, mean and spread (min to max) over seeds; `<workdir>/results.md` is a Markdown table of the same
metrics, mean +- standard deviation over seeds.
"""

import concurrent.futures
import csv
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Optional

import ml_collections
from absl import app, flags
from etils import epath
from ml_collections import config_flags

_STUDY = config_flags.DEFINE_config_file("study", None, "A study config (configs/studies/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The study's directory: a workdir per run, results.csv, results.png.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once (each a process).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs and their commands; run nothing.")


@dataclasses.dataclass(frozen=True)
class Run:
  method: str
  num_train: int
  noise: str
  seed: int
  overrides: tuple[tuple[str, str], ...]  # (config key, value) in command-line form.

  @property
  def name(self) -> str:
    return f"{self.method}-n{self.num_train}-{self.noise}-s{self.seed}"


def _flag_value(value) -> str:
  return repr(tuple(value)) if isinstance(value, (list, tuple)) else str(value)


def _items(mapping) -> list[tuple]:
  """The (name, value) pairs of a ConfigDict or of a sequence of such pairs."""
  return list(mapping.items()) if hasattr(mapping, "items") else [tuple(pair) for pair in mapping]


def runs_of(study: ml_collections.ConfigDict) -> list[Run]:
  """Every (method, num_train, noise, seed) of the study, with its config overrides."""
  out = []
  for method, method_overrides in _items(study.methods):
    for num_train in study.num_train:
      for noise_name, noise in study.noise.items():
        for seed in study.seeds:
          overrides = {**dict(study.overrides), **dict(method_overrides),
                       "data.builtin.num_train": num_train, "train.seed": seed,
                       **{f"data.builtin.noise.{k}": v for k, v in noise.items()}}
          out.append(Run(method, int(num_train), noise_name, int(seed),
                         tuple((k, _flag_value(v)) for k, v in sorted(overrides.items()))))
  return out


def command(study: ml_collections.ConfigDict, run: Run, workdir: epath.Path) -> list[str]:
  return [sys.executable, "-m", "declip_jax.main", f"--config={study.base}", f"--workdir={workdir / run.name}",
          *[f"--config.{k}={v}" for k, v in run.overrides]]


def num_steps(study: ml_collections.ConfigDict) -> int:
  """The runs' train.num_steps: the study's override, else the base config's."""
  overrides = dict(study.overrides)
  if "train.num_steps" in overrides:
    return int(overrides["train.num_steps"])
  spec = importlib.util.spec_from_file_location("study_base", study.base)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return int(module.get_config().train.num_steps)


def results_of(run_dir: epath.Path) -> Optional[dict]:
  """The run's eval_results.json, or None when absent or unreadable."""
  try:
    return json.loads((run_dir / "eval_results.json").read_text())
  except (OSError, ValueError):
    return None


def is_complete(run_dir: epath.Path, steps: int) -> bool:
  results = results_of(run_dir)
  return bool(results) and all(r.get("step") == steps for r in results.values())


def _progress(done: int, total: int, durations: list[float], parallel: int, started: float) -> str:
  eta = ""
  if durations:
    left = (total - done) * (sum(durations) / len(durations)) / parallel
    eta = f", ETA {time.strftime('%H:%M', time.localtime(time.time() + left))} (~{left / 60:.0f} min left)"
  return f"study: {done}/{total} runs done after {(time.time() - started) / 60:.1f} min{eta}"


def seed_major(study: ml_collections.ConfigDict, runs: list[Run]) -> list[Run]:
  """`runs` with every cell's first seed before any cell's second (the grid's order otherwise), so that a study cut
  short still has every cell."""
  return sorted(runs, key=lambda run: list(study.seeds).index(run.seed))


def run_all(study: ml_collections.ConfigDict, workdir: epath.Path, parallel: int = 1) -> list[Run]:
  """Runs every incomplete run (logs in <run>/study.log) in `seed_major` order; returns the runs that failed."""
  runs, steps = runs_of(study), num_steps(study)
  todo = seed_major(study, [r for r in runs if not is_complete(workdir / r.name, steps)])
  done, failed, durations, started = len(runs) - len(todo), [], [], time.time()
  print(_progress(done, len(runs), durations, parallel, started), flush=True)

  def one(run: Run) -> tuple[Run, int, float]:
    (workdir / run.name).mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(workdir / run.name / "study.log", "a") as log:
      code = subprocess.call(command(study, run, workdir), stdout=log, stderr=subprocess.STDOUT,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return run, code, time.time() - start

  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    for future in concurrent.futures.as_completed([pool.submit(one, r) for r in todo]):
      run, code, seconds = future.result()
      done += 1
      if code == 0 and is_complete(workdir / run.name, steps):
        durations.append(seconds)
      else:
        failed.append(run)
        print(f"study: {run.name} failed (exit {code}); see {workdir / run.name / 'study.log'}", flush=True)
      print(_progress(done, len(runs), durations, parallel, started), flush=True)
  return failed


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


def collect(study: ml_collections.ConfigDict, workdir: epath.Path) -> list[dict]:
  """One row per complete run: its axes, `<evaluation>/<metric>` for every evaluation metric, then the training
  scalars at the end of the run (`final_training_scalars`); written to <workdir>/results.csv."""
  steps, rows = num_steps(study), []
  for run in runs_of(study):
    if not is_complete(workdir / run.name, steps):
      continue
    row = {"method": run.method, "num_train": run.num_train, "noise": run.noise, "seed": run.seed}
    for name, result in sorted(results_of(workdir / run.name).items()):
      row.update({f"{name}/{k}": v for k, v in sorted(result["metrics"].items())})
    row.update(sorted(final_training_scalars(workdir / run.name).items()))
    rows.append(row)
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(workdir / "results.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  return rows


def summarize(rows: list[dict], metric: str) -> dict[tuple[str, str, int], tuple[float, float, float, int]]:
  """(method, noise, num_train) -> (mean, min, max, number of seeds) of a metric column."""
  return {k: (sum(v) / len(v), min(v), max(v), len(v)) for k, v in sorted(_per_cell(rows, metric).items())}


def _per_cell(rows: list[dict], metric: str) -> dict[tuple[str, str, int], list[float]]:
  """(method, noise, num_train) -> the metric column's values over seeds."""
  groups: dict[tuple[str, str, int], list[float]] = {}
  for row in rows:
    if metric in row:
      groups.setdefault((row["method"], row["noise"], row["num_train"]), []).append(float(row[metric]))
  return groups


def table(rows: list[dict], metrics: dict[str, str]) -> str:
  """A Markdown table: one row per (training pairs, method, noise) in the study's order, one column per
  (title -> metric column) with mean +- sample standard deviation over seeds (the value alone for one seed), in
  percent, and the seed count."""
  order = list(dict.fromkeys((row["num_train"], row["method"], row["noise"]) for row in rows))
  order.sort(key=lambda key: key[0])  # Stable: the methods keep the study's order within a size.
  lines = ["| pairs | method | noise | " + " | ".join(metrics) + " | seeds |",
           "|---:|---|---|" + "---:|" * len(metrics) + "---:|"]
  per_cell = {metric: _per_cell(rows, metric) for metric in metrics.values()}
  for num_train, method, noise in order:
    cells, seeds = [], 0
    for metric in metrics.values():
      values = per_cell[metric].get((method, noise, num_train), [])
      seeds = max(seeds, len(values))
      if not values:
        cells.append("")
        continue
      mean = sum(values) / len(values)
      if len(values) == 1:  # No spread to show.
        cells.append(f"{100 * mean:.1f}")
        continue
      std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
      cells.append(f"{100 * mean:.1f} ± {100 * std:.1f}")
    lines.append(f"| {num_train:,} | {method} | {noise} | " + " | ".join(cells) + f" | {seeds} |")
  return "\n".join(lines) + "\n"


def _bar_plot(plt, rows: list[dict], metrics: dict[str, str], path: epath.Path) -> None:
  """A study at one data size (an ablation): one bar per (method, noise) in the study's order, mean over seeds,
  min-max whiskers, one panel per metric."""
  cells = list(dict.fromkeys((row["method"], row["noise"]) for row in rows))
  noises = {noise for _, noise in cells}
  labels = [method if len(noises) == 1 else f"{method} ({noise})" for method, noise in cells]
  figure, axes = plt.subplots(1, len(metrics), figsize=(max(5.5, 0.55 * len(cells)) * len(metrics) / 1.3, 4.5),
                              squeeze=False)
  for axis, (title, metric) in zip(axes[0], metrics.items()):
    summary = summarize(rows, metric)
    stats = [next(v for k, v in summary.items() if k[:2] == cell) for cell in cells]
    means = [s[0] for s in stats]
    axis.bar(range(len(cells)), means, yerr=[[m - s[1] for m, s in zip(means, stats)],
                                             [s[2] - m for m, s in zip(means, stats)]], capsize=3, color="tab:blue")
    axis.set_xticks(range(len(cells)), labels, rotation=60, ha="right", fontsize=8)
    axis.set_ylabel(metric)
    axis.set_title(f"{title} ({rows[0]['num_train']:,} pairs)")
    axis.grid(alpha=0.3, axis="y")
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def plot(rows: list[dict], metrics: dict[str, str], path: epath.Path) -> None:
  """One panel per (title -> metric column): mean over seeds against training pairs (log x), min-max band; a
  study at one data size gets bars per method instead."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  if len({row["num_train"] for row in rows}) == 1:
    _bar_plot(plt, rows, metrics, path)
    return
  figure, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
  for axis, (title, metric) in zip(axes[0], metrics.items()):
    summary = summarize(rows, metric)
    for method, noise in sorted({(m, n) for m, n, _ in summary}):
      points = sorted((k[2], v) for k, v in summary.items() if k[:2] == (method, noise))
      sizes = [p[0] for p in points]
      axis.plot(sizes, [p[1][0] for p in points], marker="o", label=f"{method} ({noise})")
      axis.fill_between(sizes, [p[1][1] for p in points], [p[1][2] for p in points], alpha=0.2)
    axis.set_xscale("log")
    axis.set_xlabel("training pairs")
    axis.set_ylabel(metric)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  plt.close(figure)


def main(_):
  study, workdir = _STUDY.value, epath.Path(_WORKDIR.value)
  if _DRY_RUN.value:
    for run in runs_of(study):
      print(run.name, " ".join(command(study, run, workdir)))
    return
  workdir.mkdir(parents=True, exist_ok=True)
  failed = run_all(study, workdir, _PARALLEL.value)
  rows = collect(study, workdir)
  panels = dict(_items(study.plot))
  plot(rows, panels, workdir / "results.png")
  (workdir / "results.md").write_text(table(rows, panels))
  print(table(rows, panels))
  print(f"study: {len(rows)} runs in {workdir / 'results.csv'} (table: results.md), plot {workdir / 'results.png'}")
  if failed:
    sys.exit(f"study: {len(failed)} runs failed: {', '.join(r.name for r in failed)}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["study", "workdir"])
  app.run(main)
