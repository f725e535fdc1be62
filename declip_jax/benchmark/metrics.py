"""CLIP_benchmark's metrics (clip-benchmark 1.6.2, `metrics/zeroshot_classification.py`, `zeroshot_retrieval.py`),
on NumPy scores, with their names:

- classification: `acc1`, `acc5` (NaN with fewer than 5 classes, as CLIP_benchmark), and `mean_per_class_recall`
  (scikit-learn's balanced accuracy of the top-1 class: the mean over the classes present in the labels of the
  share of their images predicted as them);
- retrieval: `image_retrieval_recall@K` (for each caption, whether its image is among the K best-scoring images)
  and `text_retrieval_recall@K` (for each image, whether any of its captions is among the K best-scoring
  captions), each the mean over the queries.

Ties between scores are broken towards the lower index (the class, image or caption listed first), which is what
`torch.topk` and `argmax` give on CPU for the float32 scores of real embeddings; exact ties are rare there.
"""

from typing import Sequence

import numpy as np


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
  """[N, M] -> [N, min(k, M)]: each row's columns of the k highest scores, best first, ties to the lower index."""
  k = min(k, scores.shape[1])
  order = np.argsort(-scores, axis=1, kind="stable")
  return order[:, :k]


def classification(scores: np.ndarray, labels: np.ndarray, top_k: Sequence[int] = (1, 5)) -> dict[str, float]:
  """Zero-shot classification metrics of class scores [N, C] and labels [N] (int)."""
  labels = np.asarray(labels)
  best = _top_k(scores, max(top_k))
  out = {}
  for k in top_k:
    hit = (best[:, :k] == labels[:, None]).any(axis=1)
    out[f"acc{k}"] = float(np.mean(hit)) if scores.shape[1] >= k else float("nan")
  predicted = best[:, 0]
  recalls = [np.mean(predicted[labels == c] == c) for c in np.unique(labels)]
  out["mean_per_class_recall"] = float(np.mean(recalls))
  return out


def retrieval(image_emb: np.ndarray, text_emb: np.ndarray, text_to_image: np.ndarray,
              ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """Retrieval metrics of normalised image embeddings [N_img, D] and caption embeddings [N_txt, D], where
  caption t describes image text_to_image[t]; adds `mean_recall@1` (DataComp's main metric) when K = 1 is asked."""
  text_to_image = np.asarray(text_to_image)
  scores = np.asarray(text_emb, np.float32) @ np.asarray(image_emb, np.float32).T  # [N_txt, N_img]
  out = {}
  for k in ks:
    images = _top_k(scores, k)
    out[f"image_retrieval_recall@{k}"] = float(np.mean((images == text_to_image[:, None]).any(axis=1)))
    texts = _top_k(scores.T, k)  # [N_img, k] caption indices
    out[f"text_retrieval_recall@{k}"] = float(np.mean((text_to_image[texts] == np.arange(len(image_emb))[:, None])
                                                      .any(axis=1)))
  if 1 in ks:
    out["mean_recall@1"] = (out["image_retrieval_recall@1"] + out["text_retrieval_recall@1"]) / 2
  return out
