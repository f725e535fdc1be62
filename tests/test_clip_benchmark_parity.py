"""Parity with CLIP_benchmark (clip-benchmark 1.6.2): on the same weights (a declip_jax run exported for open_clip)
and the same tars (tests/clip_benchmark_case.py), `python -m declip_jax.benchmark` gives the zero-shot
classification and retrieval metrics that `python -m clip_benchmark.cli eval` gives, and linear-probe metrics as
close as two seeds of one probe are (each side draws its probe's initialisation and orders from its own generator;
given torch's, ours trains to torch's weights: tests/test_benchmark_linear_probe.py). The tolerance is the seeds'
spread that benchmarks/linear_probe_seeds.py measured on this case (docs/benchmarks/linear_probe_seeds.json).
Live where CLIP_benchmark is installed (CI's torch phase, requirements-interop.txt); everywhere else against its
numbers recorded in tests/data/clip_benchmark_parity.json (tests/make_clip_benchmark_fixture.py), which the live
test checks too."""

import importlib.util
import json

import pytest

from declip_jax.benchmark import tables
from tests import clip_benchmark_case as case
from tests.conftest import REPO

SEEDS = REPO / "docs" / "benchmarks" / "linear_probe_seeds.json"
PROBE_SETTINGS = {"epochs": case.PROBE_EPOCHS, "fewshot_k": -1, "normalized": True, "seed": 0, "weight_decay": 0}

pytestmark = pytest.mark.xdist_group("benchmark")  # With test_benchmark_suite (see conftest.benchmark_case).


@pytest.fixture(scope="module")
def built(benchmark_case, tmp_path_factory):
  run, tars, _ = benchmark_case
  root = tmp_path_factory.mktemp("clip_benchmark_parity")
  return root, run, tars, case.ours(run, tars, root / "ours.jsonl")


def _assert_equal(ours: dict, theirs: dict) -> None:
  assert set(theirs) == set(case.TASKS)
  seeds = json.loads(SEEDS.read_text())
  for task, metrics in theirs.items():
    assert metrics, task
    for name, value in metrics.items():
      if case.TASKS[task][1] != "linear_probe":  # The same counts; CLIP_benchmark divides retrieval's in float32.
        assert ours[task][name] == pytest.approx(value, abs=1e-7), f"{task} {name}"
      elif name.startswith("lp_"):
        assert abs(ours[task][name] - value) <= tables.seed_spread(seeds, name) + 1e-9, f"{task} {name}"
      else:
        assert ours[task][name] == value == PROBE_SETTINGS[name], f"{task} {name}"


def test_our_numbers_equal_clip_benchmarks_recorded_ones(built):
  *_, ours = built
  _assert_equal(ours, json.loads(case.FIXTURE.read_text())["metrics"])


@pytest.mark.skipif(importlib.util.find_spec("clip_benchmark") is None,
                    reason="needs clip-benchmark (requirements-interop.txt; CI's torch phase)")
def test_our_numbers_equal_clip_benchmarks_own(built):
  root, run, tars, ours = built
  theirs = case.clip_benchmarks(case.export(run, root / "export"), tars, root)
  _assert_equal(ours, theirs)
  assert theirs == json.loads(case.FIXTURE.read_text())["metrics"], (
      "CLIP_benchmark's numbers moved from the recorded ones: rerun python -m tests.make_clip_benchmark_fixture")
