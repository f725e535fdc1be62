"""`python -O -m tests.clip_benchmark_on_cpu eval ...`: CLIP_benchmark's command line (clip-benchmark 1.6.2) on a
machine without CUDA, for its linear probe, which asserts `device == 'cuda'` (for speed; `python -O` drops the
assert) and moves its layer and batches with `.cuda()` (here the identity: they stay on the CPU). Nothing else
of CLIP_benchmark's changes (tests/clip_benchmark_case.py). `cuda_is_identity` does the same for code that calls
CLIP_benchmark's functions in-process (tests/clip_benchmark_probe_case.py)."""

import contextlib
import sys


@contextlib.contextmanager
def cuda_is_identity():
  """While it lasts, torch's `Module.cuda()` and `Tensor.cuda()` return their object unchanged."""
  import torch  # pylint: disable=g-import-not-at-top
  saved = torch.nn.Module.cuda, torch.Tensor.cuda
  torch.nn.Module.cuda = lambda self, *args, **kwargs: self
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  try:
    yield
  finally:
    torch.nn.Module.cuda, torch.Tensor.cuda = saved


if __name__ == "__main__":
  with cuda_is_identity():
    from clip_benchmark import cli  # pylint: disable=g-import-not-at-top
    status = cli.main()
  sys.exit(status)
