"""Text views in TF ops: EDA augmentation and MLM masking, stateless and seeded per example (docs/design.md §2,
§6)."""

from typing import Optional

import tensorflow as tf

IGNORE_LABEL = -100


def synonym_table(synonyms: dict[str, tuple[str, ...]]) -> tf.lookup.StaticHashTable:
  """word -> 'alt1|alt2|...' (empty string for words without synonyms)."""
  keys = list(synonyms)
  values = ["|".join(synonyms[k]) for k in keys]
  return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value="")


def load_synonyms_tsv(text: str) -> dict[str, tuple[str, ...]]:
  """Parses 'word<TAB>alt1|alt2' lines."""
  table = {}
  for line in text.splitlines():
    if "\t" in line:
      word, alts = line.split("\t", 1)
      table[word.strip().lower()] = tuple(a.strip() for a in alts.split("|") if a.strip())
  return table


def wordnet_synonyms() -> dict[str, tuple[str, ...]]:
  """Single-word WordNet synonyms of every single-word lemma ({} when nltk or its wordnet corpus is missing)."""
  try:
    from nltk.corpus import wordnet  # pylint: disable=g-import-not-at-top
    lemmas = list(wordnet.all_lemma_names())
  except (ImportError, LookupError, OSError):
    return {}
  table = {}
  for word in lemmas:
    if "_" in word:
      continue
    alternatives = {name.lower() for synset in wordnet.synsets(word) for name in synset.lemma_names()
                    if "_" not in name and name.lower() != word}
    if alternatives:
      table[word] = tuple(sorted(alternatives))
  return table


def _uniform(seed: tf.Tensor, shape=()) -> tf.Tensor:
  return tf.random.stateless_uniform(shape, seed=seed)


def _randint(seed: tf.Tensor, maxval: tf.Tensor) -> tf.Tensor:
  """Uniform int in [0, maxval) (maxval >= 1)."""
  maxval = tf.cast(maxval, tf.int32)
  return tf.minimum(tf.cast(_uniform(seed) * tf.cast(maxval, tf.float32), tf.int32), maxval - 1)


def synonym_replacement(words: tf.Tensor, seed: tf.Tensor, table: tf.lookup.StaticHashTable) -> tf.Tensor:
  """Replaces one random word that has synonyms by one of them (n=1); words [n] string -> [n]."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  alternatives = table.lookup(words)
  candidates = tf.where(tf.strings.length(alternatives) > 0)[:, 0]

  def replace():
    pick = candidates[_randint(seeds[0], tf.size(candidates))]
    options = tf.strings.split(alternatives[pick], "|")
    choice = options[_randint(seeds[1], tf.size(options))]
    return tf.tensor_scatter_nd_update(words, [[pick]], [choice])

  return tf.cond(tf.size(candidates) > 0, replace, lambda: words)


def random_swap(words: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Swaps two random positions (n=1); unchanged for fewer than two words."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  n = tf.size(words)

  def swap():
    i = _randint(seeds[0], n)
    j = (i + 1 + _randint(seeds[1], n - 1)) % n  # A position other than i.
    return tf.tensor_scatter_nd_update(words, [[i], [j]], tf.stack([words[j], words[i]]))

  return tf.cond(n >= 2, swap, lambda: words)


def random_deletion(words: tf.Tensor, seed: tf.Tensor, p: float = 0.1) -> tf.Tensor:
  """Drops each word with probability p; keeps one random word if all would go."""
  seeds = tf.random.experimental.stateless_split(seed, 2)
  n = tf.size(words)
  keep = _uniform(seeds[0], [n]) > p
  fallback = tf.one_hot(_randint(seeds[1], tf.maximum(n, 1)), tf.maximum(n, 1), on_value=True, off_value=False)[:n]
  keep = tf.cond(tf.reduce_any(keep), lambda: keep, lambda: fallback)
  return tf.boolean_mask(words, keep)


def eda(caption: tf.Tensor, seed: tf.Tensor, table: Optional[tf.lookup.StaticHashTable],
        deletion_prob: float = 0.1) -> tf.Tensor:
  """One EDA op chosen uniformly per caption: synonym replacement (when a table is given), swap, deletion.

  Args:
    caption: scalar string.
    seed: [2] int stateless seed.
    table: synonym table or None (then only swap and deletion are drawn from).
  Returns:
    The augmented caption, words joined by single spaces.
  """
  seeds = tf.random.experimental.stateless_split(seed, 2)
  words = tf.strings.split(tf.strings.strip(caption))
  ops = [lambda: random_swap(words, seeds[1]), lambda: random_deletion(words, seeds[1], deletion_prob)]
  if table is not None:
    ops.insert(0, lambda: synonym_replacement(words, seeds[1], table))
  op = _randint(seeds[0], len(ops))
  # Every op on a caption's few words, then the chosen one: the same result as tf.switch_case, without a Case
  # op around the synonym table's (stateful) lookup, which tf.data's symbolic checkpointing warns about at every
  # batch ("FAILED_PRECONDITION: Case is stateful").
  joined = tf.stack([tf.strings.reduce_join(f(), separator=" ") for f in ops])
  return tf.gather(joined, op)


def mlm_draws(seed: tf.Tensor, length: int, vocab_size: int) -> dict[str, tf.Tensor]:
  """The random numbers of `mlm_mask` for one sequence of `length` tokens: `choose`, `replace` [L] float32 in
  [0, 1) and `random_ids` [L] int32 in [0, vocab_size). They depend on the seed alone, not on the tokens, so the
  pipeline draws them per example and masks whole batches (`apply_mlm`)."""
  seeds = tf.random.experimental.stateless_split(seed, 3)
  return {"choose": _uniform(seeds[0], [length]), "replace": _uniform(seeds[1], [length]),
          "random_ids": tf.random.stateless_uniform([length], seeds[2], 0, vocab_size, dtype=tf.int32)}


def apply_mlm(tokens: tf.Tensor, draws: dict[str, tf.Tensor], special_ids: tuple[int, ...], mask_id: int,
              mask_prob: float = 0.15, mask_token_frac: float = 0.8,
              random_token_frac: float = 0.1) -> tuple[tf.Tensor, tf.Tensor]:
  """BERT masking of tokens [..., L] with `mlm_draws` of the same shape; see `mlm_mask`."""
  eligible = tf.reduce_all(tf.not_equal(tokens[..., None], tf.constant(special_ids, tf.int32)), axis=-1)
  chosen = eligible & (draws["choose"] < mask_prob)
  u = draws["replace"]
  replaced = tf.where(u < mask_token_frac, mask_id,
                      tf.where(u < mask_token_frac + random_token_frac, draws["random_ids"], tokens))
  masked = tf.where(chosen, replaced, tokens)
  labels = tf.where(chosen, tokens, IGNORE_LABEL)
  return masked, labels


def mlm_mask(tokens: tf.Tensor, seed: tf.Tensor, special_ids: tuple[int, ...], mask_id: int, vocab_size: int,
             mask_prob: float = 0.15, mask_token_frac: float = 0.8,
             random_token_frac: float = 0.1) -> tuple[tf.Tensor, tf.Tensor]:
  """BERT masking: each non-special token is chosen with mask_prob; chosen -> [MASK] / random id / unchanged.

  Args:
    tokens: [L] int32.
    seed: [2] stateless seed.
    special_ids: ids never chosen (pad, SOT, EOT, mask).
    vocab_size: random replacements are drawn from [0, vocab_size) (official: the whole vocabulary).
  Returns:
    (masked tokens [L] int32, labels [L] int32: the original id where chosen, IGNORE_LABEL elsewhere).
  """
  draws = mlm_draws(seed, tokens.shape[0], vocab_size)
  return apply_mlm(tokens, draws, special_ids, mask_id, mask_prob, mask_token_frac, random_token_frac)
