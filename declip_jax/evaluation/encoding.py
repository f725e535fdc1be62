"""Batched, mesh-sharded encoding of evaluation inputs with a model's towers, on any number of processes."""

from typing import Callable, Iterable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from declip_jax import parallel
from declip_jax.models.declip import DeCLIP


class EvaluationInterrupted(Exception):
  """A stop request came while encoding (`Encoder.should_stop`): the evaluation was abandoned between batches."""


def _text_tokens(module: DeCLIP, tokens: jax.Array) -> jax.Array:
  return module.encode_text_tokens(tokens)[0]


def _image_token_scores(module: DeCLIP, images: jax.Array, classifier: jax.Array) -> jax.Array:
  """FILIP's token-wise zero-shot logits [n, C]: the mean over the image's tokens (normalised) of the max over
  each class's positions (`zero_shot.token_wise_classifier` [C, L, d]) of the dot product; classes in blocks."""
  tokens = module.encode_image_tokens(images)
  tokens = tokens / jnp.linalg.norm(tokens, axis=-1, keepdims=True)
  block = 64
  pad = (-classifier.shape[0]) % block
  blocks = jnp.pad(classifier, ((0, pad), (0, 0), (0, 0))).reshape(-1, block, *classifier.shape[1:])
  scores = jax.lax.map(lambda c: jnp.mean(jnp.max(jnp.einsum("npd,cld->ncpl", tokens, c), axis=-1), axis=-1),
                       blocks)  # [blocks, n, block]
  return jnp.moveaxis(scores, 0, 1).reshape(tokens.shape[0], -1)[:, :classifier.shape[0]]


METHODS = {"image": DeCLIP.encode_image, "image_features": DeCLIP.image_features, "text": DeCLIP.encode_text,
           "text_tokens": _text_tokens, "image_token_scores": _image_token_scores}


class Encoder:
  """Runs a tower on global batches split over the mesh's batch axes; every process gets every output row.

  Each process feeds its own rows (`index` says which example each row is); the last, partial batch is padded
  and the padding dropped, so every call compiles once per input shape.
  """

  def __init__(self, model: DeCLIP, mesh: Mesh, batch_size: int, should_stop: Optional[Callable[[], bool]] = None):
    """batch_size: global rows per call, rounded up to a multiple of the mesh's batch shards. should_stop: asked
    before each batch; True abandons the encoding with EvaluationInterrupted (it must answer the same on every
    process: the training loop's stop requests do)."""
    shards = parallel.num_batch_shards(mesh)
    self.mesh = mesh
    self.should_stop = should_stop or (lambda: False)
    self.global_batch = -(-batch_size // shards) * shards
    self.local_batch = self.global_batch // jax.process_count()

    def make(method):
      def fn(variables, inputs, index, extra, valid, *context):
        return model.apply(variables, inputs, *context, method=method), index, extra, valid
      return jax.jit(fn, out_shardings=parallel.replicated(mesh))

    self._fns = {kind: make(method) for kind, method in METHODS.items()}

  def encode(self, variables, kind: str, batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
             example_shape: tuple[int, ...], dtype, context: tuple = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encodes this process's (inputs [n, ...], index [n], extra [n]) batches (n <= local_batch) together with
    the other processes' batches; `extra` (e.g. labels) travels with its row.

    Args:
      variables: the model's {"params", "batch_stats"} (any sharding; BatchNorm uses the running statistics).
      kind: "image", "image_features", "text", "text_tokens" (FILIP: [N, L, d]) or "image_token_scores" (FILIP's
        token-wise zero-shot logits [N, C]; context: the classifier [C, L, d]).
      example_shape, dtype: one input row's shape and dtype (a process that runs out early feeds padding).
      context: further arguments of the method, the same for every batch.
    Returns:
      outputs [N, ...] float32, their index [N] and extra [N] over all processes, stably sorted by index.
    """
    fn = self._fns[kind]
    outputs, indices, extras = [], [], []
    local: Iterator = iter(batches)
    multi = jax.process_count() > 1
    while True:
      if self.should_stop():
        raise EvaluationInterrupted()
      chunk: Optional[tuple[np.ndarray, ...]] = next(local, None)
      if chunk is None and not multi:
        break
      inputs = np.zeros((self.local_batch,) + tuple(example_shape), dtype)
      index = np.zeros((self.local_batch,), np.int32)
      extra = np.zeros((self.local_batch,), np.int32)
      valid = np.zeros((self.local_batch,), bool)
      if chunk is not None:
        n = len(chunk[1])
        inputs[:n], index[:n], extra[:n], valid[:n] = chunk[0], chunk[1], chunk[2], True
      g = parallel.host_to_global({"inputs": inputs, "index": index, "extra": extra, "valid": valid}, self.mesh)
      out, out_index, out_extra, out_valid = jax.device_get(
          fn(variables, g["inputs"], g["index"], g["extra"], g["valid"], *context))
      if not out_valid.any():  # Every process has run out (only reached with several processes).
        break
      outputs.append(np.asarray(out, np.float32)[out_valid])
      indices.append(out_index[out_valid])
      extras.append(out_extra[out_valid])
    if not outputs:
      return np.zeros((0, 0), np.float32), np.zeros((0,), np.int32), np.zeros((0,), np.int32)
    outputs, indices, extras = np.concatenate(outputs), np.concatenate(indices), np.concatenate(extras)
    order = np.argsort(indices, kind="stable")
    return outputs[order], indices[order], extras[order]

  def encode_tokens(self, variables, tokens: np.ndarray, owners: Optional[np.ndarray] = None,
                    split_over_processes: bool = True, kind: str = "text") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text embeddings of token rows.

    Args:
      tokens: [M, L] int32; owners: [M] the index each row is returned with (default: its position).
      split_over_processes: the rows are the same on every process (e.g. prompts) and each encodes its share;
        False: every process passes its own rows.
    Returns:
      embeddings [M_total, D] (kind "text_tokens": [M_total, L, d]), owners [M_total] (twice: index and extra),
      stably sorted by owner.
    """
    owners = np.arange(len(tokens)) if owners is None else np.asarray(owners)
    if split_over_processes:
      p, count = jax.process_index(), jax.process_count()
      tokens, owners = tokens[p::count], owners[p::count]
    rows = ((tokens[s: s + self.local_batch], owners[s: s + self.local_batch], owners[s: s + self.local_batch])
            for s in range(0, len(tokens), self.local_batch))
    return self.encode(variables, kind, rows, tokens.shape[1:], np.int32)
