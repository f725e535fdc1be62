"""How far apart two seeds of CLIP_benchmark's linear probe are, on each side: declip_jax's benchmark command and
CLIP_benchmark's (clip-benchmark 1.6.2), on the same exported weights and tars (tests/clip_benchmark_case.py's
`linear_probe/shape`: a tiny DeCLIP run, 96 training and 40 test images), at seeds 0..N-1. Both draw the probe's
initialisation and orders from their own generators (torch's, NumPy's), so no seed of one equals a seed of the
other; the spread over seeds is the tolerance that tests/test_clip_benchmark_parity.py allows between the two.
CLIP_benchmark's probe runs on the CPU as tests/clip_benchmark_on_cpu.py runs it. Needs requirements-interop.txt,
and NumPy < 2.4 for CLIP_benchmark (CLIP_BENCHMARK_PYTHONPATH, as tests/clip_benchmark_case.py says).

  python benchmarks/linear_probe_seeds.py [--seeds=10] [--out=docs/benchmarks/linear_probe_seeds.json]

Writes --out (the record) and prints the table docs/evaluation.md shows (declip_jax/benchmark/tables.py's
linear_probe_seeds renders it; a test checks the page against the record).
"""

import importlib.metadata
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import open_clip  # noqa: E402,F401  (before JAX/TensorFlow: its triton import segfaults after them)
from absl import app, flags  # noqa: E402

from declip_jax import host_info  # noqa: E402
from declip_jax.benchmark import linear_probe, tables  # noqa: E402
from tests import clip_benchmark_case as case  # noqa: E402

_SEEDS = flags.DEFINE_integer("seeds", 10, "Seeds 0..N-1 on each side.")
_OUT = flags.DEFINE_string("out", "", "Where to write the record (JSON); empty: print only.")
TASK = "linear_probe/shape"
METRICS = ("lp_acc1", "lp_acc5", "lp_mean_per_class_recall")


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    run, tars, config = case.build(root)
    exported = case.export(run, root / "export")
    ours, theirs = [], []
    for seed in range(_SEEDS.value):
      mine = case.ours(run, tars, root / f"ours_{seed}.jsonl", f"--linear_probe_seed={seed}", tasks=(TASK,))[TASK]
      other = case.clip_benchmarks(exported, tars, root, seed, tasks=(TASK,))[TASK]
      ours.append({m: mine[m] for m in METRICS})
      theirs.append({m: other[m] for m in METRICS})
      print(f"seed {seed}: ours {ours[-1]}, CLIP_benchmark {theirs[-1]}", flush=True)
  record = {"host": host_info.describe(), "task": TASK, "train_images": config.data.builtin.num_train,
            "test_images": config.data.builtin.num_test,
            "settings": {"lr": linear_probe.Settings().lr, "epochs": case.PROBE_EPOCHS, "batch_size": case.PROBE_BATCH_SIZE,
                         "fewshot_k": -1, "weight_decay": 0.0},
            "versions": {p: importlib.metadata.version(p) for p in ("clip-benchmark", "open-clip-torch", "torch")},
            "seeds": list(range(_SEEDS.value)), "ours": ours, "clip_benchmark": theirs}
  if _OUT.value:
    pathlib.Path(_OUT.value).write_text(json.dumps(record, indent=1) + "\n")
  print(tables.linear_probe_seeds(record))


if __name__ == "__main__":
  app.run(main)
