"""Reading records, for every streamed source: file order, per-process files, windowed shuffle, image decoding,
caption cleaning, and the checks that skip or repair bad records and count them (docs/design.md §13, §15).

A source (data/sources/) says what its files are and how one record parses into (image bytes, caption bytes);
`examples` turns that into the endless stream of decoded training examples, the same for TFRecord shards, TFDS
record files, webdataset tars and image folders. Evaluation reads images with `decode_image` and captions with
`clean_caption`.

Every step is a tf.data op whose position can be checkpointed symbolically (a few KB, no buffered images):
the file order is a stateless permutation per epoch, and shuffling permutes consecutive windows of
`data.shuffle_window` records with a stateless seed per window, instead of a shuffle buffer.
"""

import contextlib
import functools
from typing import Callable, Optional, Sequence

import ml_collections
import tensorflow as tf

from declip_jax.data import image_header
from declip_jax.data.errors import DataSourceError

# Cumulative per-process counts attached to every example, in this order (`data/<name>` in the train metrics).
BAD_RECORD_COUNTERS = ("skipped_undecodable_image", "skipped_empty_caption", "repaired_invalid_utf8_caption",
                       "truncated_long_caption", "skipped_oversized_image", "skipped_sample_without_image",
                       "skipped_sample_without_caption", "truncated_shard")
# What a source's parse may say of a record besides its bytes (webdataset samples); False when it says nothing.
SOURCE_FLAGS = ("missing_image", "missing_caption", "end_of_shard", "truncated_shard")
ENDLESS = 2**62


def list_files(patterns: str | Sequence[str], key: str = "data.tfrecord.files") -> list[str]:
  """Sorted, de-duplicated files matching a glob, a comma-separated list of globs, or a list of them.

  Raises:
    DataSourceError: a pattern matches nothing (the message names the config `key`).
  """
  if isinstance(patterns, str):
    patterns = [p.strip() for p in patterns.split(",") if p.strip()]
  if not patterns:
    raise DataSourceError(f"{key} is empty: give a glob of shards, e.g. '/data/cc3m/*.tfrecord' or "
                          "'/data/cc3m/{00000..00331}.tar' written as '/data/cc3m/*.tar'.")
  files = []
  for pattern in patterns:
    matched = tf.io.gfile.glob(pattern)
    if not matched:
      raise DataSourceError(f"{key}: no file matches {pattern!r}.")
    files.extend(matched)
  return sorted(set(files))


def file_order(files: Sequence[str], seed: int, process_index: int, process_count: int) -> tf.data.Dataset:
  """Endless file names for one process: global slot g = k * process_count + process_index reads file
  perm_e(g mod F) of epoch e = g // F, so within an epoch the processes read disjoint files."""
  names = tf.constant(list(files))
  num_files = len(files)

  def name(k):
    g = k * process_count + process_index
    index = tf.raw_ops.RandomIndexShuffle(
        index=g % num_files, seed=tf.stack([tf.constant(seed, tf.int64), g // num_files, tf.constant(1, tf.int64)]),
        max_index=tf.constant(num_files - 1, tf.int64))
    return tf.gather(names, index)

  return tf.data.Dataset.range(ENDLESS).map(name)


def raw_records(files: Sequence[str], cfg: ml_collections.ConfigDict, seed: int, shuffle_window: int,
                process_index: int, process_count: int,
                read_file: Optional[Callable[[tf.Tensor], tf.data.Dataset]] = None) -> tf.data.Dataset:
  """Endless records of this process: `cfg.cycle_length` files read in turn, then each window of
  `shuffle_window` consecutive records permuted with a seed of (seed, window number).

  Args:
    read_file: file name -> dataset of its records (default: a TFRecord file's serialized records, read with
      `cfg.read_buffer_bytes`); records may be any structure of tensors.
  """
  read_file = read_file or (lambda f: tf.data.TFRecordDataset(f, buffer_size=cfg.read_buffer_bytes))
  ds = file_order(files, seed, process_index, process_count).interleave(
      read_file, cycle_length=cfg.cycle_length,
      block_length=1)  # Sequential: TF 2.21 hangs restoring a parallel interleave's symbolic checkpoint here.
  if shuffle_window > 1:

    def permute(w, window):
      first = tf.nest.flatten(window)[0]
      order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(first, out_type=tf.int64)[0]),
                                                        seed=tf.stack([tf.constant(seed, tf.int64), w]))
      return tf.nest.map_structure(lambda x: tf.gather(x, order), window)

    ds = ds.batch(shuffle_window).enumerate().map(permute, num_parallel_calls=tf.data.AUTOTUNE,
                                                  deterministic=True).unbatch()
  return ds


def clean_caption(caption: tf.Tensor, max_chars: int) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
  """Makes a caption usable: invalid UTF-8 sequences replaced by U+FFFD, whitespace collapsed, at most
  `max_chars` characters. Returns the caption and bool flags `invalid_utf8`, `truncated`, `empty`."""
  valid = tf.strings.unicode_transcode(caption, "UTF-8", "UTF-8", errors="replace")
  invalid = tf.not_equal(valid, caption)
  text = tf.strings.strip(tf.strings.regex_replace(valid, r"\s+", " "))
  length = tf.strings.length(text, unit="UTF8_CHAR")
  truncated = length > max_chars
  text = tf.strings.substr(text, 0, max_chars, unit="UTF8_CHAR")
  return text, {"invalid_utf8": invalid, "truncated": truncated, "empty": tf.equal(length, 0)}


def decode_image(image_bytes: tf.Tensor) -> tf.Tensor:
  """JPEG/PNG/GIF/BMP/WebP bytes (grey, RGB, RGBA, CMYK, 16-bit) -> [H, W, 3] uint8.

  Raises tf.errors.InvalidArgumentError on undecodable bytes and on empty images.
  """
  image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
  shape = tf.shape(image)
  with tf.control_dependencies([tf.debugging.assert_positive(shape[0] * shape[1], message="empty image")]):
    return tf.identity(image)


DECODED, UNDECODABLE, OVERSIZED, NOT_WANTED = 0, 1, 2, 3


@functools.cache
def _eager_constants() -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
  """The empty image and the four statuses as eager tensors, made once (each eager op costs Python time)."""
  return tf.zeros([0, 0, 3], tf.uint8), tuple(tf.constant(s) for s in (DECODED, UNDECODABLE, OVERSIZED, NOT_WANTED))


def decode_or_flag(image_bytes: tf.Tensor, wanted: tf.Tensor, max_pixels: int) -> tuple[tf.Tensor, tf.Tensor]:
  """Eager (inside tf.py_function): (image, DECODED), or an empty image with UNDECODABLE, OVERSIZED (the header
  declares more than `max_pixels` pixels: not decoded) or NOT_WANTED.

  TensorFlow has no decode op that reports failure instead of raising, and `ignore_errors` cannot be
  checkpointed symbolically, so the one fallible op runs here under try/except: a header read in Python (a few
  microseconds) and one decode op, whose kernel runs in C++ without the GIL.
  """
  empty, status = _eager_constants()
  if not wanted.numpy():
    return empty, status[NOT_WANTED]
  size = image_header.dimensions(image_bytes.numpy())
  if size is not None and size[0] * size[1] > max_pixels:
    return empty, status[OVERSIZED]
  try:
    image = tf.raw_ops.DecodeImage(contents=image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
    return empty, status[UNDECODABLE]
  height, width, _ = image.shape
  if height * width > max_pixels:
    return empty, status[OVERSIZED]
  return (image, status[DECODED]) if height * width else (empty, status[UNDECODABLE])


_python_decode = decode_or_flag  # What `examples` decodes with; see python_decode_wrapped.


@contextlib.contextmanager
def python_decode_wrapped(wrap: Callable[[Callable], Callable]):
  """Within the block, streams built by `examples` decode with `wrap(decode_or_flag)` (the benchmarks time the
  Python part of decoding this way); outside it, with `decode_or_flag`."""
  global _python_decode
  original = _python_decode
  _python_decode = wrap(original)
  try:
    yield
  finally:
    _python_decode = original


def _decode_in_graph(image_bytes: tf.Tensor, wanted: tf.Tensor, max_pixels: int) -> tuple[tf.Tensor, tf.Tensor]:
  """`decode_or_flag` in TF ops, for data known to decode (data.skip_undecodable_images False): oversized and
  unwanted images are still flagged; an undecodable one raises, which stops the run."""
  empty = tf.zeros([0, 0, 3], tf.uint8)

  def decode():
    too_large = image_header.pixels_in_graph(image_bytes) > max_pixels
    return tf.cond(too_large, lambda: (empty, tf.constant(OVERSIZED)),
                   lambda: (decode_image(image_bytes), tf.constant(DECODED)))

  image, status = tf.cond(wanted, decode, lambda: (empty, tf.constant(NOT_WANTED)))
  image.set_shape([None, None, 3])
  return image, status


def examples(files: Sequence[str], parse: Callable, read: ml_collections.ConfigDict,
             data: ml_collections.ConfigDict, seed: int, process_index: int, process_count: int,
             read_file: Optional[Callable[[tf.Tensor], tf.data.Dataset]] = None) -> tf.data.Dataset:
  """Endless decoded examples of this process: {"image": [H, W, 3] uint8, "caption": string,
  "bad_records": [len(BAD_RECORD_COUNTERS)] int64 cumulative counts up to this example}.

  Args:
    parse: (record index in this process's stream, record) -> (image bytes, caption bytes), or (image bytes,
      caption bytes, {flag: bool} with flags of SOURCE_FLAGS).
    read: cycle_length and read_buffer_bytes of the file reads.
    read_file: see raw_records.

  Use with tf.data option experimental_external_state_policy IGNORE (the decode's py_function is pure).
  With data.skip_undecodable_images False the decode runs in TF ops (no Python per image, ~25% more images/s
  per core) and an undecodable image stops the run.
  """

  def parse_and_decode(record_index, record):
    image_bytes, raw_caption, *said = parse(record_index, record)
    source = {name: tf.constant(False) for name in SOURCE_FLAGS} | (said[0] if said else {})
    incomplete = source["missing_image"] | source["missing_caption"] | source["end_of_shard"]
    caption, flags = clean_caption(raw_caption, data.max_caption_chars)
    empty = flags["empty"] & ~incomplete
    wanted = ~flags["empty"] & ~incomplete
    if data.skip_undecodable_images:
      image, status = tf.py_function(functools.partial(_python_decode, max_pixels=data.max_image_pixels),
                                     [image_bytes, wanted], [tf.uint8, tf.int32])
      image.set_shape([None, None, 3])
      status.set_shape([])
    else:
      image, status = _decode_in_graph(image_bytes, wanted, data.max_image_pixels)
    decoded = tf.equal(status, DECODED)
    bad = tf.stack([tf.equal(status, UNDECODABLE), empty, flags["invalid_utf8"] & decoded,
                    flags["truncated"] & decoded, tf.equal(status, OVERSIZED), source["missing_image"],
                    source["missing_caption"] & ~source["missing_image"], source["truncated_shard"]])
    return {"image": image, "caption": caption, "usable": decoded, "bad": tf.cast(bad, tf.int64)}

  def count(totals, example):
    totals = totals + example["bad"]
    return totals, {"image": example["image"], "caption": example["caption"], "usable": example["usable"],
                    "bad_records": totals}

  ds = raw_records(files, read, seed, data.shuffle_window, process_index, process_count, read_file).enumerate()
  ds = ds.map(parse_and_decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.scan(tf.zeros([len(BAD_RECORD_COUNTERS)], tf.int64), count).filter(lambda e: e["usable"])
  return ds.map(lambda e: {k: v for k, v in e.items() if k != "usable"})


def is_usable(image_bytes: bytes, caption: bytes, data: ml_collections.ConfigDict) -> bool:
  """Eagerly: whether an (image, caption) pair would train: a caption non-empty once cleaned, an image that
  decodes."""
  if bool(clean_caption(tf.constant(caption), data.max_caption_chars)[1]["empty"]):
    return False
  try:
    decode_image(tf.constant(image_bytes))
    return True
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
    return False


def describe_files(files: Sequence[str]) -> str:
  """'N file(s) (first, ...)' for messages."""
  return f"{len(files)} file(s) ({files[0]}{', ...' if len(files) > 1 else ''})"
