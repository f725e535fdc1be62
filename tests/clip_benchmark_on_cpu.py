"""`python -O -m tests.clip_benchmark_on_cpu eval ...`: CLIP_benchmark's command line (clip-benchmark 1.6.2) on a
machine without CUDA, for its linear probe, which asserts `device == 'cuda'` (for speed; `python -O` drops the
assert) and moves its layer and batches with `.cuda()` (here the identity: they stay on the CPU). Nothing else
of CLIP_benchmark's changes (tests/clip_benchmark_case.py)."""

import sys

import torch

if __name__ == "__main__":
  torch.nn.Module.cuda = lambda self, *args, **kwargs: self
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  from clip_benchmark import cli  # pylint: disable=g-import-not-at-top
  sys.exit(cli.main())
