"""Image <-> text retrieval Recall@K; a hit when any true match is in the top K."""

from typing import Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from declip_jax.data import sources
from declip_jax.evaluation import datasets


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


def run(evals, name: str, spec: ml_collections.ConfigDict, variables) -> Optional[dict]:
  """The `retrieval` evaluator (`evaluations.EVALUATORS`): runs evals.<name>, whose settings are `spec`, on the
  model's `variables` through `evals` (an `evaluations.Evaluations`: the config, the tokenizer and the mesh-sharded
  encoders); returns the result's fields (dataset, split, num_examples, metrics, ...); None when there is no
  held-out split to retrieve from."""
  data = datasets.captioned_images(spec, evals.config, name, jax.process_index(), jax.process_count())
  if data is None:
    logging.info("evals.%s: the training data has no held-out split (%s); skipped.", name,
                 ", ".join(sources.heldout_settings(evals.config)) or "none of its kind")
    return None
  image_emb, image_index, text_emb, text_to_image = encode_captioned_images(evals, variables, data.dataset)
  return {"dataset": data.name, "split": sources.split_of(data.name), "num_examples": len(image_index),
          "num_captions": len(text_to_image), "metrics": recall_at_k(image_emb, text_emb, text_to_image)}


def encode_captioned_images(evals, variables, dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Every image of a `datasets.captioned_images` dataset and every one of its captions, encoded over the mesh
  (each process its slice; every process gets all): (image embeddings [N, D], their dataset index [N], caption
  embeddings [M, D], text_to_image [M]: the row of each caption's image), embeddings not normalised."""
  captions, owners = [], []

  def collect_captions(batch):
    for index, row in zip(batch["index"], batch["captions"]):
      texts = [c.decode() for c in row if c]
      captions.extend(texts)
      owners.extend([index] * len(texts))

  image_emb, image_index, _ = evals.encode_images(variables, dataset, keys=("captions",),
                                                  on_batch=collect_captions)
  tokens = evals.tokenizer.tokenize_numpy(captions) if captions else np.zeros(
      (0, evals.config.model.text.context_length), np.int32)
  text_emb, text_owner, _ = evals.encoder.encode_tokens(variables, tokens, np.asarray(owners, np.int64),
                                                       split_over_processes=False)
  return image_emb, image_index, text_emb, np.searchsorted(image_index, text_owner)
