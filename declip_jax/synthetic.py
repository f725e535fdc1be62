"""Synthetic training batches: the shapes and value ranges of real ones, made with NumPy (no data, no TensorFlow).

For benchmarks, AOT checks and accelerator hosts without the input pipeline's libraries: the step's cost does
not depend on what the pixels show or which words a caption has, only on shapes (and, for the MLM head, on how
many positions are chosen, which follows the recipe's masking rate here as in real batches).
"""

from typing import Iterator, Optional

import ml_collections
import numpy as np

from declip_jax.training import state as state_lib
from declip_jax.losses import mlm
from declip_jax.token_ids import TokenIds

MIN_CAPTION_TOKENS = 4


def _captions(rng: np.random.Generator, ids: TokenIds, rows: int, length: int) -> np.ndarray:
  """[rows, length] int32: [SOT] w1 .. wn [EOT] [PAD]..., n uniform in [MIN_CAPTION_TOKENS, length - 2], the words
  drawn uniformly from the ids that are not special."""
  words = np.setdiff1d(np.arange(ids.vocab_size), ids.special_ids)
  out = np.full((rows, length), ids.pad_id, np.int32)
  lengths = rng.integers(min(MIN_CAPTION_TOKENS, length - 2), length - 1, size=rows)
  for row, n in enumerate(lengths):
    out[row, 0] = ids.sot_id
    out[row, 1:n + 1] = rng.choice(words, size=n)
    out[row, n + 1] = ids.eot_id
  return out


def _mlm_mask(rng: np.random.Generator, tokens: np.ndarray, ids: TokenIds, vocab_size: int,
              m: ml_collections.ConfigDict) -> tuple[np.ndarray, np.ndarray]:
  """BERT masking as the pipeline's `text_views.mlm_mask`: each non-special token chosen with m.mask_prob;
  chosen -> [MASK] (m.mask_token_frac) / a random id of [0, vocab_size) (m.random_token_frac) / unchanged.
  Returns (masked tokens, labels: the original id where chosen, mlm.IGNORE_LABEL elsewhere)."""
  eligible = ~np.isin(tokens, ids.special_ids)
  chosen = eligible & (rng.random(tokens.shape) < m.mask_prob)
  u = rng.random(tokens.shape)
  random_ids = rng.integers(0, vocab_size, size=tokens.shape, dtype=np.int32)
  replaced = np.where(u < m.mask_token_frac, ids.mask_id,
                      np.where(u < m.mask_token_frac + m.random_token_frac, random_ids, tokens))
  return (np.where(chosen, replaced, tokens).astype(np.int32),
          np.where(chosen, tokens, mlm.IGNORE_LABEL).astype(np.int32))


def batch(config: ml_collections.ConfigDict, ids: TokenIds, batch_size: Optional[int] = None,
          seed: int = 0) -> dict[str, np.ndarray]:
  """One batch with the keys and shapes of `state.sample_batch_spec(config, batch_size)`.

  Images: uniform pixels in [0, 1] normalised by data.mean / data.std, [B, S, S, 3] float32. `text_mlm`: a
  random caption (MLM-masked at the recipe's rate when `mlm_labels` is in the spec), `text_eda` another one,
  [B, L] int32.
  """
  spec = state_lib.sample_batch_spec(config, batch_size)
  rng = np.random.default_rng(seed)
  mean = np.asarray(config.data.mean, np.float32)
  std = np.asarray(config.data.std, np.float32)
  out = {}
  for key in ("img1", "img2", "img3"):
    if key in spec:
      out[key] = ((rng.random(spec[key].shape, np.float32) - mean) / std).astype(np.float32)
  rows, length = spec["text_mlm"].shape
  text = _captions(rng, ids, rows, length)
  if "mlm_labels" in spec:
    out["text_mlm"], out["mlm_labels"] = _mlm_mask(rng, text, ids, config.model.text.vocab_size, config.mlm)
  else:
    out["text_mlm"] = text
  if "text_eda" in spec:
    out["text_eda"] = _captions(rng, ids, rows, length)
  assert set(out) == set(spec), (sorted(out), sorted(spec))
  return out


def batches(config: ml_collections.ConfigDict, ids: TokenIds, batch_size: Optional[int] = None,
            seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
  """An endless stream of different synthetic batches (batch `seed`, `seed + 1`, ...)."""
  while True:
    yield batch(config, ids, batch_size, seed)
    seed += 1
