"""TFRecord shards: the writer command's layout, every image format, bad records skipped/repaired and counted,
disjoint per-process files, epoch coverage, and iterator positions that resume batch for batch."""

import io
import json
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from declip_jax import config as config_lib
from declip_jax.data import caption_files, pipeline, record_stream, tokenizers, write_tfrecords
from declip_jax.data.sources import tfrecord as tfrecord_source
from tests import pipeline_checks
from tests.tiny_config import tiny_config

COLOURS = ["red", "green", "blue", "yellow"]


def _image_bytes(kind: str, rng: np.random.Generator) -> bytes:
  """Encoded image bytes of one of the formats web data holds."""
  h, w = rng.integers(20, 60, size=2)
  pixels = rng.integers(0, 256, size=(h, w, 4), dtype=np.uint8)
  buffer = io.BytesIO()
  if kind == "jpeg":
    Image.fromarray(pixels[..., :3]).save(buffer, "JPEG")
  elif kind == "png_rgba":
    Image.fromarray(pixels).save(buffer, "PNG")
  elif kind == "png_grey":
    Image.fromarray(pixels[..., 0]).save(buffer, "PNG")
  elif kind == "jpeg_cmyk":
    Image.fromarray(pixels).convert("CMYK").save(buffer, "JPEG")
  elif kind == "png_16bit":
    Image.fromarray(pixels[..., 0].astype(np.uint16) * 257).save(buffer, "PNG")
  elif kind == "gif":
    Image.fromarray(pixels[..., :3]).convert("P").save(buffer, "GIF")
  return buffer.getvalue()


FORMATS = ("jpeg", "png_rgba", "png_grey", "jpeg_cmyk", "png_16bit", "gif")


def decompression_bomb(kind: str, rng: np.random.Generator, side: int = 30_000) -> bytes:
  """A small valid image whose header is rewritten to declare side x side pixels (checksums kept valid)."""
  data = bytearray(_image_bytes("png_rgba" if kind == "png" else "jpeg", rng))
  if kind == "png":
    data[16:24] = struct.pack(">II", side, side)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)
  sof = next(i for i in range(2, len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
  data[sof + 5: sof + 9] = struct.pack(">HH", side, side)
  return bytes(data)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """60 good records (10 of each format) written by the writer command into 3 shards, plus a shard of bad
  records: 3 undecodable images, 2 empty captions, 1 whitespace caption, 2 invalid UTF-8, 1 long caption, and a
  PNG and a JPEG that declare 30,000 x 30,000 pixels."""
  root = tmp_path_factory.mktemp("shards")
  images, rng = root / "images", np.random.default_rng(0)
  images.mkdir()
  rows = []
  for i in range(60):
    kind = FORMATS[i % len(FORMATS)]
    (images / f"{i}.img").write_bytes(_image_bytes(kind, rng))
    rows.append({"image": f"{i}.img", "caption": f"a {COLOURS[i % 4]} photo number {i}"})
  rows.append({"image": "missing.jpg", "caption": "never written"})
  captions = root / "captions.jsonl"
  captions.write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = root / "out"
  result = write_tfrecords.write_shards(str(images), caption_files.read_rows(str(captions), "image", "caption"),
                                        str(out), shard_size=20, vocab_size=100)
  assert result == {"records": 60, "shards": 3, "missing_images": ["missing.jpg"]}
  good = _image_bytes("jpeg", rng)
  bad = [(b"not an image", b"undecodable one"), (b"", b"undecodable two"), (good[: len(good) // 4], b"cut short"),
         (good, b""), (good, b"   \n\t "), (good, b"caf\xe9 bad utf8"), (good, b"\xff\xfe bad too"),
         (good, b"long " * 400), (decompression_bomb("png", rng), b"png bomb"),
         (decompression_bomb("jpeg", rng), b"jpeg bomb")]
  with tf.io.TFRecordWriter(str(out / "00003.tfrecord")) as writer:
    for i, (image, caption) in enumerate(bad):
      writer.write(write_tfrecords.example(f"bad{i}", image, caption))
  return out


def tfrecord_config(files: str, vocab: str):
  c = tiny_config()
  c.data.source = "tfrecord"
  c.data.tfrecord.files = files
  c.data.vocab_path = vocab
  c.data.shuffle_window = 8
  c.data.tfrecord.cycle_length = 2
  c.data.max_caption_chars = 200
  c.model.text.vocab_size = 80  # The shards' vocabulary: 67 words + 5 special ids.
  c.evals = {"retrieval": config_lib.eval_spec("retrieval", "heldout")}  # On data.tfrecord.eval_files, if set.
  return c


def _examples(files, config, process_index=0, process_count=1):
  return record_stream.examples(files, tfrecord_source.example_parser(config.data.tfrecord), config.data.tfrecord,
                                  config.data, config.train.seed, process_index, process_count)


BAD_KEYS = {"bad0": "skipped_undecodable_image", "bad1": "skipped_undecodable_image",
            "bad2": "skipped_undecodable_image", "bad3": "skipped_empty_caption", "bad4": "skipped_empty_caption",
            "bad5": "repaired_invalid_utf8_caption", "bad6": "repaired_invalid_utf8_caption",
            "bad7": "truncated_long_caption", "bad8": "skipped_oversized_image",
            "bad9": "skipped_oversized_image"}


def test_bad_records_are_skipped_or_repaired_and_counted_exactly(shards):
  """Against a reference that walks the same raw record order and classifies each record by its key."""
  config = tfrecord_config(str(shards / "*.tfrecord"), str(shards / "vocab.txt"))
  files = record_stream.list_files(config.data.tfrecord.files)
  n = 200  # About three epochs of the 63 usable records.
  raw = record_stream.raw_records(files, config.data.tfrecord, config.train.seed, config.data.shuffle_window, 0, 1)
  keys = ((tf.train.Example.FromString(r).features.feature["key"].bytes_list.value[0].decode(), {})
          for r in raw.as_numpy_iterator())
  expected_keys, expected_counts = pipeline_checks.expected_bad_record_counts(keys, BAD_KEYS, n)
  got = list(_examples(files, config).take(n).as_numpy_iterator())
  np.testing.assert_array_equal([e["bad_records"] for e in got], expected_counts)
  captions = [e["caption"].decode() for e in got]
  for key, caption in zip(expected_keys, captions):
    if key == "bad5":
      assert caption == "caf\ufffd bad utf8"
    elif key == "bad6":
      assert caption == "\ufffd\ufffd bad too"
    elif key == "bad7":
      assert caption.startswith("long") and len(caption) == config.data.max_caption_chars
    else:
      assert caption == f"a {COLOURS[int(key) % 20 % 4]} photo number {int(key[:5]) * 20 + int(key[5:])}"
  for e in got:
    assert e["image"].ndim == 3 and e["image"].shape[2] == 3 and e["image"].dtype == np.uint8


def test_decoding_in_the_graph_gives_the_same_examples_and_still_stops_bombs(shards):
  config = tfrecord_config(str(shards / "0000[012].tfrecord"), str(shards / "vocab.txt"))
  files = record_stream.list_files(config.data.tfrecord.files)
  with_python = list(_examples(files, config).take(70).as_numpy_iterator())
  config.data.skip_undecodable_images = False
  in_graph = list(_examples(files, config).take(70).as_numpy_iterator())
  for a, b in zip(with_python, in_graph):
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["caption"] == b["caption"] and (a["bad_records"] == b["bad_records"]).all()
  rng = np.random.default_rng(0)
  for kind in ("png", "jpeg"):
    _, status = record_stream._decode_in_graph(tf.constant(decompression_bomb(kind, rng)), tf.constant(True),
                                                 config.data.max_image_pixels)
    assert int(status) == record_stream.OVERSIZED
  with pytest.raises(tf.errors.InvalidArgumentError):
    record_stream._decode_in_graph(tf.constant(b"not an image"), tf.constant(True), config.data.max_image_pixels)


def test_one_epoch_holds_every_usable_record_once(shards):
  config = tfrecord_config(str(shards / "*.tfrecord"), str(shards / "vocab.txt"))
  config.data.shuffle_window, config.data.tfrecord.cycle_length = 1, 1
  got = list(_examples(record_stream.list_files(config.data.tfrecord.files), config).take(63).as_numpy_iterator())
  captions = sorted(e["caption"].decode() for e in got)
  assert [c for c in captions if c.startswith("a ")] == sorted(f"a {COLOURS[i % 4]} photo number {i}"
                                                                for i in range(60))
  assert len(captions) == 63


def test_shuffle_permutes_whole_windows(shards):
  config = tfrecord_config(str(shards / "0000[012].tfrecord"), str(shards / "vocab.txt"))
  files = record_stream.list_files(config.data.tfrecord.files)
  take = lambda window: [r for r in record_stream.raw_records(files, config.data.tfrecord, 0, window, 0, 1)
                         .take(64).as_numpy_iterator()]
  plain, shuffled = take(1), take(16)
  assert plain != shuffled
  for w in range(4):
    assert sorted(plain[16 * w: 16 * (w + 1)]) == sorted(shuffled[16 * w: 16 * (w + 1)])


def test_processes_read_disjoint_files(shards):
  config = tfrecord_config(str(shards / "0000[012].tfrecord"), str(shards / "vocab.txt"))
  config.data.shuffle_window, config.data.tfrecord.cycle_length = 1, 1
  files = record_stream.list_files(config.data.tfrecord.files)
  per_process = [{e["caption"] for e in _examples(files, config, p, 3).take(20).as_numpy_iterator()}
                 for p in range(3)]
  assert all(len(s) == 20 for s in per_process)
  assert not (per_process[0] & per_process[1]) and not (per_process[1] & per_process[2])
  assert len(set.union(*per_process)) == 60


def test_train_batches_resume_batch_for_batch(shards):
  config = tfrecord_config(str(shards / "*.tfrecord"), str(shards / "vocab.txt"))
  tokenizer = tokenizers.build(config)
  batches = pipeline_checks.assert_resumes_batch_for_batch(config, tokenizer, consumed=5, compared=4)
  assert "bad_records" in batches[0]
  skipped = pipeline.TrainBatches(pipeline.train_dataset(config, tokenizer, start_step=5))
  np.testing.assert_array_equal(next(skipped)["img1"], batches[5]["img1"])


@pytest.mark.parametrize("process_index", [0, 1])
def test_each_process_resumes_its_own_rows(shards, process_index):
  config = tfrecord_config(str(shards / "*.tfrecord"), str(shards / "vocab.txt"))
  tokenizer = tokenizers.build(config)
  batches = pipeline_checks.assert_resumes_batch_for_batch(config, tokenizer, consumed=3, compared=2,
                                                           process_index=process_index, process_count=2)
  assert batches[0]["img1"].shape[0] == config.train.batch_size // 2


def test_no_matching_files_names_the_pattern(shards):
  with pytest.raises(record_stream.DataSourceError, match="nothing_here"):
    record_stream.list_files(str(shards / "nothing_here*.tfrecord"))


def test_wrong_feature_names_are_explained(shards):
  config = tfrecord_config(str(shards / "*.tfrecord"), str(shards / "vocab.txt"))
  config.data.tfrecord.image_key = "image"
  with pytest.raises(record_stream.DataSourceError, match=r"'image'.*\['jpg', 'key', 'txt'\]"):
    tfrecord_source.check_usable(record_stream.list_files(config.data.tfrecord.files), config.data.tfrecord,
                                 config.data)


def test_tfrecord_source_needs_a_vocabulary_for_the_word_tokenizer(shards):
  config = tfrecord_config(str(shards / "*.tfrecord"), "")
  with pytest.raises(config_lib.ConfigError, match="data.vocab_path"):
    config_lib.validate(config)


def test_training_on_shards_resumes_exactly_and_reports_bad_records(shards, tmp_path):
  """3 steps, stop, resume to 6 (from the iterator position saved with the checkpoint) == 6 steps straight."""
  import jax  # pylint: disable=g-import-not-at-top
  from declip_jax import train  # pylint: disable=g-import-not-at-top
  from declip_jax.training import checkpointing, train_setup
  config = tfrecord_config(str(shards / "*.tfrecord"), str(shards / "vocab.txt"))
  config.train.num_steps = 6
  config.data.tfrecord.eval_files = str(shards / "00000.tfrecord")
  straight = train.run(config, str(tmp_path / "straight"))
  config.train.num_steps = 3
  train.run(config, str(tmp_path / "resumed"))
  config.train.num_steps = 6
  resumed = train.run(config, str(tmp_path / "resumed"))
  assert straight["eval"] == resumed["eval"] and set(resumed["eval"]) == {"retrieval"}
  assert resumed["eval"]["retrieval"]["dataset"].startswith("tfrecord:")
  setup = train_setup.Setup(config)
  states = []
  for name in ("straight", "resumed"):
    ckpt = checkpointing.Checkpointer(str(tmp_path / name), keep=3, async_save=False)
    state, meta = ckpt.restore(6, setup.abstract_state)
    assert len(meta["data_state"]) == 1
    states.append(jax.device_get(state))
    ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, states[0], states[1])
  events = list((tmp_path / "straight").glob("events.out.tfevents.*"))
  tags = {v.tag for e in tf.compat.v1.train.summary_iterator(str(events[0])) for v in e.summary.value}
  assert {f"data/{name}" for name in record_stream.BAD_RECORD_COUNTERS} <= tags
