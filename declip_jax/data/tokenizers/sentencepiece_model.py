"""SentencePiece tokenization in-graph (tensorflow_text), with the special ids DeCLIP needs.

Ids: the model's own pieces, then whatever of [PAD], [MASK], [SOT], [EOT] the model does not define (a model from
`python -m declip_jax.data.tokenizers.train_sentencepiece` defines them all: pad 0, unk 1, SOT = bos 2, EOT = eos 3,
[MASK] = "<mask>" 4). Sequences are [SOT] pieces [EOT] [PAD]..., truncated so SOT and EOT survive.
"""

from typing import Sequence

import numpy as np
import sentencepiece as spm
import tensorflow as tf
import tensorflow_text as tf_text
from etils import epath

from declip_jax import token_ids
from declip_jax.data.tokenizers.framing import frame

MASK_PIECE = token_ids.SENTENCEPIECE_MASK_PIECE


class SentencePieceTokenizer(token_ids.WithTokenIds):
  """Same interface as `word.WordTokenizer`."""

  def __init__(self, model_proto: bytes, context_length: int):
    processor = spm.SentencePieceProcessor(model_proto=model_proto)
    self.context_length = context_length
    self.token_ids = token_ids.sentencepiece_ids(processor)
    self._processor = processor
    self._tokenizer = tf_text.SentencepieceTokenizer(model=model_proto, out_type=tf.int32)

  @classmethod
  def from_file(cls, path: str, context_length: int) -> "SentencePieceTokenizer":
    return cls(epath.Path(path).read_bytes(), context_length)

  def tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    """texts: [N] or scalar string -> [N, L] or [L] int32."""
    texts = tf.convert_to_tensor(texts)
    scalar = texts.shape.rank == 0
    ids = frame(self._tokenizer.tokenize(tf.reshape(texts, [-1])), self.sot_id, self.eot_id,
                           self.pad_id, self.context_length)
    return ids[0] if scalar else ids

  def tokenize_numpy(self, texts: Sequence[str]) -> np.ndarray:
    return self.tokenize(tf.constant(list(texts), tf.string)).numpy()

  def decode(self, ids: Sequence[int]) -> str:
    skip = set(self.special_ids)
    return self._processor.decode([int(i) for i in ids if int(i) not in skip])
