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

Results outlive the machine: each finished run is written to `<records>/runs/<run>.json` (`study.records`: its
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
import os
import shlex
import subprocess
import sys
import time

from absl import app, flags
from etils import epath
from ml_collections import config_flags

from declip_jax.study import grid, report, run_records
from declip_jax.study.grid import Run
from declip_jax.study.run_records import Records
from declip_jax.training import workdir_lock

_STUDY = config_flags.DEFINE_config_file("study", None, "A study config (configs/studies/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs' workdirs go (scratch); default "
                               "workdirs/studies/<study file name>.")
_RECORDS = flags.DEFINE_string("records", None, "The study's committed folder: runs/<run>.json records and the "
                               "results; default docs/studies/<study file name>.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once (each a process).")
_ONLY = flags.DEFINE_string("only", "", "Run only the runs whose name contains this (e.g. '-n500-noisy-s0'); the "
                            "results still collect every recorded run.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs, whether each is recorded, and the commands of "
                             "those left; run nothing.")

def _progress(done: int, total: int, durations: list[float], parallel: int, started: float) -> str:
  eta = ""
  if durations:
    left = (total - done) * (sum(durations) / len(durations)) / parallel
    eta = f", ETA {time.strftime('%H:%M', time.localtime(time.time() + left))} (~{left / 60:.0f} min left)"
  return f"study: {done}/{total} runs done after {(time.time() - started) / 60:.1f} min{eta}"


def run_all(records: Records, workdir: epath.Path, parallel: int = 1, only: str = "") -> list[Run]:
  """Runs every run without a matching record (whose name contains `only`; logs in <workdir>/<run>/study.log)
  and records each that completes; returns the runs that failed."""
  study = records.study
  recorded, todo = run_records.plan(records, workdir)
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
      code = subprocess.call(grid.command(study, run, workdir), stdout=log, stderr=subprocess.STDOUT, env=env)
    return run, code, start, time.time()

  with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
    for future in concurrent.futures.as_completed([pool.submit(one, r) for r in todo]):
      run, code, start, end = future.result()
      seconds = end - start
      done += 1
      steps = run_records.num_steps(study, run)
      if code == 0 and grid.is_complete(workdir / run.name, steps):
        durations.append(seconds)
        log = (workdir / run.name / "study.log").read_text()
        records.record(run, workdir / run.name, seconds, grid.command(study, run, workdir),
                       run_records.phases(log, start, end, steps))
        report.write_results(records, workdir)  # A study cut short leaves results that match its records.
        print(f"study: {run.name} done in {seconds / 60:.1f} min, recorded in {records.path(run)}", flush=True)
      else:
        failed.append(run)
        print(f"study: {run.name} failed (exit {code}); see {workdir / run.name / 'study.log'}", flush=True)
      print(_progress(done, total, durations, parallel, started), flush=True)
  return failed


def main(_):
  study = _STUDY.value
  name = epath.Path(flags.FLAGS["study"].config_filename).stem
  workdir = epath.Path(_WORKDIR.value or f"workdirs/studies/{name}")
  records = Records(study, epath.Path(_RECORDS.value or f"docs/studies/{name}"), name)
  if _DRY_RUN.value:
    recorded, left = run_records.plan(records, workdir, record_workdirs=False)
    for run in grid.runs_of(study):
      if run.name in recorded:
        print(f"{run.name} recorded ({recorded[run.name]['study']} study, {recorded[run.name]['finished']})")
    for run in left:
      print(run.name, shlex.join(grid.command(study, run, workdir)))
    print(f"study: {len(recorded)} of {len(recorded) + len(left)} runs recorded, {len(left)} left to run")
    return
  workdir.mkdir(parents=True, exist_ok=True)
  try:
    with workdir_lock.WorkdirLock(str(workdir)):  # One study per workdir; each run also locks its own.
      failed = run_all(records, workdir, _PARALLEL.value, _ONLY.value)
      rows = report.write_results(records, workdir, record_workdirs=True)  # Also a run that exited non-zero.
  except workdir_lock.WorkdirInUseError as e:
    print(f"study: {e}", file=sys.stderr)
    sys.exit(workdir_lock.EXIT_CODE)
  print((records.folder / "results.md").read_text())
  print(f"study: {len(rows)} runs in {records.folder / 'results.csv'} (table: results.md, plot: results.png); "
        f"records in {records.folder / 'runs'}")
  if failed:
    sys.exit(f"study: {len(failed)} runs failed: {', '.join(r.name for r in failed)}")


def run():
  flags.mark_flags_as_required(["study"])
  app.run(main)
