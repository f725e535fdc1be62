"""The study runner: the grid's runs and commands, skip when complete, CSV and plot; end to end (slow)."""

import csv
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

import ml_collections
import pytest
from etils import epath

from declip_jax.study import grid, report, run_records
from tests.conftest import REPO


def tiny_study(num_train=(96, 200), seeds=(0, 1), methods=None) -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.base = "tests/tiny_config.py"
  s.overrides = (("train.num_steps", 2), ("checkpoint.every_steps", 2), ("eval.every_steps", 2))
  s.methods = methods or ml_collections.ConfigDict(
      {"clip": (("loss.weights.iss", 0.0), ("data.augment.crop_scale", (0.5, 1.0))), "declip": ()})
  s.num_train = num_train
  s.noise = ml_collections.ConfigDict({"noisy": {"partial": 0.2, "wrong": 0.1, "unrelated": 0.2}})
  s.seeds = seeds
  s.plot = ml_collections.ConfigDict({"zero-shot shape": "zero_shot_shape/zero_shot_top1"})
  return s


def test_grid_names_commands_and_completion(tmp_path):
  s = tiny_study()
  runs = grid.runs_of(s)
  assert [r.name for r in runs][:3] == ["clip-n96-noisy-s0", "clip-n96-noisy-s1", "clip-n200-noisy-s0"]
  assert len(runs) == 8 and run_records.num_steps(s) == 2
  assert all(run_records.num_steps(s, run) == 2 for run in runs)
  longer = grid.runs_of(tiny_study(methods=ml_collections.ConfigDict({"clip": (("train.num_steps", 3),)})))
  assert run_records.num_steps(s, longer[0]) == 3  # A method may train longer (equal compute).
  assert [r.name for r in grid.seed_major(s, runs)][:5] == [
      "clip-n96-noisy-s0", "clip-n200-noisy-s0", "declip-n96-noisy-s0", "declip-n200-noisy-s0", "clip-n96-noisy-s1"]
  cmd = grid.command(s, runs[0], epath.Path(tmp_path))
  assert "--config.data.augment.crop_scale=(0.5, 1.0)" in cmd and "--config.data.builtin.num_train=96" in cmd
  assert "--config.data.builtin.noise.unrelated=0.2" in cmd and "--config.train.seed=0" in cmd
  run_dir = epath.Path(tmp_path) / runs[0].name
  run_dir.mkdir()
  assert not grid.is_complete(run_dir, 2)
  (run_dir / "eval_results.json").write_text(json.dumps({"a": {"step": 1, "metrics": {"m": 0.5}}}))
  assert not grid.is_complete(run_dir, 2)
  (run_dir / "eval_results.json").write_text(json.dumps({"a": {"step": 2, "metrics": {"m": 0.5}}}))
  assert grid.is_complete(run_dir, 2)


def fake_finished_runs(s, workdir: epath.Path, count=None, value=lambda i: 0.1 * i):
  """Workdirs of the study's first `count` runs as a finished run leaves them (eval_results.json at the last step)."""
  for i, run in enumerate(grid.runs_of(s)[:count]):
    (workdir / run.name).mkdir(parents=True)
    (workdir / run.name / "eval_results.json").write_text(json.dumps(
        {"zero_shot_shape": {"step": 2, "metrics": {"zero_shot_top1": value(i)}}}))


def test_collect_and_plot(tmp_path):
  s = tiny_study()
  workdir = epath.Path(tmp_path)
  fake_finished_runs(s, workdir / "w", 6)
  recorded, left = run_records.plan(run_records.Records(s, workdir / "records", "tiny"), workdir / "w")
  assert len(recorded) == 6 and len(left) == 2
  rows = report.collect(s, recorded, workdir / "results.csv")
  assert len(rows) == 6 and rows[0]["zero_shot_shape/zero_shot_top1"] == 0.0
  with open(workdir / "results.csv") as f:
    assert len(list(csv.DictReader(f))) == 6
  summary = report.summarize(rows, "zero_shot_shape/zero_shot_top1")
  assert summary[("clip", "noisy", 96)] == pytest.approx((0.05, 0.0, 0.1, 2))
  markdown = report.table(rows, {"shape": "zero_shot_shape/zero_shot_top1"}).splitlines()
  assert markdown[0] == "| pairs | method | noise | shape | seeds |" and len(markdown) == 2 + 3
  assert markdown[2] == "| 96 | clip | noisy | 5.0 ± 7.1 | 2 |"  # Seeds 0.0 and 0.1: sample std 0.0707.
  assert markdown[3] == "| 96 | declip | noisy | 45.0 ± 7.1 | 2 |"
  assert markdown[4] == "| 200 | clip | noisy | 25.0 ± 7.1 | 2 |"
  assert report.table(rows[:1], {"shape": "zero_shot_shape/zero_shot_top1"}).splitlines()[2] == (
      "| 96 | clip | noisy | 0.0 | 1 |")
  report.plot(rows, dict(s.plot), workdir / "results.png")
  assert (workdir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _two_run_study_file(tmp_path):
  study_file = tmp_path / "study.py"
  study_file.write_text(  # Self-contained: importing this test module would define the study's flags twice.
      "import ml_collections\n\n\ndef get_config():\n"
      "  s = ml_collections.ConfigDict()\n"
      "  s.base = 'tests/tiny_config.py'\n"
      "  s.overrides = (('train.num_steps', 2), ('checkpoint.every_steps', 2), ('eval.every_steps', 2))\n"
      "  s.methods = ml_collections.ConfigDict({'clip': (('loss.weights.iss', 0.0),), 'declip': ()})\n"
      "  s.num_train, s.seeds = (96,), (0,)\n"
      "  s.noise = ml_collections.ConfigDict({'noisy': {'partial': 0.2, 'wrong': 0.1, 'unrelated': 0.2}})\n"
      "  s.plot = ml_collections.ConfigDict({'zero-shot shape': 'zero_shot_shape/zero_shot_top1'})\n"
      "  return s\n")
  return study_file


def test_a_study_on_a_held_workdir_is_refused_in_one_line(tmp_path):
  (tmp_path / "w").mkdir()
  held = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(), "command": "the other study",
          "token": "t"}
  (tmp_path / "w" / "run.lock").write_text(json.dumps(held))
  out = subprocess.run([sys.executable, "-m", "declip_jax.study", f"--study={_two_run_study_file(tmp_path)}",
                        f"--workdir={tmp_path / 'w'}", f"--records={tmp_path / 'records'}"], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 75, out.stderr[-2000:]
  assert out.stderr.strip().splitlines() == [out.stderr.strip()] and f"in use by pid {os.getpid()}" in out.stderr
  assert "the other study" in out.stderr and not (tmp_path / "records").exists()


@pytest.mark.slow
def test_a_two_run_study_end_to_end(tmp_path):
  study_file = _two_run_study_file(tmp_path)
  records = tmp_path / "records"
  args = [sys.executable, "-m", "declip_jax.study", f"--study={study_file}", f"--workdir={tmp_path / 'w'}",
          f"--records={records}", "--parallel=2"]
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=1200)
  assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-2000:]
  assert "study: 2/2 runs done" in out.stdout
  with open(records / "results.csv") as f:
    rows = list(csv.DictReader(f))
  assert {r["method"] for r in rows} == {"clip", "declip"} and all(r["zero_shot_shape/zero_shot_top1"] for r in rows)
  assert all(float(r["train/loss"]) > 0 for r in rows)  # The final training scalars, from the events.
  assert (records / "results.png").stat().st_size > 1000
  assert (records / "results.md").read_text().startswith("| pairs | method | noise | zero-shot shape |")
  record = json.loads((records / "runs" / "clip-n96-noisy-s0.json").read_text())
  assert record["wall_seconds"] > 0 and record["training"]["train/loss"] > 0
  assert record["timing"]["startup_s"] > 0 and record["timing"]["training_s"] > 0

  # Interrupted on another machine: no workdirs, one run's record missing. Only that run is made again.
  shutil.rmtree(tmp_path / "w")
  (records / "runs" / "declip-n96-noisy-s0.json").unlink()
  again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  assert again.stdout.splitlines()[0].startswith("study: 1/2 runs done after")
  assert "declip-n96-noisy-s0 done" in again.stdout and not (tmp_path / "w" / "clip-n96-noisy-s0").exists()
  with open(records / "results.csv") as f:
    assert [r["zero_shot_shape/zero_shot_top1"] for r in csv.DictReader(f)] == [
        r["zero_shot_shape/zero_shot_top1"] for r in rows]  # The same run, the same results (CPU, same seed).


def test_a_study_at_one_size_is_plotted_as_bars(tmp_path):
  s = tiny_study(num_train=(96,))
  workdir = epath.Path(tmp_path)
  fake_finished_runs(s, workdir / "w")
  recorded, _ = run_records.plan(run_records.Records(s, workdir / "records", "tiny"), workdir / "w")
  rows = report.collect(s, recorded, workdir / "results.csv")
  report.plot(rows, dict(s.plot), workdir / "results.png")
  assert (workdir / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_methods_and_panels_given_as_pairs_keep_their_order():
  s = tiny_study(num_train=(96,), seeds=(0,), methods=(("declip", ()), ("clip", (("loss.weights.iss", 0.0),))))
  assert [r.name for r in grid.runs_of(s)] == ["declip-n96-noisy-s0", "clip-n96-noisy-s0"]
  rows = [{"method": "declip", "num_train": 96, "noise": "noisy", "seed": 0, "b": 0.5, "a": 0.25}]
  header = report.table(rows, dict(grid.pairs((("b", "b"), ("a", "a"))))).splitlines()[0]
  assert header == "| pairs | method | noise | b | a | seeds |"


def test_records_outlive_the_workdirs_and_a_changed_config_reruns(tmp_path):
  """A study whose workdirs are gone resumes from its records alone; a record made with another config is
  reported by key and its run is left to do; another study's record of the same run (name and config) counts."""
  s = tiny_study()
  root = epath.Path(tmp_path)
  records = run_records.Records(s, root / "docs" / "tiny", "tiny")
  fake_finished_runs(s, root / "w", 5)
  recorded, left = run_records.plan(records, root / "w")
  assert len(recorded) == 5
  assert [r.name for r in left] == ["declip-n200-noisy-s0", "declip-n96-noisy-s1", "declip-n200-noisy-s1"]
  record = run_records.read(records.path(grid.runs_of(s)[0]))
  assert record["run"] == "clip-n96-noisy-s0" and record["steps"] == 2 and record["seed"] == 0
  assert record["config"]["loss.weights.iss"] == 0.0 and record["config"]["data.builtin.num_train"] == 96
  assert record["config"]["data.augment.crop_scale"] == [0.5, 1.0] and record["wall_seconds"] is None
  assert record["evaluations"]["zero_shot_shape"]["metrics"] == {"zero_shot_top1": 0.0}
  command = shlex.split(record["command"])  # Pasteable into a shell: a tuple value stays one argument.
  assert record["commit"] and record["host"] and "--config.train.seed=0" in command
  assert "--config.data.augment.crop_scale=(0.5, 1.0)" in command

  (root / "w").rmtree()  # A fresh clone on another machine: the records alone.
  again, left_again = run_records.plan(records, root / "w")
  assert again.keys() == recorded.keys() and [r.name for r in left_again] == [r.name for r in left]
  rows = report.write_results(records, root / "w")  # What the runner rebuilds after each recorded run.
  assert [r["zero_shot_shape/zero_shot_top1"] for r in rows] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
  assert (root / "docs" / "tiny" / "results.md").read_text().count("| clip |") == 2
  assert (root / "docs" / "tiny" / "results.png").exists() and not (root / "w").exists()

  changed = tiny_study(methods=ml_collections.ConfigDict(
      {"clip": (("loss.weights.iss", 0.0), ("data.augment.crop_scale", (0.6, 1.0))), "declip": ()}))
  said = []
  recorded, left = run_records.plan(run_records.Records(changed, root / "docs" / "tiny", "tiny"), root / "w",
                                      say=said.append)
  assert {r.name for r in left} >= {"clip-n96-noisy-s0", "clip-n200-noisy-s1"} and len(recorded) == 1
  assert len(said) == 4 and "data.augment.crop_scale: [0.5, 1.0] -> [0.6, 1.0]" in said[0]

  other = run_records.Records(s, root / "docs" / "other_study", "other_study")  # Shares the runs of the same name.
  shared, _ = run_records.plan(other, root / "w")
  assert set(shared) == {r.name for r in grid.runs_of(s)[:5]}
  assert not (root / "docs" / "other_study" / "runs").exists()  # Reused, not copied.


def test_config_differences_ignore_scheduling_and_new_keys():
  recorded = {"a.b": 1, "checkpoint.every_steps": 750, "eval.every_steps": 750, "evals.x.every_steps": 3,
              "gone.key": 0}
  current = {"a.b": 2, "checkpoint.every_steps": 500, "eval.every_steps": 1500, "evals.x.every_steps": 9,
             "new.key": 1}
  assert run_records.config_differences(recorded, current) == [
      "a.b: 1 -> 2", "gone.key: 0 -> (no longer a config key)"]
  assert run_records.config_differences(current, {**current, "new.key": 5}) == ["new.key: 1 -> 5"]


def test_resolved_config_is_what_the_command_line_trains():
  overrides = {"data.augment.crop_scale": (0.6, 1.0), "optim.lr": 1, "train.num_steps": 7}
  config = run_records.resolved_config("tests/tiny_config.py", overrides)
  flat = run_records.flatten(config)
  assert flat["data.augment.crop_scale"] == [0.6, 1.0] and flat["optim.lr"] == 1.0 and flat["train.num_steps"] == 7
  with pytest.raises(KeyError, match="optim.nope"):
    run_records.resolved_config("tests/tiny_config.py", {"optim.nope": 1})


def test_a_runs_time_is_split_into_startup_training_and_the_final_evaluation():
  started = time.mktime((2026, 12, 2, 12, 30, 0, 0, 0, -1))
  log = "\n".join([
      "I1202 12:29:10.000000 1 train.py:209] Training from step 0 to 2.",  # An earlier attempt: before `started`.
      "I1202 12:30:20.500000 1 train.py:209] Training from step 0 to 2.",
      "I1202 12:30:31.000000 1 logging_writer.py:48] [2] train/loss=1.0",
      "I1202 12:30:35.000000 1 logging_writer.py:48] [2] eval/x/m=0.5"])
  assert run_records.phases(log, started, started + 40, steps=2) == {"startup_s": 20.5, "training_s": 10.5,
                                                                       "final_s": 9.0}
  assert run_records.phases("no timestamps", started, started + 40, steps=2) is None


STUDIES = sorted(p.stem for p in (REPO / "configs" / "studies").glob("*.py")
                 if p.stem != "__init__" and (REPO / "docs" / "studies" / p.stem / "results.md").exists())


@pytest.mark.parametrize("name", STUDIES)
def test_each_studys_table_is_its_records_rendered(name, tmp_path):
  study = run_records.load_config(f"configs/studies/{name}.py")
  records = run_records.Records(study, epath.Path(REPO, "docs", "studies", name), name)
  recorded = {}
  for run in grid.runs_of(study):
    record, _ = records.find(run)
    if record is not None:
      recorded[run.name] = record
  rows = report.collect(study, recorded, tmp_path / "results.csv")
  panels = dict(grid.pairs(study.plot))
  rewrite = (f"python -m declip_jax.study --study=configs/studies/{name}.py rewrites it (with every run recorded, it "
             "trains nothing)")
  assert report.table(rows, panels) == (records.folder / "results.md").read_text(), (
      f"docs/studies/{name}/results.md differs from its records: {rewrite}")
  if "summary" in study:
    assert report.summary_table(rows, dict(grid.pairs(study.summary.names)), list(study.summary.metrics)) == (
        records.folder / "summary.md").read_text(), f"docs/studies/{name}/summary.md differs from its records: {rewrite}"
  if "paired" in study:
    assert report.paired_table(study, recorded, list(study.paired), panels) == (
        records.folder / "paired.md").read_text(), f"docs/studies/{name}/paired.md differs from its records: {rewrite}"


# The study blocks each page has (a page that lost one fails here, not silently).
PAGE_BLOCKS = {"results.md": ["demo", "data_efficiency", "ablation", "nn_queue_size", "masking_paired"], "methods.md": [],
               "../README.md": ["methods_summary"]}
_BLOCK_FILES = {"": "results.md", "_paired": "paired.md", "_summary": "summary.md"}


@pytest.mark.parametrize("page", report.PAGES)
def test_pages_show_the_studies_tables_as_their_results(page):
  text = (REPO / "docs" / page).read_text()
  assert re.findall(r"<!-- study: (\w+) -->", text) == PAGE_BLOCKS[page]
  for name in PAGE_BLOCKS[page]:
    study, kind = re.fullmatch(r"(\w+?)(_paired|_summary|)", name).groups()
    table = (REPO / "docs" / "studies" / study / _BLOCK_FILES[kind]).read_text()
    assert report.render_into(text, name, table) == text, f"docs/{page}'s table of {name} is not its results.md"


# Records rebuilt from a study's CSV before the runner kept wall times (each says so in `provenance`): rerunning one
# with the runner replaces its record, and it leaves this list.
REBUILT_RECORDS = {f"data_efficiency/{method}-n{n}-noisy-s{seed}" for method in ("clip", "declip")
                   for n in (500, 2000, 20_000) for seed in (0, 1, 2)}


def test_every_record_has_its_command_host_commit_and_wall_time():
  lacking = set()
  for path in sorted((REPO / "docs" / "studies").glob("*/runs/*.json")):
    record = json.loads(path.read_text())
    assert record["command"].startswith("python -m declip_jax.main --config=") and record["host"] and record["commit"]
    if record.get("wall_seconds") is None or "provenance" in record:
      lacking.add(f"{path.parent.parent.name}/{path.stem}")
  assert lacking == REBUILT_RECORDS
