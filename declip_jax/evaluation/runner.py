"""Runs the named evaluations on the held-out split for a set of parameters."""

import jax
import ml_collections
import numpy as np

from declip_jax.data import pipeline
from declip_jax.evaluation import retrieval, templates, zero_shot
from declip_jax.models.declip import DeCLIP


class Evaluator:
  """Zero-shot classification (one evaluation per attribute) and retrieval on the held-out split.

  `run(params, step)` returns `{"<name>": {"step", "dataset", "metrics", ...}}`, the schema of
  `eval_results.json`; names are `zero_shot_<attribute>` and `retrieval` ({} when the source has no held-out
  split).
  """

  def __init__(self, config: ml_collections.ConfigDict, model: DeCLIP, tokenizer: pipeline.Tokenizer):
    self.tokenizer = tokenizer
    self.batch_size = config.eval.batch_size
    self.data = pipeline.eval_split(config, tokenizer)
    data = config.data
    self.dataset_name = ("builtin/test" if data.source == "builtin" else
                         f"tfrecord:{data.tfrecord.eval_files}" if data.source != "tfds" and data.tfrecord.eval_files
                         else f"{data.tfds.name}/{data.tfds.eval_split}")
    self._encode_image = jax.jit(lambda p, x: model.apply({"params": p}, x, method=DeCLIP.encode_image))
    self._encode_text = jax.jit(lambda p, t: model.apply({"params": p}, t, method=DeCLIP.encode_text))

  def _batched(self, fn, params, inputs: np.ndarray) -> np.ndarray:
    """Applies fn in fixed-size batches (the last one padded), so it compiles once."""
    out = []
    for start in range(0, len(inputs), self.batch_size):
      chunk = inputs[start: start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)], axis=0)
      out.append(np.asarray(fn(params, chunk))[: self.batch_size - pad])
    return np.concatenate(out, axis=0)

  def encode_images(self, params, images: np.ndarray) -> np.ndarray:
    """[N, S, S, 3] normalised images -> [N, D] embeddings."""
    return self._batched(self._encode_image, params, images)

  def encode_texts(self, params, texts: list[str]) -> np.ndarray:
    """N strings -> [N, D] embeddings."""
    return self._batched(self._encode_text, params, self.tokenizer.tokenize_numpy(texts))

  def run(self, params, step: int) -> dict:
    d = self.data
    if d is None:
      return {}
    image_emb = self.encode_images(params, d["images"])
    text_emb = self._batched(self._encode_text, params, d["captions"])
    results = {}
    for attribute, (labels, class_names) in d["zero_shot"].items():
      template_set = f"builtin_{attribute}"
      weights = zero_shot.classifier_weights(lambda t: self.encode_texts(params, t), list(class_names),
                                             templates.get(template_set))
      results[f"zero_shot_{attribute}"] = {
          "step": step, "dataset": self.dataset_name, "template_set": template_set, "num_classes": len(class_names),
          "metrics": zero_shot.classification_metrics(image_emb, weights, labels)}
    results["retrieval"] = {"step": step, "dataset": self.dataset_name,
                            "metrics": retrieval.recall_at_k(image_emb, text_emb, d["text_to_image"])}
    return results
