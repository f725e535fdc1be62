"""The demos' word tokenizer, in-graph (tensorflow_text).

`WordTokenizer`: lower-cased words looked up in a vocabulary file/list. Id layout: 0 [PAD], 1 [UNK], the words,
then [MASK], [SOT], [EOT] (the order of the official `declip` layout's special ids). Every sequence is
[SOT] w1 ... wn [EOT] [PAD]..., truncated so that [SOT] and [EOT] always survive.
"""

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from etils import epath

from declip_jax import token_ids
from declip_jax.data.tokenizers.framing import frame


class WordTokenizer(token_ids.WithTokenIds):
  """Word-level tokenizer, usable inside tf.data maps.

  Attributes:
    context_length: L, the length of every token sequence.
    pad_id, unk_id, mask_id, sot_id, eot_id: special ids.
    vocab_size: number of ids.
  """

  def __init__(self, words: list[str], context_length: int):
    words = token_ids.normalized_words(words)
    self.context_length = context_length
    self.token_ids = token_ids.word_ids(len(words))
    first = self.unk_id + 1
    self.words = words
    self._table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(words), tf.range(first, first + len(words), dtype=tf.int32)),
        default_value=self.unk_id)
    self._splitter = tf_text.WhitespaceTokenizer()

  @classmethod
  def from_file(cls, path: str, context_length: int) -> "WordTokenizer":
    """One word per line."""
    return cls(epath.Path(path).read_text().splitlines(), context_length)

  def words_of(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """texts [N] string -> ragged [N, (words)]: lower-cased, punctuation dropped."""
    texts = tf.strings.regex_replace(tf.strings.lower(texts), r"[^a-z0-9']+", " ")
    return self._splitter.tokenize(texts)

  def tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    """texts: [N] or scalar string -> [N, L] or [L] int32 token ids."""
    texts = tf.convert_to_tensor(texts)
    scalar = texts.shape.rank == 0
    words = self.words_of(tf.reshape(texts, [-1]))
    ids = frame(tf.ragged.map_flat_values(self._table.lookup, words), self.sot_id, self.eot_id, self.pad_id,
                self.context_length)
    return ids[0] if scalar else ids

  def tokenize_numpy(self, texts: list[str]) -> np.ndarray:
    """Eager convenience: list of N strings -> [N, L] int32."""
    return self.tokenize(tf.constant(list(texts), tf.string)).numpy()
