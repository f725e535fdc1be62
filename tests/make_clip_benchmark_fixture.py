"""Writes tests/data/clip_benchmark_parity.json, CLIP_benchmark's side of tests/test_clip_benchmark_parity.py: the
metrics `python -m clip_benchmark.cli eval` gives on the case of tests/clip_benchmark_case.py, with the versions
that gave them. Needs requirements-interop.txt (torch, open_clip, clip-benchmark):

  python -m tests.make_clip_benchmark_fixture
"""

import importlib.metadata
import json
import pathlib
import tempfile

from tests import clip_benchmark_case as case


def main():
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    run, tars, _ = case.build(root)
    metrics = case.clip_benchmarks(case.export(run, root / "export"), tars, root)
  versions = {p: importlib.metadata.version(p) for p in ("clip-benchmark", "open-clip-torch", "torch")}
  case.FIXTURE.write_text(json.dumps({"versions": versions, "metrics": metrics}, indent=1, sort_keys=True) + "\n")
  print(f"wrote {case.FIXTURE}: {json.dumps(metrics)}")


if __name__ == "__main__":
  main()
