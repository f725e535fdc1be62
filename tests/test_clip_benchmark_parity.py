"""Parity with CLIP_benchmark (clip-benchmark 1.6.2): on the same weights (a declip_jax run exported for open_clip)
and the same tars (tests/clip_benchmark_case.py), `python -m declip_jax.benchmark` gives the zero-shot
classification and retrieval metrics that `python -m clip_benchmark.cli eval` gives. Live where CLIP_benchmark is
installed (CI's torch phase, requirements-interop.txt); everywhere else against its numbers recorded in
tests/data/clip_benchmark_parity.json (tests/make_clip_benchmark_fixture.py), which the live test checks too."""

import importlib.util
import json

import pytest

from tests import clip_benchmark_case as case

pytestmark = pytest.mark.xdist_group("benchmark")  # With test_benchmark_suite (see conftest.benchmark_case).


@pytest.fixture(scope="module")
def built(benchmark_case, tmp_path_factory):
  run, tars, _ = benchmark_case
  root = tmp_path_factory.mktemp("clip_benchmark_parity")
  return root, run, tars, case.ours(run, tars, root / "ours.jsonl")


def _assert_equal(ours: dict, theirs: dict) -> None:
  assert set(theirs) == set(case.TASKS)
  for task, metrics in theirs.items():
    assert metrics, task
    for name, value in metrics.items():  # The same counts; CLIP_benchmark divides retrieval's in float32.
      assert ours[task][name] == pytest.approx(value, abs=1e-7), f"{task} {name}"


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
