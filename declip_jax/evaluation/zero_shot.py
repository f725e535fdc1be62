"""Zero-shot classification: class prompts -> text embeddings -> nearest class for each image."""

from typing import Callable, Sequence

import jax
import ml_collections
import numpy as np

from declip_jax import templates
from declip_jax.data import sources
from declip_jax.evaluation import datasets


def _normalize(x: np.ndarray) -> np.ndarray:
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def classifier_weights(encode_texts: Callable[[list[str]], np.ndarray], class_names: Sequence[str],
                       templates: Sequence[str]) -> np.ndarray:
  """Class embeddings [C, D]: the renormalised mean of the normalised embeddings of each class's prompts.

  Args:
    encode_texts: list of N strings -> [N, D] text embeddings.
    class_names: C names; templates: strings with one "{}" for the name.
  """
  prompts = [t.format(name) for name in class_names for t in templates]
  emb = _normalize(np.asarray(encode_texts(prompts), np.float64)).reshape(len(class_names), len(templates), -1)
  return _normalize(emb.mean(axis=1))


def token_wise_classifier(encode_text_tokens: Callable[[list[str]], np.ndarray], class_names: Sequence[str],
                          templates: Sequence[str], classes_per_call: int = 32) -> np.ndarray:
  """FILIP's token-wise class weights [C, L, d] (official zero-shot): per class, its prompts' mapped text tokens
  [T, L, d] normalised per token, averaged over the prompts, divided by the Frobenius norm of the [L, d] mean.

  Args:
    encode_text_tokens: list of N strings -> [N, L, d] mapped text tokens (every position, padding included).
    classes_per_call: classes whose prompts are encoded at once (host memory: that x T x L x d floats).
  """
  out = []
  for start in range(0, len(class_names), classes_per_call):
    names = class_names[start:start + classes_per_call]
    tokens = np.asarray(encode_text_tokens([t.format(name) for name in names for t in templates]), np.float64)
    mean = _normalize(tokens).reshape(len(names), len(templates), *tokens.shape[1:]).mean(axis=1)
    out.append(mean / np.linalg.norm(mean, axis=(1, 2), keepdims=True))
  return np.concatenate(out)


def pessimistic_ranks(scores: np.ndarray, true_index: np.ndarray) -> np.ndarray:
  """Rank of the true column in each row (0 = best): how many OTHER columns score at least as high.

  Ties count against the true item, so a model that scores everything equally is never credited.
  scores: [N, C]; true_index: [N] -> [N] int.
  """
  true = scores[np.arange(len(scores)), true_index][:, None]
  return (scores >= true).sum(axis=1) - 1


def classification_metrics(image_emb: np.ndarray, weights: np.ndarray, labels: np.ndarray,
                           top_k: Sequence[int] = (1, 5)) -> dict[str, float]:
  """top-k accuracy (k capped at C) and mean per-class recall of top-1.

  Args:
    image_emb: [N, D] (normalised here); weights: [C, D] class embeddings; labels: [N] int.
  Returns:
    {"zero_shot_top1", "zero_shot_top5", "zero_shot_mean_per_class_recall"} in [0, 1].
  """
  return metrics_from_scores(_normalize(np.asarray(image_emb, np.float64)) @ weights.T, labels, top_k)


def metrics_from_scores(scores: np.ndarray, labels: np.ndarray, top_k: Sequence[int] = (1, 5)) -> dict[str, float]:
  """`classification_metrics` of class scores [N, C] (any score: cosine, FILIP's token-wise logit)."""
  ranks = pessimistic_ranks(scores, labels)
  out = {f"zero_shot_top{k}": float(np.mean(ranks < min(k, scores.shape[1]))) for k in top_k}
  present = np.unique(labels)
  out["zero_shot_mean_per_class_recall"] = float(np.mean([np.mean(ranks[labels == c] == 0) for c in present]))
  return out


def run(evals, name: str, spec: ml_collections.ConfigDict, variables) -> dict:
  """The `zero_shot` evaluator (`evaluations.EVALUATORS`): runs evals.<name>, whose settings are `spec`, on the
  model's `variables` through `evals` (an `evaluations.Evaluations`: the config, the tokenizer and the mesh-sharded
  encoders); returns the result's fields (dataset, split, num_examples, metrics, ...)."""
  data = datasets.labelled_images(spec, evals.config, name, process_index=jax.process_index(),
                                  process_count=jax.process_count())
  prompts = templates.get(spec.templates)
  if spec.token_wise:  # FILIP's token-wise classifier (official).
    classifier = token_wise_classifier(lambda texts: evals.encode_texts(variables, texts, "text_tokens"),
                                                 data.class_names, prompts)
    scores, _, labels = evals.encode_images(variables, data.dataset, "image_token_scores", extra="label",
                                            context=(classifier,))
    metrics = metrics_from_scores(scores, labels)
  else:
    weights = classifier_weights(lambda texts: evals.encode_texts(variables, texts), data.class_names,
                                           prompts)
    image_emb, _, labels = evals.encode_images(variables, data.dataset, extra="label")
    metrics = classification_metrics(image_emb, weights, labels)
  return {"dataset": data.name, "split": sources.split_of(data.name), "template_set": spec.templates,
          **({"token_wise": True} if spec.token_wise else {}), "num_classes": len(data.class_names),
          "num_examples": len(labels), "metrics": metrics}
