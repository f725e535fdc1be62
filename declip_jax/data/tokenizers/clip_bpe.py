"""The CLIP byte-level BPE tokenizer, for parity with the official DeCLIP models and OpenAI/open_clip weights.

Reads the merges file OpenAI released with CLIP (`bpe_simple_vocab_16e6.txt.gz`: a header line, then one merge
"a b" per line; CLIP uses the first 48,894). Vocabulary: the 256 byte symbols, the same with the end-of-word
mark "</w>", one token per merge, then "<|startoftext|>" and "<|endoftext|>": 49,408 ids. Text is cleaned as CLIP
does (ftfy when installed, HTML entities unescaped, whitespace collapsed, lower-cased), split by CLIP's pattern
and each piece BPE-merged by merge rank.

Id layouts (docs/design.md §4), vocabulary 49,409 in both:
- `openai`: SOT 49406, EOT 49407 (OpenAI's ids), [MASK] 49408 appended.
- `declip`: [MASK] 49406, SOT 49407, EOT 49408 (the official DeCLIP models).
Padding is id 0, as in CLIP. Sequences are [SOT] tokens [EOT] [PAD]..., truncated so SOT and EOT survive.

`encode` is the reference, in Python (with a per-piece cache). `tokenize`, used in tf.data, gives the same ids
in TF ops for plain-ASCII captions (`clip_bpe_graph`) and calls the Python one only for the others.
"""

import functools
import html
from typing import Optional, Sequence

import numpy as np
import regex
import tensorflow as tf

from declip_jax import token_ids
from declip_jax.data.tokenizers import clip_bpe_graph

try:
  import ftfy  # pylint: disable=g-import-not-at-top
except ImportError:  # Optional, as in CLIP: only mojibake repair is lost.
  ftfy = None

OPENAI_NUM_MERGES = 49152 - 256 - 2  # 48,894.
PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_PATTERN = regex.compile(PATTERN, regex.IGNORECASE)


@functools.lru_cache(maxsize=None)
def byte_symbols() -> tuple[str, ...]:
  """The printable character standing for each byte 0..255: printable Latin-1 bytes stand for themselves, the
  others (controls, space, ...) for the characters from U+0100 on, in byte order."""
  printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(
      range(ord("®"), ord("ÿ") + 1))
  symbols, extra = [], 0
  for b in range(256):
    if b in printable:
      symbols.append(chr(b))
    else:
      symbols.append(chr(256 + extra))
      extra += 1
  return tuple(symbols)


def _base_order() -> list[str]:
  """Byte symbols in CLIP's vocabulary order: the printable bytes first (ascending), then the others."""
  symbols = byte_symbols()
  printable = [symbols[b] for b in range(256) if ord(symbols[b]) == b]
  return printable + [symbols[b] for b in range(256) if ord(symbols[b]) != b]


def clean(text: str) -> str:
  """CLIP's text cleaning: ftfy (if installed), HTML unescaped twice, whitespace collapsed, lower-cased."""
  if ftfy is not None:
    text = ftfy.fix_text(text)
  text = html.unescape(html.unescape(text))
  return " ".join(text.split()).lower()


class ClipBpeTokenizer(token_ids.WithTokenIds):
  """CLIP BPE with a `declip` or `openai` id layout; same interface as `word.WordTokenizer`."""

  def __init__(self, merges: Sequence[tuple[str, str]], context_length: int, layout: str = "declip"):
    self.token_ids = ids = token_ids.clip_bpe_ids(len(merges), layout)
    base = _base_order()
    vocab = base + [s + "</w>" for s in base] + ["".join(m) for m in merges]
    self.layout = layout
    self.context_length = context_length
    self.merges = [tuple(m) for m in merges]
    self._ranks = {m: i for i, m in enumerate(self.merges)}
    self.symbol_ids = self._ids = {token: i for i, token in enumerate(vocab)}
    assert len(vocab) == ids.vocab_size - 3, "the byte symbols are not 2 x token_ids.BPE_NUM_BYTE_SYMBOLS"
    self._tokens = vocab + [None] * 3
    self._tokens[self.sot_id], self._tokens[self.eot_id] = "<|startoftext|>", "<|endoftext|>"
    self._tokens[self.mask_id] = "<|mask|>"
    self._cache: dict[str, list[int]] = {}
    self.graph_bpe = clip_bpe_graph.GraphBpe(merges, self._ids, byte_symbols(), self._whole_words())

  @classmethod
  def from_file(cls, path: str, context_length: int, layout: str = "declip",
                num_merges: Optional[int] = OPENAI_NUM_MERGES) -> "ClipBpeTokenizer":
    """Reads a merges file (.txt or .txt.gz; first line is a header); keeps the first `num_merges` (None: all)."""
    merges = token_ids.read_bpe_merges(path)
    return cls(merges[:num_merges] if num_merges else merges, context_length, layout)

  def _whole_words(self) -> dict[str, list[int]]:
    """The vocabulary's word-end tokens that are whole plain-ASCII pieces, with their BPE ids."""
    byte_of = {s: b for b, s in enumerate(byte_symbols())}
    words = {}
    for token in self._tokens:
      if token is None or not token.endswith("</w>"):
        continue
      text = bytes(byte_of[c] for c in token[:-4]).decode("latin-1")
      if regex.fullmatch(clip_bpe_graph.PLAIN_CAPTION, text) and _PATTERN.findall(text) == [text]:
        words[text] = self._bpe(text)
    return words

  def _bpe(self, piece: str) -> list[int]:
    """Ids of one pre-tokenized piece: its byte symbols, last one with "</w>", merged by rank."""
    if piece in self._cache:
      return self._cache[piece]
    symbols = [byte_symbols()[b] for b in piece.encode("utf-8")]
    symbols[-1] += "</w>"
    while len(symbols) > 1:
      pairs = [(self._ranks.get((a, b), len(self._ranks)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
      rank, _ = min(pairs)
      if rank == len(self._ranks):
        break
      pair = next((a, b) for a, b in zip(symbols, symbols[1:]) if self._ranks.get((a, b)) == rank)
      merged, i = [], 0
      while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    ids = [self._ids[s] for s in symbols]
    if len(self._cache) < 1_000_000:
      self._cache[piece] = ids
    return ids

  def encode(self, text: str) -> list[int]:
    """Token ids of a text, without SOT/EOT."""
    return [i for piece in _PATTERN.findall(clean(text)) for i in self._bpe(piece)]

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ids (special and padding ids dropped)."""
    byte_of = {s: b for b, s in enumerate(byte_symbols())}
    skip = set(self.special_ids)
    data = bytearray()
    for i in ids:
      if i not in skip:
        token = self._tokens[i]
        word_end = token.endswith("</w>")
        data.extend(byte_of[c] for c in (token[:-4] if word_end else token))
        data.extend(b" " if word_end else b"")
    return data.decode("utf-8", errors="replace").strip()

  def tokenize_numpy(self, texts: Sequence[str]) -> np.ndarray:
    """N strings -> [N, L] int32: [SOT] ids [EOT] [PAD]..."""
    out = np.full((len(texts), self.context_length), self.pad_id, np.int32)
    for row, text in enumerate(texts):
      text = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
      ids = [self.sot_id] + self.encode(text)[: self.context_length - 2] + [self.eot_id]
      out[row, : len(ids)] = ids
    return out

  def tokenize(self, texts: tf.Tensor) -> tf.Tensor:
    """texts: [N] or scalar string -> [N, L] or [L] int32, the ids of `tokenize_numpy` (usable in tf.data maps;
    Python runs only for captions that are not plain ASCII, see clip_bpe_graph)."""
    texts = tf.convert_to_tensor(texts)
    scalar = texts.shape.rank == 0
    ids = clip_bpe_graph.tokenize(tf.reshape(texts, [-1]), self.graph_bpe, lambda t: self.tokenize_numpy(list(t)),
                                  self.sot_id, self.eot_id, self.pad_id, self.context_length)
    return ids[0] if scalar else ids
