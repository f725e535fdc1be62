"""Runs the named evaluations of `config.evals` for a set of parameters."""

from typing import Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from declip_jax import templates
from declip_jax.data import pipeline, sources
from declip_jax.evaluation import datasets, encoding, linear_probe, retrieval, zero_shot
from declip_jax.models.declip import DeCLIP


def check_data(config: ml_collections.ConfigDict) -> None:
  """Reads the start of every enabled evaluation's data; raises DataSourceError (one line) on the first that is
  missing, unreadable or unusable. Run before the model is built, so that a wrong dataset costs seconds."""
  for name, spec in sorted(config.evals.items()):
    if spec.enabled:
      datasets.check_available(spec, config, name)


class Evaluations:
  """The enabled evaluations of `config.evals` (check their data first with `check_data`).

  `run(variables, step, names)` (variables: {"params", "batch_stats"}, `state.model_variables`) returns
  `{"<name>": {"step", "kind", "dataset", "split", "num_examples", "metrics", ...}}` (zero-shot adds
  "template_set" and "num_classes"; linear probes "l2"), the schema of `eval_results.json`.
  """

  def __init__(self, config: ml_collections.ConfigDict, model: DeCLIP, tokenizer: pipeline.Tokenizer,
               mesh: Mesh, should_stop: Optional[Callable[[], bool]] = None):
    """should_stop: asked between batches; True abandons the evaluation (encoding.EvaluationInterrupted)."""
    self.config = config
    self.tokenizer = tokenizer
    self.specs = {name: spec for name, spec in sorted(config.evals.items()) if spec.enabled}
    self.encoder = encoding.Encoder(model, mesh, config.eval.batch_size, should_stop)

  def due(self, step: int, last: bool = False) -> list[str]:
    """The evaluations to run after `step`: those whose period divides it, or all at the last step."""
    return [name for name, spec in self.specs.items()
            if last or step % (spec.every_steps or self.config.eval.every_steps) == 0]

  def run(self, variables, step: int, names: Optional[Sequence[str]] = None) -> dict:
    """Runs the named evaluations (default: all) with `variables`; skips "heldout" retrieval without a held-out
    split."""
    results = {}
    for name in self.specs if names is None else names:
      spec = self.specs[name]
      result = getattr(self, f"_{spec.kind}")(name, spec, variables)
      if result is not None:
        results[name] = {"step": step, "kind": spec.kind, **result}
    return results

  def _encode_images(self, variables, ds, kind: str = "image", extra: str = "index", keys: tuple[str, ...] = (),
                     on_batch=None, context: tuple = ()):
    """Encodes the images of `ds` with the tower method `kind`; returns (outputs, index, extra) in dataset order.
    `on_batch` sees each numpy batch (with the further `keys`) before it is encoded."""

    def batches():
      for batch in datasets.batches(ds, self.encoder.local_batch, ("image", "index", extra) + keys):
        if on_batch is not None:
          on_batch(batch)
        yield batch["image"], batch["index"], batch[extra]

    size = self.config.model.image.image_size
    return self.encoder.encode(variables, kind, batches(), (size, size, 3), np.float32, context)

  def encode_texts(self, variables, texts: list[str], kind: str = "text") -> np.ndarray:
    """The same N strings on every process -> [N, D] embeddings (kind "text_tokens": [N, L, d] FILIP tokens;
    each process encodes its share)."""
    return self.encoder.encode_tokens(variables, self.tokenizer.tokenize_numpy(texts), kind=kind)[0]

  def _zero_shot(self, name: str, spec: ml_collections.ConfigDict, variables) -> dict:
    data = datasets.labelled_images(spec, self.config, name, process_index=jax.process_index(),
                                    process_count=jax.process_count())
    prompts = templates.get(spec.templates)
    if spec.token_wise:  # FILIP's token-wise classifier (official).
      classifier = zero_shot.token_wise_classifier(lambda texts: self.encode_texts(variables, texts, "text_tokens"),
                                                   data.class_names, prompts)
      scores, _, labels = self._encode_images(variables, data.dataset, "image_token_scores", extra="label",
                                              context=(classifier,))
      metrics = zero_shot.metrics_from_scores(scores, labels)
    else:
      weights = zero_shot.classifier_weights(lambda texts: self.encode_texts(variables, texts), data.class_names,
                                             prompts)
      image_emb, _, labels = self._encode_images(variables, data.dataset, extra="label")
      metrics = zero_shot.classification_metrics(image_emb, weights, labels)
    return {"dataset": data.name, "split": sources.split_of(data.name), "template_set": spec.templates,
            **({"token_wise": True} if spec.token_wise else {}), "num_classes": len(data.class_names),
            "num_examples": len(labels), "metrics": metrics}

  def _retrieval(self, name: str, spec: ml_collections.ConfigDict, variables) -> Optional[dict]:
    data = datasets.captioned_images(spec, self.config, name, jax.process_index(), jax.process_count())
    if data is None:
      logging.info("evals.%s: the training data has no held-out split (%s); skipped.", name,
                   ", ".join(sources.heldout_settings(self.config)) or "none of its kind")
      return None
    captions, owners = [], []

    def collect_captions(batch):
      for index, row in zip(batch["index"], batch["captions"]):
        texts = [c.decode() for c in row if c]
        captions.extend(texts)
        owners.extend([index] * len(texts))

    image_emb, image_index, _ = self._encode_images(variables, data.dataset, keys=("captions",),
                                                    on_batch=collect_captions)
    tokens = self.tokenizer.tokenize_numpy(captions) if captions else np.zeros(
        (0, self.config.model.text.context_length), np.int32)
    text_emb, text_owner, _ = self.encoder.encode_tokens(variables, tokens, np.asarray(owners, np.int64),
                                                         split_over_processes=False)
    text_to_image = np.searchsorted(image_index, text_owner)
    return {"dataset": data.name, "split": sources.split_of(data.name), "num_examples": len(image_index),
            "num_captions": len(text_owner), "metrics": retrieval.recall_at_k(image_emb, text_emb, text_to_image)}

  def _linear_probe(self, name: str, spec: ml_collections.ConfigDict, variables) -> dict:
    p, count = jax.process_index(), jax.process_count()
    test = datasets.labelled_images(spec, self.config, name, process_index=p, process_count=count)
    train = datasets.labelled_images(spec, self.config, name, dataset=spec.train_dataset,
                                     num_examples=spec.num_train_examples, process_index=p, process_count=count)
    train_x, _, train_y = self._encode_images(variables, train.dataset, "image_features", extra="label")
    test_x, _, test_y = self._encode_images(variables, test.dataset, "image_features", extra="label")
    num_classes = len(test.class_names) or int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1
    metrics, l2 = linear_probe.evaluate(train_x, train_y, test_x, test_y, num_classes, spec.l2_grid,
                                        spec.validation_fraction, seed=self.config.train.seed,
                                        max_iterations=spec.max_iterations)
    return {"dataset": test.name, "split": sources.split_of(test.name), "train_dataset": train.name,
            "num_examples": len(test_y), "num_train_examples": len(train_y), "l2": l2, "metrics": metrics}
