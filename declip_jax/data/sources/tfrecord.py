"""TFRecord shards of tf.train.Examples (img2dataset's `--output_format tfrecord`): the recipe's data.
Reading: `declip_jax/data/tfrecord_source.py`."""

from typing import Optional

import ml_collections

from declip_jax.data.sources import base


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
    from declip_jax.data import tfrecord_source  # pylint: disable=g-import-not-at-top  (TensorFlow)
    files = tfrecord_source.list_files(location)
    tfrecord_source.check_usable(files, data.tfrecord, data)
    return base.Stream(files, tfrecord_source.example_parser(data.tfrecord), data.tfrecord)

  def heldout(self, data) -> Optional[base.HeldOut]:
    t = data.tfrecord
    if not t.eval_files:
      return None
    return base.HeldOut(f"tfrecord:{t.eval_files}", t.image_key, t.caption_key, t.num_eval_examples,
                        ("data.tfrecord.image_key", "data.tfrecord.caption_key"))

  def labelled_images(self, location, spec, config, key):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from declip_jax.data import tfrecord_source  # pylint: disable=g-import-not-at-top
    image_key, label_key = spec.image_key or "jpg", spec.label_key or "label"
    features = {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}

    def decode(record):
      e = tf.io.parse_single_example(record, features)
      return {"image": tfrecord_source.decode_image(e[image_key]), "label": tf.cast(e[label_key], tf.int32)}

    return base.EvalRecords(tf.data.TFRecordDataset(tfrecord_source.list_files(location)), decode)

  def captioned_images(self, location, spec, config, key, heldout=None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from declip_jax.data import tfrecord_source  # pylint: disable=g-import-not-at-top
    if heldout:
      image_key, caption_key = heldout.image_key, heldout.caption_key
    else:
      image_key, caption_key = spec.image_key or "jpg", spec.caption_key or "txt"
    features = {image_key: tf.io.FixedLenFeature([], tf.string), caption_key: tf.io.VarLenFeature(tf.string)}

    def decode(record):
      e = tf.io.parse_single_example(record, features)
      return {"image": tfrecord_source.decode_image(e[image_key]), "captions": tf.sparse.to_dense(e[caption_key])}

    return base.EvalRecords(tf.data.TFRecordDataset(tfrecord_source.list_files(location)), decode)

  def check_evaluation(self, location, spec, config, key, heldout=None):
    from declip_jax.data import tfrecord_source  # pylint: disable=g-import-not-at-top
    if heldout:
      features = dict(zip(heldout.key_settings, (heldout.image_key, heldout.caption_key)))
    else:
      second, default = ("caption_key", "txt") if spec.kind == "retrieval" else ("label_key", "label")
      features = {f"{key}.image_key": spec.image_key or "jpg", f"{key}.{second}": spec.get(second) or default}
    tfrecord_source.check_first_record(location, features, f"{key}.dataset")
