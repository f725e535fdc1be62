"""mlm.*: masked language modelling's masking rates (official: BERT's)."""

import ml_collections

from declip_jax.config.config_error import require


def defaults() -> ml_collections.ConfigDict:
  """mlm.*: masked language modelling's masking rates (official: BERT's)."""
  mlm = ml_collections.ConfigDict()
  mlm.mask_prob = 0.15
  mlm.mask_token_frac = 0.8
  mlm.random_token_frac = 0.1  # Random ids from the whole vocabulary (official).
  # Vocabulary logits only at each caption's first this-many chosen positions (0: at all positions). A batch
  # with a longer row takes the all-positions path, so the loss is the same. 15% masking chooses more than 24
  # positions of a full 77-token caption with probability 6e-5, of a 38-token one 2e-12. Speed only.
  mlm.max_predictions = 24
  return mlm


def validate(c: ml_collections.ConfigDict) -> None:
  """mlm.*."""
  require(c.mlm.mask_token_frac + c.mlm.random_token_frac <= 1.0,
          "mlm.mask_token_frac + mlm.random_token_frac must be <= 1.")
  require(c.mlm.max_predictions >= 0, f"mlm.max_predictions must be >= 0, got {c.mlm.max_predictions}.")
