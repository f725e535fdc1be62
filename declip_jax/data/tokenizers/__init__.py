"""The tokenizers, in-graph TensorFlow: CLIP's byte-level BPE (the recipe's), SentencePiece, and the demos' word
list; `build` makes the one `data.tokenizer` names. Each takes its ids from `declip_jax.token_ids`, so the model,
built from the config alone, and the tokenizer cannot disagree."""

import ml_collections

from declip_jax import builtin_vocabulary
from declip_jax.data.tokenizers import clip_bpe, sentencepiece_model, word

Tokenizer = word.WordTokenizer | clip_bpe.ClipBpeTokenizer | sentencepiece_model.SentencePieceTokenizer


def build(config: ml_collections.ConfigDict) -> Tokenizer:
  """The tokenizer `data.tokenizer` names, reading `data.vocab_path`, with `model.text.context_length`."""
  length, data = config.model.text.context_length, config.data
  if data.tokenizer == "clip_bpe":
    return clip_bpe.ClipBpeTokenizer.from_file(data.vocab_path, length, data.token_layout,
                                                data.bpe_num_merges or None)
  if data.tokenizer == "sentencepiece":
    return sentencepiece_model.SentencePieceTokenizer.from_file(data.vocab_path, length)
  if data.vocab_path:
    return word.WordTokenizer.from_file(data.vocab_path, length)
  return word.WordTokenizer(builtin_vocabulary.vocabulary(), length)
