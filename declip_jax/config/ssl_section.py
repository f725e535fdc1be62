"""ssl.*: SimSiam's projector, predictor and BatchNorm groups (docs/design.md §2); checked with the loss terms
that use them (`loss.validate`)."""

import ml_collections


def defaults() -> ml_collections.ConfigDict:
  """ssl.*: SimSiam's projector, predictor and BatchNorm groups (docs/design.md §2)."""
  ssl = ml_collections.ConfigDict()
  ssl.bn_group_size = 128  # BatchNorm statistics over groups of this many examples (official per-GPU batch).
  ssl.projector_dim = 1024
  ssl.predictor_hidden_dim = 512
  ssl.bn_momentum = 0.9  # flax convention; = PyTorch momentum 0.1.
  ssl.bn_epsilon = 1e-5
  return ssl
