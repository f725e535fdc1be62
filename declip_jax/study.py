"""A grid of training runs, each an ordinary `declip_jax.main` workdir, kept as committed records and collected
into one CSV, a table and a plot.

  python -m declip_jax.study --study=configs/studies/data_efficiency.py [--workdir=DIR] [--records=DIR] \
      [--parallel=1] [--dry_run]

A study config (`get_config()`) names the base experiment config (`base`), config overrides shared by every run
(`overrides`: ("key.path", value) pairs), and its axes: `methods` (name -> such pairs), `num_train` (data sizes),
`noise` (name -> data.builtin.noise fractions) and `seeds` (train.seed; the data seed stays); `plot` maps panel
titles to metric columns. `methods` and `plot` may be (name, value) pairs instead of a ConfigDict (which sorts its
keys), to keep their order in the table and the plot. Each combination is a run in
`<workdir>/<method>-n<num_train>-<noise>-s<seed>`, so resume, `--mode=eval` and TensorBoard work on each.

Results outlive the machine: each finished run is written to `<records>/runs/<run>.json` (`study_records`: its
evaluations, final training scalars, resolved config, wall time, host, commit), by default under
`docs/studies/<study file name>/`, to be committed. A run with a record whose config matches is complete, also
on a fresh clone with no workdirs; so is a run recorded under another study's folder with the same name and
config (studies share runs). A record made with another config (the recipe or the method changed since) is
reported with the keys that differ, and the run is made again. A run whose workdir is complete but has no
record gets one. The rest run one at a time or `--parallel` at once (processes), each cell's first seed before
any second; progress shows runs done / total and an ETA. Then `<records>/results.csv` holds every evaluation
metric of every recorded run and its final training scalars (loss terms, NN similarity, embedding spread),
`results.md` a Markdown table (mean +- standard deviation over seeds) and `results.png` plots zero-shot and
linear-probe top-1 against the number of training pairs (one data size: bars per method), mean and min-max
spread over seeds.
"""

import concurrent.futures
import csv
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
import time
from typing import Any, Optional

import ml_collections
from absl import app, flags
from etils import epath
from ml_collections import config_flags

from declip_jax import study_records

_STUDY = config_flags.DEFINE_config_file("study", None, "A study config (configs/studies/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs' workdirs go (scratch); default "
                               "workdirs/studies/<study file name>.")
_RECORDS = flags.DEFINE_string("records", None, "The study's committed folder: runs/<run>.json records and the "
                               "results; default docs/studies/<study file name>.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once (each a process).")
_ONLY = flags.DEFINE_string("only", "", "Run only the runs whose name contains this (e.g. '-n500-noisy-s0'); the results "
                            "still collect every recorded run.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs, whether each is recorded, and the commands of "
                             "those left; run nothing.")


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
          items = sorted(overrides.items())
          out.append(Run(method, int(num_train), noise_name, int(seed),
                         tuple((k, _flag_value(v)) for k, v in items), tuple(items)))
  return out


def command(study: ml_collections.ConfigDict, run: Run, workdir: epath.Path,
            python: str = sys.executable) -> list[str]:
  return [python, "-m", "declip_jax.main", f"--config={study.base}", f"--workdir={workdir / run.name}",
          *[f"--config.{k}={v}" for k, v in run.overrides]]


def num_steps(study: ml_collections.ConfigDict) -> int:
  """The runs' train.num_steps: the study's override, else the base config's."""
  overrides = dict(study.overrides)
  if "train.num_steps" in overrides:
    return int(overrides["train.num_steps"])
  return int(study_records.load_config(study.base).train.num_steps)


def results_of(run_dir: epath.Path) -> Optional[dict]:
  """The run's eval_results.json, or None when absent or unreadable."""
  try:
    return json.loads((run_dir / "eval_results.json").read_text())
  except (OSError, ValueError):
    return None


def is_complete(run_dir: epath.Path, steps: int) -> bool:
  results = results_of(run_dir)
  return bool(results) and all(r.get("step") == steps for r in results.values())


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
    """The run's resolved config, `study_records.flatten`ed."""
    if run.name not in self._configs:
      self._configs[run.name] = study_records.flatten(
          study_records.resolved_config(self.study.base, dict(run.values)))
    return self._configs[run.name]

  def find(self, run: Run) -> tuple[Optional[dict], list[str]]:
    """(the run's matching record: its own, else another study's of the same name; None if none matches), and
    the differences of its own record when that one was made with another config (empty otherwise)."""
    own = study_records.read(self.path(run))
    if own is not None:
      differences = study_records.config_differences(own["config"], self.config(run))
      if not differences:
        return own, []
    others = sorted(p for p in self.folder.parent.glob(f"*/runs/{run.name}.json") if p != self.path(run))
    for path in others:
      record = study_records.read(path)
      if record is not None and not study_records.config_differences(record["config"], self.config(run)):
        return record, []
    return None, differences if own is not None else []

  def record(self, run: Run, run_dir: epath.Path, wall_seconds: Optional[float], cmd: list[str],
             timing: Optional[dict] = None) -> dict:
    """Writes the record of a complete run from its workdir (and `timing`, see `phases`); returns it."""
    record = study_records.make(
        study=self.name, run=run, base=self.study.base, config=self.config(run), evaluations=results_of(run_dir),
        training=final_training_scalars(run_dir), wall_seconds=wall_seconds, host=_host_line(),
        commit=study_records.commit_of(), command=["python", *cmd[1:]])
    if timing:
      record["timing"] = timing
    study_records.write(self.path(run), record)
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
  return {"startup_s": round(marks["training"] - started, 1), "training_s": round(marks["trained"] - marks["training"], 1),
          "final_s": round(ended - marks["trained"], 1)}


def _host_line() -> str:
  from declip_jax import host_info  # pylint: disable=g-import-not-at-top  (imports JAX)
  return host_info.describe()


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


def plan(records: Records, workdir: epath.Path, say=print,
         record_workdirs: bool = True) -> tuple[dict[str, dict], list[Run]]:
  """Which runs are done: ({run name: its record} for the recorded ones, [the runs left, in `seed_major`
  order]). A run complete in `workdir` but without a record gets one (wall time unknown) when
  `record_workdirs`; a record made with another config is reported by `say` with the keys that differ."""
  study, steps = records.study, num_steps(records.study)
  recorded, left = {}, []
  for run in runs_of(study):
    record, differences = records.find(run)
    if record is None and record_workdirs and is_complete(workdir / run.name, steps):
      record = records.record(run, workdir / run.name, None, command(study, run, workdir))
    elif differences:
      say(f"study: {run.name}: its record {records.path(run)} was made with another config ("
          + "; ".join(differences[:8]) + (f"; {len(differences) - 8} more" if len(differences) > 8 else "")
          + "): running it again.")
    if record is None:
      left.append(run)
    else:
      recorded[run.name] = record
  return recorded, seed_major(study, left)


def run_all(records: Records, workdir: epath.Path, parallel: int = 1, only: str = "") -> list[Run]:
  """Runs every run without a matching record (whose name contains `only`; logs in <workdir>/<run>/study.log)
  and records each that completes; returns the runs that failed."""
  study, steps = records.study, num_steps(records.study)
  recorded, todo = plan(records, workdir)
  todo = [run for run in todo if only in run.name]
  total = len(recorded) + len(todo)
  done, failed, durations, started = len(recorded), [], [], time.time()
  print(_progress(done, total, durations, parallel, started), flush=True)

  # The runs of a method differ only in data and seed: one JAX compilation cache lets them share compiled programs.
  env = {"TF_CPP_MIN_LOG_LEVEL": "2", "JAX_COMPILATION_CACHE_DIR": str(workdir / ".jax_cache"), **os.environ}

  def one(run: Run) -> tuple[Run, int, float, float]:
    (workdir / run.name).mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(workdir / run.name / "study.log", "a") as log:
      code = subprocess.call(command(study, run, workdir), stdout=log, stderr=subprocess.STDOUT, env=env)
    return run, code, start, time.time()

  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    for future in concurrent.futures.as_completed([pool.submit(one, r) for r in todo]):
      run, code, start, end = future.result()
      seconds = end - start
      done += 1
      if code == 0 and is_complete(workdir / run.name, steps):
        durations.append(seconds)
        log = (workdir / run.name / "study.log").read_text()
        records.record(run, workdir / run.name, seconds, command(study, run, workdir), phases(log, start, end, steps))
        write_results(records, workdir)  # A study cut short leaves results that match its records.
        print(f"study: {run.name} done in {seconds / 60:.1f} min, recorded in {records.path(run)}", flush=True)
      else:
        failed.append(run)
        print(f"study: {run.name} failed (exit {code}); see {workdir / run.name / 'study.log'}", flush=True)
      print(_progress(done, total, durations, parallel, started), flush=True)
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


def collect(study: ml_collections.ConfigDict, recorded: dict[str, dict], path: epath.Path) -> list[dict]:
  """One row per recorded run, in the grid's order: its axes, `<evaluation>/<metric>` for every evaluation
  metric, then the training scalars at the end of the run (`final_training_scalars`); written to `path` (CSV)."""
  rows = []
  for run in runs_of(study):
    if run.name not in recorded:
      continue
    record = recorded[run.name]
    row = {"method": run.method, "num_train": run.num_train, "noise": run.noise, "seed": run.seed}
    for name, result in sorted(record["evaluations"].items()):
      row.update({f"{name}/{k}": v for k, v in sorted(result["metrics"].items())})
    row.update(sorted(record["training"].items()))
    rows.append(row)
  columns = list(dict.fromkeys(k for row in rows for k in row))
  with open(path, "w", newline="") as f:
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


def write_results(records: Records, workdir: epath.Path, record_workdirs: bool = False) -> list[dict]:
  """Rebuilds the study's results.csv, results.md and results.png from its records (first recording complete
  workdirs without one when `record_workdirs`, as `plan`); returns the CSV's rows."""
  recorded, _ = plan(records, workdir, say=lambda _: None, record_workdirs=record_workdirs)
  rows = collect(records.study, recorded, records.folder / "results.csv")
  panels = dict(_items(records.study.plot))
  if rows:
    plot(rows, panels, records.folder / "results.png")
  (records.folder / "results.md").write_text(table(rows, panels))
  return rows


def main(_):
  study = _STUDY.value
  name = epath.Path(flags.FLAGS["study"].config_filename).stem
  workdir = epath.Path(_WORKDIR.value or f"workdirs/studies/{name}")
  records = Records(study, epath.Path(_RECORDS.value or f"docs/studies/{name}"), name)
  if _DRY_RUN.value:
    recorded, left = plan(records, workdir, record_workdirs=False)
    for run in runs_of(study):
      if run.name in recorded:
        print(f"{run.name} recorded ({recorded[run.name]['study']} study, {recorded[run.name]['finished']})")
    for run in left:
      print(run.name, shlex.join(command(study, run, workdir)))
    print(f"study: {len(recorded)} of {len(recorded) + len(left)} runs recorded, {len(left)} left to run")
    return
  workdir.mkdir(parents=True, exist_ok=True)
  failed = run_all(records, workdir, _PARALLEL.value, _ONLY.value)
  rows = write_results(records, workdir, record_workdirs=True)  # Also a run that finished but exited non-zero.
  print((records.folder / "results.md").read_text())
  print(f"study: {len(rows)} runs in {records.folder / 'results.csv'} (table: results.md, plot: results.png); "
        f"records in {records.folder / 'runs'}")
  if failed:
    sys.exit(f"study: {len(failed)} runs failed: {', '.join(r.name for r in failed)}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["study"])
  app.run(main)
