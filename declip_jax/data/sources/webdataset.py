"""webdataset tar shards as they are (the source, and its reader): the `.tar` files img2dataset writes with
`--output_format webdataset` (and LAION, DataComp, CC12M come in): members `KEY.jpg` / `.jpeg` / `.png` / `.webp`
(the image), `KEY.txt` (the caption), `KEY.json` and others (ignored), the members of one sample consecutive.

Read in TF ops, no Python per sample: a shard is read whole (`tf.io.read_file`, local or gs://), its 512-byte
headers walked in a `tf.while_loop` (ustar names with their prefix, GNU long names and pax `path` records,
checksums verified), members grouped into samples by key (the member name up to the first "." of its base name,
as webdataset does), and the samples sliced out of the file's bytes. A shard therefore takes about twice its
size in memory while it is read (img2dataset's default shards of 10,000 samples: a few hundred MB).

Bad data is skipped and counted, never a crash: a sample without an image member or without a caption member,
and a shard that ends inside a member or a header (truncated download) or holds a corrupt header: its complete
members before that point are used, and the shard is counted once in `truncated_shard`. Each shard yields its
samples and then one end-of-shard element that carries the shard's own flags (not an example).
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence

import ml_collections
from etils import epy

from declip_jax.data.errors import DataSourceError
from declip_jax.data.sources import base

with epy.lazy_imports():  # Imported when first used: the config reads the keys without TensorFlow.
  import tensorflow as tf
  from declip_jax.data import record_stream

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
CAPTION_EXTENSION = "txt"
LABEL_EXTENSION = "cls"  # webdataset's class-index member (evaluation data).
_BLOCK = 512
_ZERO_BLOCK = "\0" * _BLOCK  # Pads a header cut short by the end of the file.
_REGULAR_TYPES = (ord("0"), 0, ord("7"))  # Regular file ("0", old NUL, contiguous "7").
_GNU_LONG_NAME, _PAX_HEADER = ord("L"), ord("x")


def _octal(field: tf.Tensor) -> tf.Tensor:
  """uint8 [n] octal digits (leading/trailing spaces or NULs ignored) -> int64."""
  digits = tf.cast(field, tf.int64) - ord("0")
  valid = (digits >= 0) & (digits <= 7)
  after = tf.cumsum(tf.cast(valid, tf.int64), reverse=True, exclusive=True)
  return tf.reduce_sum(tf.where(valid, digits * tf.bitwise.left_shift(tf.constant(1, tf.int64), 3 * after), 0))


def _c_string(field: tf.Tensor) -> tf.Tensor:
  """A NUL-terminated string field -> its text before the first NUL."""
  return tf.strings.regex_replace(field, r"(?s)\x00.*", "")


def _members(tar: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """The regular-file members of a tar file's bytes.

  Args:
    tar: scalar string, the whole archive.
  Returns:
    names [M] string, offsets [M] int64 and sizes [M] int64 of each complete member's data, in archive order;
    and `intact`, scalar bool: False when the archive ends inside a header or a member's data, or a header's
    checksum is wrong (the members before that point are returned).
  """
  length = tf.cast(tf.strings.length(tar), tf.int64)

  def step(i, pos, pending_name, headers, intact, done):
    header = tf.strings.substr(tf.strings.join([tf.strings.substr(tar, pos, _BLOCK), _ZERO_BLOCK]), 0, _BLOCK)
    raw = tf.io.decode_raw(header, tf.uint8)
    is_end = tf.reduce_all(tf.equal(raw, 0))  # End-of-archive block.
    stored_sum = _octal(raw[148:156])
    actual_sum = tf.reduce_sum(tf.cast(raw, tf.int64)) - tf.reduce_sum(tf.cast(raw[148:156], tf.int64)) + 8 * 32
    size = _octal(raw[124:136])
    broken = ~is_end & ((stored_sum != actual_sum) | (pos + _BLOCK + size > length))
    kind = tf.cast(raw[156], tf.int32)
    name = _c_string(tf.strings.substr(header, 0, 100))
    prefix = _c_string(tf.strings.substr(header, 345, 155))
    name = tf.where(tf.strings.length(prefix) > 0, tf.strings.join([prefix, "/", name]), name)
    name = tf.where(tf.strings.length(pending_name) > 0, pending_name, name)
    names_next = tf.equal(kind, _GNU_LONG_NAME) | tf.equal(kind, _PAX_HEADER)  # Its data names the next member.
    data = tf.strings.substr(tar, tf.minimum(pos + _BLOCK, length), tf.where(names_next & ~broken, size, 0))
    pax_path = tf.strings.regex_replace(data, r"(?s)^(?:.*\n)?\d+ path=([^\n]*)\n.*$", r"\1")
    next_name = tf.where(tf.equal(kind, _GNU_LONG_NAME), _c_string(data),
                         tf.where(tf.not_equal(pax_path, data), pax_path, ""))
    regular = tf.reduce_any(tf.equal(kind, _REGULAR_TYPES)) & ~is_end & ~broken
    headers = [ta.write(i, value) for ta, value in zip(headers, (name, pos + _BLOCK, size, regular))]
    next_pos = pos + _BLOCK + (size + _BLOCK - 1) // _BLOCK * _BLOCK
    return i + 1, next_pos, tf.where(regular, "", next_name), headers, intact & ~broken, is_end | broken

  def more(i, pos, pending_name, headers, intact, done):
    del i, pending_name, headers, intact
    return ~done & (pos < length)

  headers = [tf.TensorArray(dtype, 0, dynamic_size=True) for dtype in (tf.string, tf.int64, tf.int64, tf.bool)]
  start = (tf.constant(0), tf.constant(0, tf.int64), tf.constant(""), headers, tf.constant(True), tf.constant(False))
  _, pos, _, headers, intact, done = tf.while_loop(more, step, start)
  names, offsets, sizes, regular = [ta.stack() for ta in headers]
  intact = intact & (done | tf.equal(pos, length))  # Ended at a block boundary without its end blocks: fine.
  return (tf.boolean_mask(names, regular), tf.boolean_mask(offsets, regular), tf.boolean_mask(sizes, regular),
          intact)


def members(tar: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """`_members` as a tf.function (made on first use, so that importing this module imports no TensorFlow)."""
  return _members_function()(tar)


@functools.cache
def _members_function():
  return tf.function(_members)


def samples(tar: tf.Tensor) -> dict[str, tf.Tensor]:
  """A tar file's bytes -> its samples, then one end-of-shard element (all [S + 1]):
  `key` string, `image`, `caption` and `label` (.cls) bytes (empty when the member is missing), bools
  `missing_image`, `missing_caption`, `missing_label`, `end_of_shard`, `truncated_shard` (True only on the
  end-of-shard element of a shard that is not intact)."""
  names, offsets, sizes, intact = members(tar)
  base = tf.strings.regex_replace(names, r"^.*/", "")
  directory = tf.strings.regex_replace(names, r"[^/]*$", "")
  stem = tf.strings.regex_replace(base, r"\..*$", "")
  extension = tf.strings.lower(tf.strings.regex_replace(base, r"^[^.]*\.?", ""))
  keys = tf.strings.join([directory, stem])
  new_key = tf.concat([tf.ones([tf.minimum(tf.size(keys), 1)], tf.bool), tf.not_equal(keys[1:], keys[:-1])], 0)
  sample = tf.cumsum(tf.cast(new_key, tf.int64)) - 1
  count = tf.reduce_sum(tf.cast(new_key, tf.int64))
  member = tf.range(tf.size(names, out_type=tf.int64))
  none = tf.size(names, out_type=tf.int64)  # Index of the padding entry below.
  offsets, sizes = tf.concat([offsets, [0]], 0), tf.concat([sizes, [0]], 0)

  def first_member(is_kind):
    first = tf.math.unsorted_segment_min(tf.where(is_kind, member, none), sample, count)
    first = tf.minimum(first, none)  # Empty segments hold the dtype's maximum.
    return tf.strings.substr(tar, tf.gather(offsets, first), tf.gather(sizes, first)), first < none

  is_image = tf.reduce_any(tf.equal(extension[:, None], IMAGE_EXTENSIONS), axis=1)
  image, has_image = first_member(is_image)
  caption, has_caption = first_member(tf.equal(extension, CAPTION_EXTENSION))
  label, has_label = first_member(tf.equal(extension, LABEL_EXTENSION))
  sample_keys = tf.gather(keys, tf.math.unsorted_segment_min(member, sample, count))
  false = tf.zeros([count], tf.bool)
  return {"key": tf.concat([sample_keys, [""]], 0), "image": tf.concat([image, [""]], 0),
          "caption": tf.concat([caption, [""]], 0), "label": tf.concat([label, [""]], 0),
          "missing_image": tf.concat([~has_image, [False]], 0),
          "missing_caption": tf.concat([~has_caption, [False]], 0),
          "missing_label": tf.concat([~has_label, [False]], 0), "end_of_shard": tf.concat([false, [True]], 0),
          "truncated_shard": tf.concat([false, [~intact]], 0)}


def read_shard(path: tf.Tensor) -> tf.data.Dataset:
  """The samples of the tar file at `path`, then its end-of-shard element (see `samples`)."""
  return tf.data.Dataset.from_tensor_slices(samples(tf.io.read_file(path)))


def parse(record_index: tf.Tensor, sample: dict[str, tf.Tensor]):
  """record_stream.examples' parse for `read_shard`'s elements: (image bytes, caption bytes, flags)."""
  del record_index
  return sample["image"], sample["caption"], {k: sample[k] for k in record_stream.SOURCE_FLAGS}


def check_usable(files: Sequence[str], data: ml_collections.ConfigDict, max_samples: int = 1000) -> None:
  """Reads the first samples of the shards until one has a decodable image and a non-empty caption.

  Raises:
    DataSourceError: none of the first `max_samples` samples is usable; says which member extensions the
      shards hold, so that shards of another layout (or not tars at all) show.
  """
  seen, read = 0, []
  for path in files:
    read.append(path)
    for sample in read_shard(tf.constant(path)).take(max_samples - seen).as_numpy_iterator():
      if sample["end_of_shard"]:
        continue
      seen += 1
      if (not sample["missing_image"] and not sample["missing_caption"]
          and record_stream.is_usable(sample["image"], sample["caption"], data)):
        return
    if seen >= max_samples:
      break
  where = record_stream.describe_files(files)
  if not seen:
    raise DataSourceError(f"data.webdataset.files: {where} hold no samples (are they tar files?).")
  extensions = {name.decode(errors="replace").rsplit("/", 1)[-1].partition(".")[2].lower()
                for path in read for name in members(tf.io.read_file(path))[0].numpy()}
  raise DataSourceError(
      f"data.webdataset.files: none of the first {seen} samples of {where} has a decodable image "
      f"({'/'.join(IMAGE_EXTENSIONS)}) and a non-empty caption (.{CAPTION_EXTENSION}); the shards' members "
      f"have the extensions {sorted(extensions)}.")


def samples_with(files: Sequence[str], member: str):
  """The samples of the shards `files`, in file order, that have an image and the `member` ("caption" /
  "label")."""
  ds = tf.data.Dataset.from_tensor_slices(list(files)).interleave(read_shard, cycle_length=1)
  return ds.filter(lambda e: ~e["end_of_shard"] & ~e["missing_image"] & ~e[f"missing_{member}"])


def _samples(location: str, key: str, member: str):
  """`samples_with` of the shards a glob names."""
  return samples_with(record_stream.list_files(location, key), member)


class Webdataset(base.Source):
  kind = "webdataset"
  heldout_setting = "data.webdataset.eval_files"

  def config(self) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.files = ""  # Glob, or comma-separated globs (local paths or gs://).
    c.cycle_length = 4  # Shards read in turn by each process (each is held in memory whole).
    c.eval_files = ""  # Held-out shards for retrieval evaluation; empty: none.
    c.num_eval_examples = 5000
    return c

  def validate(self, data, require, location_given=False):
    if not location_given:
      require(bool(data.webdataset.files),
              "data.source 'webdataset' needs data.webdataset.files (a glob of .tar shards).")
    require(data.webdataset.cycle_length > 0, "data.webdataset.cycle_length must be positive.")

  def training_location(self, data):
    return data.webdataset.files

  def stream(self, location, data, seed):
    files = record_stream.list_files(location, "data.webdataset.files")
    check_usable(files, data)
    return base.Stream(files, parse, data.webdataset, read_shard)

  def heldout(self, data) -> Optional[base.HeldOut]:
    w = data.webdataset
    return base.HeldOut(f"webdataset:{w.eval_files}", num_examples=w.num_eval_examples) if w.eval_files else None

  def labelled_images(self, location, spec, config, key):
    return base.EvalRecords(_samples(location, f"{key}.dataset", "label"), lambda e: {
        "image": record_stream.decode_image(e["image"]),
        "label": tf.strings.to_number(tf.strings.strip(e["label"]), tf.int32)})

  def captioned_images(self, location, spec, config, key, heldout=None):
    return base.EvalRecords(_samples(location, f"{key}.dataset", "caption"), lambda e: {
        "image": record_stream.decode_image(e["image"]), "captions": e["caption"]})
