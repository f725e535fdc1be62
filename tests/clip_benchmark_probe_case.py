"""CLIP_benchmark's own linear-probe training (`clip_benchmark.metrics.linear_probe.train`, 1.6.2) on a small fixed
problem, with what it drew from torch's generator (the initial weights, each epoch's order), recorded in
tests/data/clip_benchmark_linear_probe.npz for tests/test_benchmark_linear_probe.py. Writing it needs torch and
clip-benchmark (requirements-interop.txt):

  python -m tests.clip_benchmark_probe_case

CLIP_benchmark's `train` moves the layer and batches to CUDA; on a machine without CUDA its `.cuda()` calls are
made the identity while it runs (torch.nn.DataParallel with no GPU runs the layer itself), nothing else changes.
"""

import numpy as np

from tests import clip_benchmark_on_cpu
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "data" / "clip_benchmark_linear_probe.npz"
NUM_EXAMPLES, NUM_FEATURES, NUM_CLASSES = 37, 6, 4  # 37: the last batch of 8 is short.
WEIGHT_DECAYS = (0.0, 0.3)
LR, EPOCHS, BATCH_SIZE, SEED = 0.1, 3, 8, 0


def problem(seed: int = 0, n: int = NUM_EXAMPLES, d: int = NUM_FEATURES,
            c: int = NUM_CLASSES) -> tuple[np.ndarray, np.ndarray]:
  """Normalised features [n, d] (float32) of c noisy clusters, and their labels [n]."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, c, n)
  features = rng.normal(size=(c, d))[labels] + 0.8 * rng.normal(size=(n, d))
  return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32), labels


def record() -> dict[str, np.ndarray]:
  """Runs CLIP_benchmark's `train` at each weight decay: {features, labels, weight_decays, lr, batch_size,
  init_w [D, C], init_b [C], orders [epochs, N], final_w [W, D, C], final_b [W, C]}."""
  import torch  # pylint: disable=g-import-not-at-top
  from clip_benchmark.metrics import linear_probe  # pylint: disable=g-import-not-at-top
  features, labels = problem()
  seen: list[int] = []

  class Recording(linear_probe.FeatureDataset):
    def __getitem__(self, i):
      seen.append(int(i))
      return super().__getitem__(i)

  torch.manual_seed(SEED)  # `train` seeds torch, then builds the layer: its first draws are the initialisation.
  init = torch.nn.Linear(NUM_FEATURES, NUM_CLASSES)
  final_w, final_b, orders = [], [], None
  for weight_decay in WEIGHT_DECAYS:
    seen.clear()
    loader = torch.utils.data.DataLoader(Recording(features, labels), batch_size=BATCH_SIZE, shuffle=True,
                                         num_workers=0)
    with clip_benchmark_on_cpu.cuda_is_identity():
      model = linear_probe.train(loader, NUM_FEATURES, NUM_CLASSES, weight_decay, LR, EPOCHS, False, "cpu", SEED)
    epoch_orders = np.asarray(seen).reshape(EPOCHS, NUM_EXAMPLES)
    assert orders is None or (orders == epoch_orders).all()  # Re-seeded: the same orders at each weight decay.
    orders = epoch_orders
    final_w.append(model.module.weight.detach().numpy().T)
    final_b.append(model.module.bias.detach().numpy())
  return {"features": features, "labels": labels, "weight_decays": np.asarray(WEIGHT_DECAYS), "lr": np.asarray(LR),
          "batch_size": np.asarray(BATCH_SIZE), "init_w": init.weight.detach().numpy().T.copy(),
          "init_b": init.bias.detach().numpy(), "orders": orders, "final_w": np.stack(final_w),
          "final_b": np.stack(final_b)}


def load() -> dict[str, np.ndarray]:
  return dict(np.load(FIXTURE))


def main():
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  arrays = record()
  versions = " ".join(f"{p}=={importlib.metadata.version(p)}" for p in ("clip-benchmark", "torch"))
  np.savez(FIXTURE, versions=np.asarray(versions), **arrays)
  print(f"wrote {FIXTURE} ({versions})")


if __name__ == "__main__":
  main()
