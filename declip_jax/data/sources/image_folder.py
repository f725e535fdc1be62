"""A folder of images with a CSV (or JSONL) file of captions, read as it is: no shards to write first.

  --config.data.source=image_folder --config.data.image_folder.captions=photos/captions.csv

The caption file has a header with `image` and `caption` columns (`data.image_folder.image_column` /
`caption_column`; JSONL: those keys); image paths are relative to the caption file's folder (absolute paths and
gs:// work too). Any format tf.io.decode_image reads. Rows are read in units of `rows_per_shard` consecutive
rows, which play the part of shards: each epoch visits the units in a seeded order, processes read disjoint
units, `cycle_length` units are read in turn, and the iterator position is checkpointed as for TFRecord shards.
A row whose image file does not exist (found by listing the folder once at start) is skipped and counted
(`data/skipped_sample_without_image`), as are undecodable images and empty captions. The caption file is held in
memory: for millions of images, shards (`declip_jax.data.write_tfrecords`, or webdataset) read faster.

Evaluations name such data `image_folder:CAPTION_FILE`: retrieval reads its captions (`evals.<name>.caption_key`,
default the training column), classification an integer column (`evals.<name>.label_key`, default `label`).
"""

import math
import os
from typing import Optional

import ml_collections
from etils import epy

from declip_jax.data import caption_files
from declip_jax.data.errors import DataSourceError
from declip_jax.data.sources import base

with epy.lazy_imports():  # Imported when first used: the config reads the keys without TensorFlow.
  import tensorflow as tf
  from declip_jax.data import record_stream


def _rows(path: str, image_column: str, value_column: str, key: str) -> list[tuple[str, str]]:
  """(image path as written, value) rows of the caption file; DataSourceError naming `key` when it cannot be read
  or lacks a column."""
  if not path or not tf.io.gfile.exists(path):
    raise DataSourceError(f"{key}: no caption file {path!r} (a CSV with a header, or JSONL).")
  try:
    rows = list(caption_files.read_rows(path, image_column, value_column))
  except (ValueError, KeyError) as e:
    raise DataSourceError(f"{key}: {path} cannot be read with columns {image_column!r} and {value_column!r} "
                          f"({e}).") from e
  if not rows:
    raise DataSourceError(f"{key}: {path} has no rows.")
  return rows


def _located(path: str, images: list[str]) -> tuple[list[str], list[bool]]:
  """The rows' image paths made absolute (relative to the caption file's folder), and whether each exists: the
  folder is listed once; paths outside it are checked one by one."""
  folder = os.path.dirname(path) or "."
  full = [image if image.startswith(("/", "gs://")) else os.path.normpath(os.path.join(folder, image))
          for image in images]
  listed = {os.path.normpath(os.path.join(root, name)) for root, _, names in tf.io.gfile.walk(folder)
            for name in names}
  inside = os.path.normpath(folder) + os.sep
  return full, [p in listed if p.startswith(inside) else tf.io.gfile.exists(p) for p in full]


def _present_rows(path: str, image_column: str, value_column: str, key: str) -> tuple[list[str], list[str]]:
  """(image paths, values) of the rows whose image file exists."""
  rows = _rows(path, image_column, value_column, key)
  full, present = _located(path, [image for image, _ in rows])
  kept = [(p, value) for p, (_, value), ok in zip(full, rows, present) if ok]
  return [p for p, _ in kept], [value for _, value in kept]


class ImageFolder(base.Source):
  kind = "image_folder"
  heldout_setting = "data.image_folder.eval_captions"

  def config(self) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.captions = ""  # CSV (with a header) or JSONL of (image path, caption); paths relative to its folder.
    c.image_column = "image"
    c.caption_column = "caption"
    c.rows_per_shard = 1000  # Consecutive rows read as a unit (the order and per-process split work on units).
    c.cycle_length = 16  # Units read in turn by each process.
    c.eval_captions = ""  # A held-out caption file of the same form, for retrieval; empty: none.
    c.num_eval_examples = 5000
    return c

  def validate(self, data, require, location_given=False):
    f = data.image_folder
    if not location_given:
      require(bool(f.captions), "data.source 'image_folder' needs data.image_folder.captions (a CSV or JSONL file "
              "of image paths and captions).")
    require(f.rows_per_shard > 0 and f.cycle_length > 0,
            "data.image_folder.rows_per_shard and cycle_length must be positive.")

  def training_location(self, data):
    return data.image_folder.captions

  def stream(self, location, data, seed):
    f = data.image_folder
    rows = _rows(location, f.image_column, f.caption_column, "data.image_folder.captions")
    full, present = _located(location, [image for image, _ in rows])
    _check_usable(location, full, present, [caption for _, caption in rows], data)
    paths, captions = tf.constant(full), tf.constant([caption for _, caption in rows])
    exists, count = tf.constant(present), len(rows)
    units = math.ceil(count / f.rows_per_shard)

    def read_unit(name):
      start = tf.strings.to_number(name, tf.int64) * f.rows_per_shard
      return tf.data.Dataset.range(start, tf.minimum(start + f.rows_per_shard, count)).map(
          lambda i: {"path": tf.gather(paths, i), "caption": tf.gather(captions, i), "exists": tf.gather(exists, i)})

    def parse(record_index, row):
      del record_index
      image = tf.cond(row["exists"], lambda: tf.io.read_file(row["path"]), lambda: tf.constant(""))
      return image, row["caption"], {"missing_image": ~row["exists"]}

    return base.Stream([str(k) for k in range(units)], parse, f, read_unit)

  def heldout(self, data) -> Optional[base.HeldOut]:
    f = data.image_folder
    if not f.eval_captions:
      return None
    return base.HeldOut(f"image_folder:{f.eval_captions}", f.image_column, f.caption_column, f.num_eval_examples,
                        ("data.image_folder.image_column", "data.image_folder.caption_column"))

  def labelled_images(self, location, spec, config, key):
    label_key = spec.label_key or "label"
    paths, values = _present_rows(location, spec.image_key or config.data.image_folder.image_column, label_key,
                                  f"{key}.dataset")
    try:
      labels = [int(v) for v in values]
    except ValueError as e:
      raise DataSourceError(f"{key}.label_key {label_key!r}: the column of {location} must hold integer labels "
                            f"({e}).") from e
    return base.EvalRecords(tf.data.Dataset.from_tensor_slices((paths, labels)), lambda e: {
        "image": record_stream.decode_image(tf.io.read_file(e[0])), "label": tf.cast(e[1], tf.int32)})

  def captioned_images(self, location, spec, config, key, heldout=None):
    f = config.data.image_folder
    if heldout:
      image_column, caption_column = heldout.image_key, heldout.caption_key
    else:
      image_column, caption_column = spec.image_key or f.image_column, spec.caption_key or f.caption_column
    paths, captions = _present_rows(location, image_column, caption_column, f"{key}.dataset")
    return base.EvalRecords(tf.data.Dataset.from_tensor_slices((paths, captions)), lambda e: {
        "image": record_stream.decode_image(tf.io.read_file(e[0])), "captions": tf.reshape(e[1], [1])})


def _check_usable(location: str, paths: list[str], present: list[bool], captions: list[str], data,
                  max_rows: int = 1000) -> None:
  """Raises DataSourceError when none of the first `max_rows` rows has an existing, decodable image and a
  non-empty caption."""
  for path, ok, caption in list(zip(paths, present, captions))[:max_rows]:
    if ok and record_stream.is_usable(tf.io.gfile.GFile(path, "rb").read(), caption.encode(), data):
      return
  found = sum(present[:max_rows])
  raise DataSourceError(f"data.image_folder.captions: none of the first {min(max_rows, len(paths))} rows of "
                        f"{location} has an existing, decodable image and a non-empty caption ({found} of their "
                        "image files exist; paths are relative to the caption file's folder).")
