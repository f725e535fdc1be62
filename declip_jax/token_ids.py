"""The token ids the model and the train step need, derived from the config without building a tokenizer.

Building the model and the jitted step needs only the vocabulary size and the special ids; the tokenizers
themselves (in-graph TensorFlow, `declip_jax/data`) are the input pipeline's. Each tokenizer takes its ids from
the functions here, so the two cannot disagree, and `from_config` gives the same ids on a machine without
TensorFlow (an accelerator host running the step on synthetic batches, an AOT compile).
"""

import dataclasses
import gzip
from typing import Iterable, Optional

import ml_collections
from etils import epath

from declip_jax import builtin_vocabulary

# clip_bpe: CLIP's first 48,894 merges, 256 byte symbols with and without "</w>", SOT and EOT (49,408 ids).
BPE_NUM_BYTE_SYMBOLS = 256
SENTENCEPIECE_MASK_PIECE = "<mask>"  # The [MASK] piece a sentencepiece model may define.


@dataclasses.dataclass(frozen=True)
class TokenIds:
  """Vocabulary size and special ids of a tokenizer (unk_id is None where the tokenizer has none)."""

  vocab_size: int
  pad_id: int
  mask_id: int
  sot_id: int
  eot_id: int
  unk_id: Optional[int]

  @property
  def special_ids(self) -> tuple[int, ...]:
    """Ids MLM never chooses: pad, SOT, EOT, mask."""
    return (self.pad_id, self.sot_id, self.eot_id, self.mask_id)


class WithTokenIds:
  """A tokenizer's `vocab_size`, `pad_id`, `mask_id`, `sot_id`, `eot_id`, `unk_id` and `special_ids`, read from
  its `token_ids` (set in its constructor)."""

  token_ids: TokenIds

  vocab_size = property(lambda self: self.token_ids.vocab_size)
  pad_id = property(lambda self: self.token_ids.pad_id)
  mask_id = property(lambda self: self.token_ids.mask_id)
  sot_id = property(lambda self: self.token_ids.sot_id)
  eot_id = property(lambda self: self.token_ids.eot_id)
  unk_id = property(lambda self: self.token_ids.unk_id)
  special_ids = property(lambda self: self.token_ids.special_ids, doc="Ids MLM never chooses: pad, SOT, EOT, mask.")


def normalized_words(words: Iterable[str]) -> list[str]:
  """A word tokenizer's vocabulary: stripped, lower-cased, empty lines and repeats dropped, order kept."""
  return list(dict.fromkeys(w.strip().lower() for w in words if w.strip()))


def word_ids(num_words: int) -> TokenIds:
  """`data.tokenizer=word`: 0 [PAD], 1 [UNK], the words, then [MASK], [SOT], [EOT]."""
  mask_id = 2 + num_words
  return TokenIds(vocab_size=mask_id + 3, pad_id=0, mask_id=mask_id, sot_id=mask_id + 1, eot_id=mask_id + 2,
                  unk_id=1)


def clip_bpe_ids(num_merges: int, layout: str) -> TokenIds:
  """`data.tokenizer=clip_bpe`: 512 byte symbols, one token per merge, then the layout's three special ids
  (`openai`: SOT, EOT, [MASK]; `declip`: [MASK], SOT, EOT); padding is 0."""
  if layout not in ("declip", "openai"):
    raise ValueError(f"unknown token layout {layout!r}; use 'declip' or 'openai'.")
  first = 2 * BPE_NUM_BYTE_SYMBOLS + num_merges
  if layout == "openai":
    sot, eot, mask = first, first + 1, first + 2
  else:
    mask, sot, eot = first, first + 1, first + 2
  return TokenIds(vocab_size=first + 3, pad_id=0, mask_id=mask, sot_id=sot, eot_id=eot, unk_id=None)


def read_bpe_merges(path: str) -> list[tuple[str, str]]:
  """A CLIP merges file (.txt or .txt.gz; the first line is a header) -> its merges in rank order."""
  data = epath.Path(path).read_bytes()
  text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8")
  return [tuple(line.split()) for line in text.split("\n")[1:] if len(line.split()) == 2]


def write_bpe_merges(path: str, merges: Iterable[tuple[str, str]]) -> None:
  """Writes merges (in rank order) as a gzipped CLIP merges file that `read_bpe_merges` and open_clip read (a
  "#version: 0.2" header, one "a b" merge a line; no timestamp, so the same merges give the same bytes)."""
  text = "\n".join(["#version: 0.2"] + [" ".join(m) for m in merges])
  epath.Path(path).write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))


def sentencepiece_ids(processor) -> TokenIds:
  """`data.tokenizer=sentencepiece`: the model's own pieces, then whatever of [PAD], [MASK], [SOT], [EOT] the
  model does not define (processor: a `sentencepiece.SentencePieceProcessor`)."""
  size = processor.get_piece_size()
  extra = iter(range(size, size + 4))
  pad = processor.pad_id() if processor.pad_id() >= 0 else next(extra)
  mask = processor.piece_to_id(SENTENCEPIECE_MASK_PIECE)
  mask = mask if mask != processor.unk_id() else next(extra)
  sot = processor.bos_id() if processor.bos_id() >= 0 else next(extra)
  eot = processor.eos_id() if processor.eos_id() >= 0 else next(extra)
  return TokenIds(vocab_size=max(size, pad + 1, mask + 1, sot + 1, eot + 1), pad_id=pad, mask_id=mask,
                  sot_id=sot, eot_id=eot, unk_id=processor.unk_id())


def from_config(config: ml_collections.ConfigDict) -> TokenIds:
  """The ids of the tokenizer `data.tokenizer` names, as `tokenizers.build(config)` would build it.

  clip_bpe with `data.bpe_num_merges` > 0 needs no file; with 0 (all merges) it counts those in
  `data.vocab_path`. sentencepiece reads its model (the sentencepiece library, not TensorFlow); word reads
  `data.vocab_path`, or counts the built-in data's vocabulary.
  """
  data = config.data
  if data.tokenizer == "clip_bpe":
    num_merges = data.bpe_num_merges or len(read_bpe_merges(data.vocab_path))
    return clip_bpe_ids(num_merges, data.token_layout)
  if data.tokenizer == "sentencepiece":
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top  (only for this tokenizer)
    return sentencepiece_ids(spm.SentencePieceProcessor(model_proto=epath.Path(data.vocab_path).read_bytes()))
  if data.tokenizer != "word":
    raise ValueError(f"unknown data.tokenizer {data.tokenizer!r}; use 'clip_bpe', 'sentencepiece' or 'word'.")
  if data.vocab_path:
    return word_ids(len(normalized_words(epath.Path(data.vocab_path).read_text().splitlines())))
  return word_ids(len(normalized_words(builtin_vocabulary.vocabulary())))
