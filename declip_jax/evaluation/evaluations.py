"""Runs the named evaluations of `config.evals` for a set of parameters: each kind's evaluator is registered in
`EVALUATORS` (the kind's module holds its metrics and its `run`), so a new kind is one module and one line here."""

from typing import Callable, Optional, Sequence

import ml_collections
import numpy as np
from jax.sharding import Mesh

from declip_jax.benchmark import suite as benchmark_suite
from declip_jax.data import tokenizers
from declip_jax.data.errors import DataSourceError
from declip_jax.evaluation import datasets, encoding, linear_probe, retrieval, zero_shot
from declip_jax.models.declip import DeCLIP


# kind -> run(evals: Evaluations, name, spec, variables) -> the result's fields (None: nothing to evaluate).
EVALUATORS: dict[str, Callable[..., Optional[dict]]] = {
    "zero_shot": zero_shot.run,
    "retrieval": retrieval.run,
    "linear_probe": linear_probe.run,
    "benchmark": benchmark_suite.run,
}


def _check_one(config: ml_collections.ConfigDict, name: str, spec: ml_collections.ConfigDict) -> None:
  if spec.kind == "benchmark":
    benchmark_suite.check_available(spec, name)
  else:
    datasets.check_available(spec, config, name)


def check_data(config: ml_collections.ConfigDict) -> None:
  """Reads the start of every enabled evaluation's data; raises DataSourceError (one line) on the first that is
  missing, unreadable or unusable. Run before the model is built, so that a wrong dataset costs seconds."""
  for name, spec in sorted(config.evals.items()):
    if spec.enabled:
      _check_one(config, name, spec)


def missing_data(config: ml_collections.ConfigDict) -> dict[str, str]:
  """{name: the one-line reason} of every enabled evaluation whose data `check_data` would refuse."""
  missing = {}
  for name, spec in sorted(config.evals.items()):
    if spec.enabled:
      try:
        _check_one(config, name, spec)
      except DataSourceError as e:
        missing[name] = str(e)
  return missing


class Evaluations:
  """The enabled evaluations of `config.evals` (check their data first with `check_data`).

  `run(variables, step, names)` (variables: {"params", "batch_stats"}, `state.model_variables`) returns
  `{"<name>": {"step", "kind", "dataset", "split", "num_examples", "metrics", ...}}` (zero-shot adds
  "template_set" and "num_classes"; linear probes "l2"), the schema of `eval_results.json`.
  """

  def __init__(self, config: ml_collections.ConfigDict, model: DeCLIP, tokenizer: tokenizers.Tokenizer,
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
      result = EVALUATORS[spec.kind](self, name, spec, variables)
      if result is not None:
        results[name] = {"step": step, "kind": spec.kind, **result}
    return results

  def encode_images(self, variables, ds, kind: str = "image", extra: str = "index", keys: tuple[str, ...] = (),
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
