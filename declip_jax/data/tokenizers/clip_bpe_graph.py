"""CLIP BPE as TensorFlow ops: the ids of `ClipBpeTokenizer.encode`, without Python for plain captions.

A caption is plain when CLIP's cleaning can only collapse its whitespace and lower-case it: printable ASCII,
tab, newline and carriage return, and no "&" (ftfy changes nothing else in ASCII; `html.unescape` acts only on
"&"). Plain captions are split by CLIP's pattern with RE2 (leftmost-first alternation, as the `regex` module);
each piece is looked up in a table of the vocabulary's whole words (the tokens ending in "</w>", with their
BPE computed once by the Python merge loop), and the pieces the table lacks are merged by rank in a
`tf.while_loop`, one leftmost lowest-rank pair per piece per iteration (the same merges as the Python loop's
"all occurrences of the lowest-rank pair, left to right": a merge that uses a merged symbol always has a higher
rank than the merge that made it). Other captions go to the Python tokenizer through `tf.numpy_function`, only
when a batch holds one.
"""

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from declip_jax.data.tokenizers.framing import frame

PLAIN_CAPTION = r"[ -%'-~\t\n\r]*"  # Printable ASCII but "&", and tab/newline/CR.
# CLIP's pattern (clip_bpe.PATTERN) on lower-cased plain captions: letters are [a-z], numbers [0-9].
PLAIN_PIECE = r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+"
_NO_RANK = np.iinfo(np.int32).max


def _string_table(keys: Sequence, values: np.ndarray, default: int) -> tf.lookup.StaticHashTable:
  keys = np.array(keys, dtype=object)
  return tf.lookup.StaticHashTable(
      tf.lookup.KeyValueTensorInitializer(tf.constant(keys, tf.string), tf.constant(values, tf.int32)), default)


class GraphBpe:
  """Rank-ordered BPE of CLIP pieces in TF ops, with a whole-word table in front.

  Args:
    merges: the merges, in rank order, as pairs of byte-symbol strings.
    symbol_ids: vocabulary token (byte symbols, "</w>" at word ends) -> id.
    byte_symbols: the 256 byte symbols, in byte order.
    words: ASCII pieces with their ids (usually the vocabulary's whole words).
  """

  def __init__(self, merges: Sequence[tuple[str, str]], symbol_ids: dict[str, int], byte_symbols: Sequence[str],
               words: dict[str, list[int]]):
    self._ranks = _string_table([f"{a} {b}" for a, b in merges], np.arange(len(merges), dtype=np.int32), _NO_RANK)
    self._symbol_ids = _string_table(list(symbol_ids), np.array(list(symbol_ids.values()), np.int32), -1)
    self._byte_symbols = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(np.array([bytes([b]) for b in range(256)], dtype=object), tf.string),
        tf.constant(np.array([s.encode() for s in byte_symbols], dtype=object), tf.string)), "")
    words = words or {" ": [-1]}  # A key no piece has (pieces hold no space): a table needs one.
    width = max(len(v) for v in words.values())
    rows = np.full((len(words) + 1, width), -1, np.int32)  # Last row: a miss.
    for r, ids in enumerate(words.values()):
      rows[r, : len(ids)] = ids
    self._word_rows = _string_table(list(words), np.arange(len(words), dtype=np.int32), len(words))
    self._word_ids = tf.constant(rows)

  def merge(self, pieces: tf.Tensor) -> tf.Tensor:
    """pieces: [P] strings -> [P, M] int32 ids of each piece's BPE, padded with -1 (M: longest piece in bytes)."""
    symbols = tf.ragged.map_flat_values(self._byte_symbols.lookup, tf.strings.bytes_split(pieces))
    lengths = symbols.row_lengths()
    s = symbols.to_tensor(default_value="")
    width = tf.shape(s)[1]
    column = tf.range(width, dtype=tf.int64)[None]
    s = tf.where(column == lengths[:, None] - 1, tf.strings.join([s, "</w>"]), s)

    def step(s, _):
      left, right = s[:, :-1], s[:, 1:]
      ranks = tf.where((left != "") & (right != ""), self._ranks.lookup(tf.strings.join([left, right], " ")),
                       _NO_RANK)
      best = tf.reduce_min(tf.concat([ranks, tf.fill([tf.shape(s)[0], 1], _NO_RANK)], 1), axis=1)
      pair_column = tf.range(width - 1)[None]
      pos = tf.reduce_min(tf.where(ranks == best[:, None], pair_column, width), axis=1)  # Leftmost.
      merging = best < _NO_RANK
      pos = tf.where(merging, pos, 0)
      j = tf.range(width)[None]
      source = tf.where(j > pos[:, None], j + 1, j)
      shifted = tf.where(source < width, tf.gather(s, tf.minimum(source, width - 1), batch_dims=1), "")
      joined = tf.strings.join([tf.gather(s, pos, batch_dims=1), tf.gather(s, tf.minimum(pos + 1, width - 1),
                                                                           batch_dims=1)])
      merged = tf.where(j == pos[:, None], joined[:, None], shifted)
      return tf.where(merging[:, None], merged, s), tf.reduce_any(merging)

    s, _ = tf.while_loop(lambda s, more: more, step, (s, tf.size(s) > 0), maximum_iterations=width)
    return self._symbol_ids.lookup(s)

  def encode(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """texts: [N] plain captions -> ragged [N, (ids)] int32: CLIP-cleaned, split, BPE (no SOT/EOT)."""
    pieces = tf.strings.split(tf.strings.regex_replace(tf.strings.lower(texts), PLAIN_PIECE, r" \0 "))  # [N, (P)]
    flat = pieces.flat_values
    rows = self._word_rows.lookup(flat)
    missing = rows == tf.shape(self._word_ids)[0] - 1
    known = tf.gather(self._word_ids, rows)  # [P, K]

    def with_merged():
      merged = self.merge(tf.boolean_mask(flat, missing))  # [P_missing, M]
      width = tf.maximum(tf.shape(known)[1], tf.shape(merged)[1])
      padded = tf.pad(known, [[0, 0], [0, width - tf.shape(known)[1]]], constant_values=-1)
      merged = tf.pad(merged, [[0, 0], [0, width - tf.shape(merged)[1]]], constant_values=-1)
      return tf.tensor_scatter_nd_update(padded, tf.where(missing), merged)

    ids = tf.cond(tf.reduce_any(missing), with_merged, lambda: known)  # [P, W], -1 padded.
    used = ids >= 0
    per_caption = tf.math.unsorted_segment_sum(tf.reduce_sum(tf.cast(used, tf.int64), 1), pieces.value_rowids(),
                                               pieces.nrows())
    return tf.RaggedTensor.from_row_lengths(tf.boolean_mask(ids, used), per_caption, validate=False)


def tokenize(texts: tf.Tensor, bpe: GraphBpe, python_tokenize: Callable[[np.ndarray], np.ndarray], sot_id: int,
             eot_id: int, pad_id: int, context_length: int) -> tf.Tensor:
  """texts: [N] strings -> [N, L] int32 [SOT] ids [EOT] [PAD]...: plain captions in TF ops, the others (if any)
  through `python_tokenize` ([n] bytes -> [n, L] int32) in a `tf.numpy_function`."""
  plain = tf.strings.regex_full_match(texts, PLAIN_CAPTION)
  plain_rows, other_rows = tf.where(plain)[:, 0], tf.where(~plain)[:, 0]
  framed = frame(bpe.encode(tf.gather(texts, plain_rows)), sot_id, eot_id, pad_id, context_length)

  def in_python():
    ids = tf.numpy_function(python_tokenize, [tf.gather(texts, other_rows)], tf.int32, stateful=False)
    return tf.reshape(ids, [-1, context_length])

  others = tf.cond(tf.size(other_rows) > 0, in_python, lambda: tf.zeros([0, context_length], tf.int32))
  return tf.dynamic_stitch([tf.cast(plain_rows, tf.int32), tf.cast(other_rows, tf.int32)], [framed, others])
