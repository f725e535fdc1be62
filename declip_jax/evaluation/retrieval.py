"""Image <-> text retrieval Recall@K; a hit when any true match is in the top K."""

from typing import Sequence

import numpy as np


def _normalize(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _best_true_rank(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
  """scores [N, M], truth [N, M] bool -> [N]: for each row, the pessimistic rank of its best-scoring true match.

  Rank = number of non-true columns scoring at least as high as that match (ties count against it).
  """
  best_true = np.where(truth, scores, -np.inf).max(axis=1, keepdims=True)
  return ((scores >= best_true) & ~truth).sum(axis=1)


def recall_at_k(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
                ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """Recall@K in both directions.

  Args:
    image_emb: [N_img, D]; text_emb: [N_txt, D] (both normalised here).
    text_to_image: [N_txt] int, the image each caption describes (an image may have several captions).
  Returns:
    {"i2t_recall@K", "t2i_recall@K"} for each K, in [0, 1].
  """
  scores = _normalize(np.asarray(image_emb, np.float64)) @ _normalize(np.asarray(text_emb, np.float64)).T
  truth = np.asarray(text_to_image)[None, :] == np.arange(len(image_emb))[:, None]  # [N_img, N_txt]
  i2t = _best_true_rank(scores, truth)
  t2i = _best_true_rank(scores.T, truth.T)
  out = {}
  for k in ks:
    out[f"i2t_recall@{k}"] = float(np.mean(i2t < k))
    out[f"t2i_recall@{k}"] = float(np.mean(t2i < k))
  return out
