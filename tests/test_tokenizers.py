"""CLIP BPE (both id layouts) and SentencePiece: ids, round trips, in-graph use, EOT pooling with [MASK] present."""

import gzip
import importlib.util
import os
import random
import string

import numpy as np
import pytest
import tensorflow as tf

from declip_jax import token_ids
from declip_jax.data import text_views, tokenizers, write_tfrecords
from declip_jax.data.tokenizers import clip_bpe, clip_bpe_graph, framing, sentencepiece_model, train_sentencepiece
from declip_jax.models import text as text_model
from tests.tiny_config import tiny_config

# "photo" merges to one token; everything else stays bytes.
MERGES = [("p", "h"), ("ph", "o"), ("t", "o</w>"), ("pho", "to</w>")]


@pytest.fixture(scope="module")
def merges_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("bpe") / "merges.txt.gz"
  path.write_bytes(gzip.compress(("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES)).encode()))
  return str(path)


def test_byte_symbols_cover_every_byte_once():
  symbols = clip_bpe.byte_symbols()
  assert len(set(symbols)) == 256
  assert all(symbols[b] == chr(b) for b in range(ord("!"), ord("~") + 1))
  assert symbols[ord(" ")] == chr(256 + 32)  # Space is the 33rd non-printable byte (0..32).


@pytest.mark.parametrize("layout, sot, eot, mask", [("declip", 517, 518, 516), ("openai", 516, 517, 518)])
def test_ids_of_a_fixed_caption_in_both_layouts(merges_file, layout, sot, eot, mask):
  tok = clip_bpe.ClipBpeTokenizer.from_file(merges_file, context_length=8, layout=layout, num_merges=None)
  assert (tok.sot_id, tok.eot_id, tok.mask_id, tok.vocab_size, tok.pad_id) == (sot, eot, mask, 519, 0)
  a_end = 256 + (ord("a") - ord("!"))  # "a</w>": the second block of byte symbols.
  photo = 512 + 3  # The 4th merge.
  bang_end = 256 + 0  # "!</w>"
  ids = tok.tokenize_numpy(["A  &amp; photo!"])[0]
  amp_end = 256 + (ord("&") - ord("!"))
  np.testing.assert_array_equal(ids, [sot, a_end, amp_end, photo, bang_end, eot, 0, 0])
  long = tok.tokenize_numpy(["photo " * 20])[0]
  assert long[0] == sot and long[-1] == eot and list(long[1:-1]) == [photo] * 6


def test_round_trip_of_any_unicode(merges_file):
  tok = clip_bpe.ClipBpeTokenizer.from_file(merges_file, context_length=77, num_merges=None)
  for text in ["Zürich café, 東京タワー at 42°C!", "emoji 🙂 and\ttabs\n", "PHOTO photo phot"]:
    decoded = tok.decode(tok.tokenize_numpy([text])[0])
    assert decoded.replace(" ", "") == clip_bpe.clean(text).replace(" ", "")


def test_in_graph_tokenization_matches_numpy_and_pools_at_eot_with_masks(merges_file):
  tok = clip_bpe.ClipBpeTokenizer.from_file(merges_file, context_length=16, layout="openai", num_merges=None)
  texts = ["a photo of a photo", "photo photo photo photo", ""]
  ds = tf.data.Dataset.from_tensor_slices(texts).map(tok.tokenize).batch(3)
  ids = next(iter(ds)).numpy()
  np.testing.assert_array_equal(ids, tok.tokenize_numpy(texts))
  masked = np.stack([text_views.mlm_mask(tf.constant(row), tf.constant([1, i], tf.int64), tok.special_ids,
                                         tok.mask_id, tok.vocab_size, 0.9, 1.0, 0.0)[0].numpy()
                     for i, row in enumerate(ids)])
  assert (masked == tok.mask_id).any() and tok.mask_id > tok.eot_id
  np.testing.assert_array_equal(np.asarray(text_model.eot_positions(masked, tok.eot_id)),
                                [list(row).index(tok.eot_id) for row in ids])


def openai_merges_file() -> str:
  """OpenAI's CLIP merges file as open_clip ships it (the interop extra); skips the test without it."""
  spec = importlib.util.find_spec("open_clip")
  if spec is None:
    pytest.skip("open_clip (requirements-interop.txt) ships OpenAI's merges file")
  return os.path.join(os.path.dirname(spec.origin), "bpe_simple_vocab_16e6.txt.gz")


def web_like_captions(count: int, seed: int = 0) -> list[str]:
  """Captions as scraped alt-text comes: words, file names, numbers, contractions, accents, CJK, emoji, HTML
  entities, control characters, random printable noise and very long words."""
  words = ("a photo of the small large red blue green dog cat car tree house person's on in with beach at "
           "sunset xylophonists antidisestablishmentarianism supercalifragilistic IMG_2041.jpg click-to-enlarge "
           "3.5mm 1920x1080 can't WON'T they'll I'd we've you're Café naïve Zürich 東京タワー 😀 🐶🐱 👍🏽 "
           "&amp; &lt;b&gt; &#39; &quot;quoted&quot; &nbsp; R&D 50% $9.99 #hashtag @user http://x.co/a?b=c "
           "<|startoftext|> <|endoftext|> ''s ...!!! \u00e9 tab\there new\nline").split(" ")
  rng = random.Random(seed)
  captions = []
  for _ in range(count):
    parts = [rng.choice(words) for _ in range(rng.randint(0, 18))]
    if rng.random() < 0.2:
      parts.append("".join(rng.choice(string.printable) for _ in range(rng.randint(1, 25))))
    if rng.random() < 0.02:
      parts.append("".join(rng.choice("abcdefghij") for _ in range(rng.randint(40, 120))))
    if rng.random() < 0.05:
      parts.insert(0, "  \t ")
    captions.append(" ".join(parts))
  return captions


def test_graph_bpe_matches_python_on_openai_merges():
  tok = clip_bpe.ClipBpeTokenizer.from_file(openai_merges_file(), context_length=77)
  captions = web_like_captions(3000)
  plain = [bool(tf.strings.regex_full_match(c, clip_bpe_graph.PLAIN_CAPTION)) for c in captions]
  assert 0.1 < np.mean(plain) < 0.9  # Both paths are exercised.
  np.testing.assert_array_equal(tok.tokenize(tf.constant(captions)).numpy(), tok.tokenize_numpy(captions))
  np.testing.assert_array_equal(tok.tokenize(captions[7]).numpy(), tok.tokenize_numpy(captions[7:8])[0])


def test_graph_bpe_merge_loop_matches_python_for_words_outside_the_table():
  tok = clip_bpe.ClipBpeTokenizer.from_file(openai_merges_file(), context_length=77)
  loop_only = clip_bpe_graph.GraphBpe(tok.merges, tok.symbol_ids, clip_bpe.byte_symbols(), words={})
  captions = [c for c in web_like_captions(600, seed=1) if tf.strings.regex_full_match(c, clip_bpe_graph.PLAIN_CAPTION)]
  ids = framing.frame(loop_only.encode(tf.constant(captions)), tok.sot_id, tok.eot_id, tok.pad_id, 77)
  np.testing.assert_array_equal(ids.numpy(), tok.tokenize_numpy(captions))


def test_plain_captions_run_no_python_in_tf_data(merges_file):
  tok = clip_bpe.ClipBpeTokenizer.from_file(merges_file, context_length=16, num_merges=None)
  expected = tok.tokenize_numpy(["A photo, of photos!", "tab\tand\nnewline 42", "", "&amp; photo", "Café"])

  def no_python(texts):
    raise AssertionError(f"Python tokenizer called for {texts}")

  tok.tokenize_numpy = no_python
  plain = tf.data.Dataset.from_tensor_slices(["A photo, of photos!", "tab\tand\nnewline 42", ""]).map(tok.tokenize)
  np.testing.assert_array_equal(np.stack(list(plain.as_numpy_iterator())), expected[:3])
  for other in ("&amp; photo", "Café"):  # Not plain: these do reach Python.
    with pytest.raises(tf.errors.UnknownError, match="Python tokenizer called"):
      next(iter(tf.data.Dataset.from_tensors(other).map(tok.tokenize)))


def test_sentencepiece_trained_on_shards(tmp_path):
  captions = [f"a {c} {s} on a {b} background" for c in ("red", "green", "blue") for s in ("circle", "square")
              for b in ("dark", "light")] * 20
  with tf.io.TFRecordWriter(str(tmp_path / "00000.tfrecord")) as writer:
    for i, caption in enumerate(captions):
      writer.write(write_tfrecords.example(str(i), b"", caption))
  model = train_sentencepiece.train([str(tmp_path / "00000.tfrecord")], str(tmp_path / "sp"), vocab_size=40,
                                    max_captions=1000)
  tok = sentencepiece_model.SentencePieceTokenizer.from_file(model, context_length=12)
  assert (tok.pad_id, tok.unk_id, tok.sot_id, tok.eot_id, tok.mask_id) == (0, 1, 2, 3, 4)
  ids = tok.tokenize_numpy(["a red circle on a dark background", ""])
  assert ids.shape == (2, 12) and ids[0, 0] == 2 and 3 in ids[0] and list(ids[1, :3]) == [2, 3, 0]
  assert tok.decode(ids[0]) == "a red circle on a dark background"[: len(tok.decode(ids[0]))]


def test_build_tokenizer_reads_the_configured_file(merges_file):
  config = tiny_config()
  config.data.tokenizer, config.data.vocab_path, config.data.bpe_num_merges = "clip_bpe", merges_file, 0
  tok = tokenizers.build(config)
  assert isinstance(tok, clip_bpe.ClipBpeTokenizer) and tok.layout == "declip" and tok.vocab_size == 519


def test_token_ids_from_the_config_equal_the_built_tokenizers(merges_file, tmp_path):
  """The TensorFlow-free ids the model and step are built with (token_ids.from_config) are the tokenizer's."""
  words = tmp_path / "words.txt"
  words.write_text("Red\nred\n\nblue\ncircle\n")
  captions = [f"a {c} {s}" for c in ("red", "green", "blue") for s in ("circle", "square", "ring")] * 30
  with tf.io.TFRecordWriter(str(tmp_path / "00000.tfrecord")) as writer:
    for i, caption in enumerate(captions):
      writer.write(write_tfrecords.example(str(i), b"", caption))
  sp_model = train_sentencepiece.train([str(tmp_path / "00000.tfrecord")], str(tmp_path / "sp"), vocab_size=30,
                                       max_captions=1000)
  cases = [("word", "", "declip", 0), ("word", str(words), "declip", 0), ("clip_bpe", merges_file, "declip", 0),
           ("clip_bpe", merges_file, "openai", 0), ("clip_bpe", merges_file, "openai", 2),
           ("sentencepiece", sp_model, "declip", 0)]
  for tokenizer, path, layout, num_merges in cases:
    config = tiny_config()
    config.data.tokenizer, config.data.vocab_path = tokenizer, path
    config.data.token_layout, config.data.bpe_num_merges = layout, num_merges
    built = tokenizers.build(config)
    ids = token_ids.from_config(config)
    assert ids == built.token_ids, (tokenizer, path, layout)
    assert (ids.vocab_size, ids.pad_id, ids.sot_id, ids.eot_id, ids.mask_id, ids.unk_id) == (
        built.vocab_size, built.pad_id, built.sot_id, built.eot_id, built.mask_id, built.unk_id)
