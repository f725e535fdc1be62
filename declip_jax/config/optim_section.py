"""optim.*: AdamW and the learning-rate schedule (official; docs/design.md §8)."""

import ml_collections


def defaults() -> ml_collections.ConfigDict:
  """optim.*: AdamW and the learning-rate schedule (official; docs/design.md §8)."""
  optim = ml_collections.ConfigDict()
  optim.lr = 1e-3
  optim.warmup_init_lr = 1e-4
  optim.warmup_steps = 2500
  optim.schedule_steps = 128_001  # The cosine reaches 0 here.
  optim.b1 = 0.9
  optim.b2 = 0.98
  optim.eps = 1e-8
  optim.weight_decay = 0.1
  optim.grad_clip_norm = 0.0  # 0 disables clipping (official: none).
  return optim
