"""The benchmark command (declip_jax/benchmark/): CLIP_benchmark's metrics against plain NumPy definitions, the
tars the converter writes read back through the clip_benchmark data source, a demo-sized model benchmarked end
to end with a JSON line per task and the tables, bad input as one line per task while the rest runs, and 1 vs 8
devices giving the same numbers."""

import json
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from declip_jax.benchmark import metrics, suite, tasks
from tests.conftest import REPO, virtual_devices_flags

# The tiny model and its tars (tests/conftest.benchmark_case): one worker makes them once for this group.
pytestmark = pytest.mark.xdist_group("benchmark")


def test_classification_metrics_match_their_definitions():
  rng = np.random.default_rng(0)
  scores, labels = rng.normal(size=(200, 7)), rng.integers(0, 7, 200)
  scores[0, :] = 0.0  # A row of ties: the lower class index wins.
  labels[0] = 0
  out = metrics.classification(scores, labels)
  order = [sorted(range(7), key=lambda c: (-row[c], c)) for row in scores]
  assert out["acc1"] == pytest.approx(np.mean([o[0] == y for o, y in zip(order, labels)]))
  assert out["acc5"] == pytest.approx(np.mean([y in o[:5] for o, y in zip(order, labels)]))
  predicted = np.array([o[0] for o in order])
  per_class = [np.mean(predicted[labels == c] == c) for c in np.unique(labels)]
  assert out["mean_per_class_recall"] == pytest.approx(np.mean(per_class))
  assert np.isnan(metrics.classification(scores[:, :3], np.minimum(labels, 2))["acc5"])  # Fewer than 5 classes.


def test_retrieval_metrics_count_any_caption_of_an_image():
  rng = np.random.default_rng(1)
  unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  image = unit(rng.normal(size=(30, 8)))
  owner = np.repeat(np.arange(30), rng.integers(1, 4, 30))  # 1 to 3 captions per image.
  text = unit(image[owner] + rng.normal(scale=0.8, size=(len(owner), 8)))
  out = metrics.retrieval(image, text, owner, ks=(1, 5))
  scores = text @ image.T
  for k in (1, 5):  # Plain loops over CLIP_benchmark's definitions.
    image_hits = [owner[t] in sorted(range(30), key=lambda i: -scores[t, i])[:k] for t in range(len(owner))]
    text_hits = [any(owner[t] == i for t in sorted(range(len(owner)), key=lambda t: -scores[t, i])[:k])
                 for i in range(30)]
    assert out[f"image_retrieval_recall@{k}"] == pytest.approx(np.mean(image_hits))
    assert out[f"text_retrieval_recall@{k}"] == pytest.approx(np.mean(text_hits))
  assert 0 < out["image_retrieval_recall@1"] < out["image_retrieval_recall@5"] < 1
  assert out["mean_recall@1"] == pytest.approx((out["image_retrieval_recall@1"] + out["text_retrieval_recall@1"]) / 2)


def test_task_lists_and_aggregates():
  assert len(tasks.DATACOMP) == 40 and sum(t.in_average for t in tasks.DATACOMP) == 38
  assert tasks.parse("imagenet1k,datacomp")[:2] == ["imagenet1k", "vtab/caltech101"]
  results = [suite.Result(t.key, t.name, {"main_metric": 0.5}) for t in tasks.DATACOMP if t.in_average]
  results[0].metrics["main_metric"] = 1.0  # Caltech-101, in VTAB.
  agg = suite.aggregates(results)
  assert agg["Average"] == {"value": pytest.approx((37 * 0.5 + 1) / 38), "tasks": 38, "of": 38}
  assert agg["VTAB"]["of"] == 13 and agg["VTAB"]["value"] == pytest.approx((12 * 0.5 + 1) / 13)
  assert agg["ImageNet"]["value"] == 0.5 and agg["Retrieval"]["of"] == 3
  probe = tasks.task_of("linear_probe_5shot/vtab/pets")
  assert (probe.kind, probe.data_key, probe.fewshot_k, probe.main_metric, probe.tfds) == (
      "linear_probe", "vtab/pets", 5, "lp_mean_per_class_recall", "")
  assert probe.name == "Oxford-IIIT Pet, linear probe, 5-shot" and not probe.in_average and not probe.groups
  full = tasks.task_of("linear_probe/cifar10")
  assert (full.fewshot_k, full.main_metric, full.tfds) == (-1, "lp_acc1", "tfds:cifar10/test")
  assert suite.task_data(full, "") == "tfds:cifar10/test" and suite.task_data(full, "", "train") == "tfds:cifar10/train"
  assert tasks.task_of("linear_probe/retrieval/flickr30k") is None  # A probe needs labels.
  agg = suite.aggregates(results + [suite.Result(probe.key, probe.name, {"main_metric": 0.0})])
  assert agg["Average"]["tasks"] == 38 and agg["VTAB"]["value"] == pytest.approx((12 * 0.5 + 1) / 13)


def _run(*args, env=None, timeout=600):
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


@pytest.fixture(scope="module")
def model_and_tars(benchmark_case):
  """The tiny model of tests/clip_benchmark_case.py (2 steps, CLIP BPE) and its tars: the converter's of the
  built-in test split (shape; builtin_captions), and a retrieval task with unique captions (captions)."""
  run, tars, _ = benchmark_case
  return run, tars


def test_the_converter_writes_clip_benchmarks_layout(model_and_tars):
  _, tars = model_and_tars
  shape = tars / "shape"
  assert (shape / "test" / "nshards.txt").read_text().strip() == "3"  # 40 test images, 16 per tar.
  assert (shape / "dataset_type.txt").read_text().strip() == "classification"
  assert len((shape / "classnames.txt").read_text().split()) == 6
  assert "{c}" in (shape / "zeroshot_classification_templates.txt").read_text()
  with tarfile.open(shape / "test" / "0.tar") as tar:
    names = tar.getnames()
  assert names[:2] == ["00000000.png", "00000000.cls"] and len(names) == 32
  assert (tars / "builtin_captions" / "dataset_type.txt").read_text().strip() == "retrieval"
  with tarfile.open(tars / "builtin_captions" / "test" / "0.tar") as tar:
    assert tar.getnames()[:2] == ["00000000.png", "00000000.txt"]


def _benchmark(run, tars, tmp_path, *extra, devices=None):
  env = {"XLA_FLAGS": virtual_devices_flags(devices)} if devices else None
  out = _run("declip_jax.benchmark", f"--workdir={run}", f"--data_root={tars}", f"--output={tmp_path / 'r.jsonl'}",
             "--batch_size=16", *extra, env=env)
  lines = [json.loads(l) for l in (tmp_path / "r.jsonl").read_text().splitlines()] if (
      tmp_path / "r.jsonl").exists() else []
  return out, lines


def test_a_model_is_benchmarked_with_a_line_per_task_and_the_tables(model_and_tars, tmp_path):
  run, tars = model_and_tars
  out, lines = _benchmark(run, tars, tmp_path, "--tasks=shape,captions,linear_probe_2shot/shape")
  assert out.returncode == 0, out.stderr[-3000:]
  shape, captions, probe = lines
  assert shape["key"] == "shape" and shape["num_examples"] == 40 and shape["data"].startswith("clip_benchmark:")
  assert set(shape["metrics"]) == {"acc1", "acc5", "mean_per_class_recall", "main_metric"}
  assert shape["metrics"]["main_metric"] == shape["metrics"]["acc1"]
  assert {"image_retrieval_recall@1", "text_retrieval_recall@5", "main_metric"} <= set(captions["metrics"])
  assert "[1/3] shape: acc1" in out.stdout and "[2/3] captions: mean_recall@1" in out.stdout
  assert "[3/3] linear_probe_2shot/shape: lp_acc1" in out.stdout
  assert probe["dataset"] == "shape, linear probe, 2-shot" and probe["num_examples"] == 40
  assert probe["metrics"]["fewshot_k"] == 2 and probe["metrics"]["weight_decay"] == 0.0
  assert probe["metrics"]["main_metric"] == probe["metrics"]["lp_acc1"]
  assert set(probe["metrics"]) >= {"lp_acc1", "lp_acc5", "lp_mean_per_class_recall", "epochs", "seed", "normalized"}
  table = (tmp_path / "r.md").read_text()
  assert "| shape |" in table and "| Average |" in table
  probe_row = next(row for row in table.splitlines() if row.startswith("| linear_probe_2shot/shape |"))
  assert f"| {100 * probe['metrics']['lp_acc1']:.2f} |" in probe_row  # In the acc1 column.
  assert (tmp_path / "r.csv").read_text().startswith("task,dataset,main_metric")


def test_broken_tasks_are_one_line_each_and_the_rest_runs(model_and_tars, tmp_path):
  run, tars = model_and_tars
  broken = tmp_path / "tars"
  import shutil  # pylint: disable=g-import-not-at-top
  for name in ("no_names", "missing_shard", "corrupt", "no_train"):
    shutil.copytree(tars / "shape", broken / name)
  shutil.rmtree(broken / "no_train" / "train")
  (broken / "no_names" / "classnames.txt").unlink()
  (broken / "missing_shard" / "test" / "2.tar").unlink()
  with tarfile.open(broken / "corrupt" / "test" / "0.tar", "w", format=tarfile.PAX_FORMAT) as tar:
    data = b"not an image"
    info = tarfile.TarInfo("00000000.png")
    info.size = len(data)
    import io  # pylint: disable=g-import-not-at-top
    tar.addfile(info, io.BytesIO(data))
    label = tarfile.TarInfo("00000000.cls")
    label.size = 1
    tar.addfile(label, io.BytesIO(b"0"))
  shutil.copytree(tars / "captions", broken / "captions")
  out, lines = _benchmark(run, broken, tmp_path, "--tasks=nonesuch,no_names,missing_shard,corrupt,captions,"
                          "linear_probe/no_train,linear_probe_50shot/corrupt,linear_probe/captions")
  assert out.returncode == 1
  by_key = {l["key"]: l for l in lines}
  assert "unknown task 'nonesuch'" in by_key["nonesuch"]["error"]
  assert "classnames.txt" in by_key["no_names"]["error"]
  assert "2.tar is missing" in by_key["missing_shard"]["error"]
  assert "error" not in by_key["corrupt"] and by_key["corrupt"]["num_examples"] == 40 - 16 + 0  # Shard 0 replaced.
  assert "error" not in by_key["captions"]
  assert "no_train/train" in by_key["linear_probe/no_train"]["error"]
  assert "fewer than 50 examples of class" in by_key["linear_probe_50shot/corrupt"]["error"]
  assert "unknown task 'linear_probe/captions'" in by_key["linear_probe/captions"]["error"]  # Retrieval: no probe.
  for key in ("nonesuch", "no_names", "missing_shard", "linear_probe/no_train"):
    assert "\n" not in by_key[key]["error"] and f"{key}: error: " in out.stdout
  assert "Traceback" not in out.stdout + out.stderr


def test_one_and_eight_devices_give_the_same_numbers(model_and_tars, tmp_path):
  run, tars = model_and_tars
  _, one = _benchmark(run, tars, tmp_path / "one", "--tasks=shape,captions,linear_probe/shape")
  _, eight = _benchmark(run, tars, tmp_path / "eight", "--tasks=shape,captions,linear_probe/shape", devices=8)
  assert [l["metrics"] for l in one] == [l["metrics"] for l in eight] and one


def test_help_names_the_flags():
  out = _run("declip_jax.benchmark", "--helpfull")
  for flag in ("--workdir", "--tasks", "--data_root", "--output", "--step"):
    assert flag in out.stdout


def test_a_run_can_evaluate_benchmark_tasks_as_its_evals(model_and_tars, benchmark_case, tmp_path):
  """evals.<name> of kind "benchmark" gives the same numbers as the command, as eval/<name>/<task>/<metric>."""
  import shutil  # pylint: disable=g-import-not-at-top
  from declip_jax import config as config_lib, train  # pylint: disable=g-import-not-at-top
  run, tars = model_and_tars
  _, lines = _benchmark(run, tars, tmp_path, "--tasks=shape,captions,linear_probe_2shot/shape")
  workdir = tmp_path / "run"
  shutil.copytree(run, workdir)
  config = benchmark_case[2].copy_and_resolve_references()
  config.evals = {"bench": config_lib.eval_spec("benchmark", "shape,captions,linear_probe_2shot/shape",
                                                data_root=str(tars))}
  results = train.evaluate(config, str(workdir))["bench"]
  assert results["tasks"] == ["shape", "captions", "linear_probe_2shot/shape"]
  for line in lines:
    for metric, value in line["metrics"].items():
      if value == value:  # acc5 of fewer than 5 classes is NaN in both.
        assert results["metrics"][f"{line['key']}/{metric}"] == pytest.approx(value, abs=1e-9), metric
  assert "aggregate/Average" not in results["metrics"]  # Neither task is one of DataComp's.
  config.evals.bench.dataset = "shape,nonesuch"
  with pytest.raises(Exception, match="unknown task 'nonesuch'"):
    train.evaluate(config, str(workdir))


def test_the_docs_task_table_is_the_task_list():
  from declip_jax.benchmark import tables  # pylint: disable=g-import-not-at-top
  assert tables.task_table() in (REPO / "docs" / "evaluation.md").read_text()


def test_the_docs_comparison_with_clip_benchmark_is_its_record():
  """docs/evaluation.md shows benchmarks/vs_clip_benchmark.py's record as tables.clip_benchmark_comparison renders
  it."""
  from declip_jax.benchmark import tables  # pylint: disable=g-import-not-at-top
  record = json.loads((REPO / "docs" / "benchmarks" / "vs_clip_benchmark.json").read_text())
  assert tables.clip_benchmark_comparison(record) in (REPO / "docs" / "evaluation.md").read_text()


def test_the_docs_linear_probe_seeds_are_their_record():
  """docs/evaluation.md shows benchmarks/linear_probe_seeds.py's record as tables.linear_probe_seeds renders it, and
  the record is of the parity test's probe settings (its spread is that test's tolerance)."""
  from declip_jax.benchmark import tables  # pylint: disable=g-import-not-at-top
  from tests import clip_benchmark_case  # pylint: disable=g-import-not-at-top
  record = json.loads((REPO / "docs" / "benchmarks" / "linear_probe_seeds.json").read_text())
  assert tables.linear_probe_seeds(record) in (REPO / "docs" / "evaluation.md").read_text()
  assert (record["settings"]["epochs"], record["settings"]["batch_size"]) == (
      clip_benchmark_case.PROBE_EPOCHS, clip_benchmark_case.PROBE_BATCH_SIZE)
  assert len(record["ours"]) == len(record["clip_benchmark"]) == len(record["seeds"]) >= 5
