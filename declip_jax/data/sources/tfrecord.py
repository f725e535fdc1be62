"""TFRecord shards of tf.train.Examples (img2dataset's `--output_format tfrecord`), the recipe's data: the source,
its record parser, and the start checks of its features. The reading itself is `data/record_stream.py`'s."""

from typing import Optional, Sequence

import ml_collections
from etils import epy

from declip_jax.data.errors import DataSourceError
from declip_jax.data.sources import base

with epy.lazy_imports():  # Imported when first used: the config reads the keys without TensorFlow.
  import tensorflow as tf
  from declip_jax.data import record_stream


class TFRecord(base.Source):
  kind = "tfrecord"
  heldout_setting = "data.tfrecord.eval_files"

  def config(self) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.files = ""  # Glob, or comma-separated globs (local paths or gs://).
    c.image_key = "jpg"  # Encoded image bytes (any format tf.io.decode_image reads).
    c.caption_key = "txt"
    c.cycle_length = 16  # Files read in turn by each process.
    c.read_buffer_bytes = 8 << 20
    c.eval_files = ""  # Held-out shards for retrieval evaluation; empty: none.
    c.num_eval_examples = 5000
    return c

  def validate(self, data, require, location_given=False):
    if not location_given:
      require(bool(data.tfrecord.files), "data.source 'tfrecord' needs data.tfrecord.files (a glob of shards).")
    require(data.tfrecord.cycle_length > 0, "data.tfrecord.cycle_length must be positive.")

  def training_location(self, data):
    return data.tfrecord.files

  def stream(self, location, data, seed):
    files = record_stream.list_files(location)
    check_usable(files, data.tfrecord, data)
    return base.Stream(files, example_parser(data.tfrecord), data.tfrecord)

  def heldout(self, data) -> Optional[base.HeldOut]:
    t = data.tfrecord
    if not t.eval_files:
      return None
    return base.HeldOut(f"tfrecord:{t.eval_files}", t.image_key, t.caption_key, t.num_eval_examples,
                        ("data.tfrecord.image_key", "data.tfrecord.caption_key"))

  def labelled_images(self, location, spec, config, key):
    image_key, label_key = spec.image_key or "jpg", spec.label_key or "label"
    features = {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}

    def decode(record):
      e = tf.io.parse_single_example(record, features)
      return {"image": record_stream.decode_image(e[image_key]), "label": tf.cast(e[label_key], tf.int32)}

    return base.EvalRecords(tf.data.TFRecordDataset(record_stream.list_files(location)), decode)

  def captioned_images(self, location, spec, config, key, heldout=None):
    if heldout:
      image_key, caption_key = heldout.image_key, heldout.caption_key
    else:
      image_key, caption_key = spec.image_key or "jpg", spec.caption_key or "txt"
    features = {image_key: tf.io.FixedLenFeature([], tf.string), caption_key: tf.io.VarLenFeature(tf.string)}

    def decode(record):
      e = tf.io.parse_single_example(record, features)
      return {"image": record_stream.decode_image(e[image_key]), "captions": tf.sparse.to_dense(e[caption_key])}

    return base.EvalRecords(tf.data.TFRecordDataset(record_stream.list_files(location)), decode)

  def check_evaluation(self, location, spec, config, key, heldout=None):
    if heldout:
      features = dict(zip(heldout.key_settings, (heldout.image_key, heldout.caption_key)))
    else:
      second, default = ("caption_key", "txt") if spec.kind == "retrieval" else ("label_key", "label")
      features = {f"{key}.image_key": spec.image_key or "jpg", f"{key}.{second}": spec.get(second) or default}
    check_first_record(location, features, f"{key}.dataset")


def example_parser(cfg: ml_collections.ConfigDict):
  """parse(record_index, serialized tf.train.Example) -> (image bytes, caption bytes), with the feature names of
  `cfg` (data.tfrecord); a missing feature parses as empty (and the record is then skipped and counted)."""
  features = {cfg.image_key: tf.io.FixedLenFeature([], tf.string, default_value=""),
              cfg.caption_key: tf.io.FixedLenFeature([], tf.string, default_value="")}

  def parse(record_index, record):
    del record_index
    parsed = tf.io.parse_single_example(record, features)
    return parsed[cfg.image_key], parsed[cfg.caption_key]

  return parse




def check_first_record(location: str, features: dict[str, str], key: str) -> None:
  """The first record of tf.train.Example shards has the named features ({config key: feature name}), else one
  DataSourceError line naming the key."""
  files = record_stream.list_files(location, key)
  try:
    first = next(iter(tf.data.TFRecordDataset(files[:1]).take(1)), None)
  except tf.errors.OpError as e:
    raise DataSourceError(f"{key}: {files[0]} cannot be read as TFRecords ({e.message.splitlines()[0]}).") from e
  if first is None:
    raise DataSourceError(f"{key}: {files[0]} holds no records.")
  try:
    present = set(tf.train.Example.FromString(first.numpy()).features.feature)
  except Exception as e:  # pylint: disable=broad-except  # protobuf's DecodeError and others.
    raise DataSourceError(f"{key}: the records of {files[0]} are not tf.train.Examples.") from e
  for setting, feature in features.items():
    if feature not in present:
      raise DataSourceError(f"{setting} {feature!r} is not a feature of {files[0]} (it has {sorted(present)}).")


def check_usable(files: Sequence[str], cfg: ml_collections.ConfigDict, data: ml_collections.ConfigDict,
                 max_records: int = 1000) -> None:
  """Reads the first records of the files, eagerly, until one is usable.

  Raises:
    DataSourceError: none of the first `max_records` records is usable; says which features the records
      have, so that a wrong `data.tfrecord.image_key` / `caption_key` shows.
  """
  seen, keys = 0, set()
  for path in files:
    for record in tf.data.TFRecordDataset(path).take(max_records - seen):
      seen += 1
      example = tf.train.Example.FromString(record.numpy())
      keys |= set(example.features.feature)
      feature = example.features.feature
      image = feature[cfg.image_key].bytes_list.value if cfg.image_key in feature else []
      caption = feature[cfg.caption_key].bytes_list.value if cfg.caption_key in feature else []
      if image and caption and record_stream.is_usable(image[0], caption[0], data):
        return
    if seen >= max_records:
      break
  where = record_stream.describe_files(files)
  if not seen:
    raise DataSourceError(f"data.tfrecord.files: {where} hold no records.")
  raise DataSourceError(
      f"data.tfrecord.files: none of the first {seen} records of {where} has a decodable image in feature "
      f"{cfg.image_key!r} and a non-empty caption in feature {cfg.caption_key!r}; the records have the features "
      f"{sorted(keys)} (set data.tfrecord.image_key / caption_key).")
