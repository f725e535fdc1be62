"""Any prepared TFDS image-caption dataset (e.g. `coco_captions`), and TFDS classification datasets for
evaluations. Reading: `declip_jax/data/tfds_source.py`."""

from typing import Optional

import ml_collections

from declip_jax.data.errors import DataSourceError
from declip_jax.data.sources import base


def _builder(location: str, spec, config, key: str):
  """(builder, split) of an evaluation's "tfds:NAME/SPLIT", checked by tfds_source.prepared_builder."""
  from declip_jax.data import tfds_source  # pylint: disable=g-import-not-at-top  (TensorFlow)
  name, split = location.rsplit("/", 1)
  data_dir = spec.tfds_data_dir or config.data.tfds.data_dir
  return tfds_source.prepared_builder(name, data_dir, split, f"{key}.dataset", f"{key}.tfds_data_dir"), split


class Tfds(base.Source):
  kind = "tfds"
  heldout_setting = "data.tfds.eval_split"

  def config(self) -> ml_collections.ConfigDict:
    # Read with data.tfrecord.cycle_length / read_buffer_bytes.
    c = ml_collections.ConfigDict()
    c.name = "coco_captions"
    c.data_dir = ""  # Empty: TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR).
    c.split = "train"
    c.image_key = "image"
    c.caption_key = "captions/text"  # A path; several captions per image: one drawn per visit.
    c.eval_split = ""  # Retrieval with every caption of each image, e.g. "val"; empty: none.
    c.num_eval_examples = 5000
    return c

  def validate(self, data, require, location_given=False):
    require(data.tfrecord.cycle_length > 0, "data.tfrecord.cycle_length must be positive.")

  def training_location(self, data):
    return f"{data.tfds.name}/{data.tfds.split}"

  def check_location(self, location, key):
    if "/" not in location:
      raise DataSourceError(f"{key} 'tfds:{location}': a TFDS dataset is named 'tfds:NAME/SPLIT', e.g. "
                            "'tfds:cifar10/test'.")

  def split_name(self, location):
    return location.rsplit("/", 1)[-1]

  def stream(self, location, data, seed):
    from declip_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    cfg = ml_collections.ConfigDict(data.tfds.to_dict())
    cfg.name, cfg.split = location.rsplit("/", 1)
    files, parse = tfds_source.split_files_and_parser(cfg, seed)
    return base.Stream(files, parse, data.tfrecord)

  def heldout(self, data) -> Optional[base.HeldOut]:
    t = data.tfds
    if not t.eval_split:
      return None
    return base.HeldOut(f"tfds:{t.name}/{t.eval_split}", t.image_key, t.caption_key, t.num_eval_examples,
                        ("data.tfds.image_key", "data.tfds.caption_key"))

  def labelled_images(self, location, spec, config, key):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    from declip_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    builder, split = _builder(location, spec, config, key)
    image_key, label_key = spec.image_key or "image", spec.label_key or "label"
    tfds_source.feature(builder.info, image_key, f"{key}.image_key")
    label_feature = tfds_source.feature(builder.info, label_key, f"{key}.label_key")
    names = None
    if isinstance(label_feature, tfds.features.ClassLabel) and label_feature.names:
      names = tuple(n.replace("_", " ") for n in label_feature.names)
    return base.EvalRecords(builder.as_dataset(split=split, shuffle_files=False), lambda e: {
        "image": tfds_source.get(e, image_key), "label": tf.cast(tfds_source.get(e, label_key), tf.int32)}, names)

  def captioned_images(self, location, spec, config, key, heldout=None):
    from declip_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
    builder, split = _builder(location, spec, config, key)
    if heldout:
      image_key, caption_key = heldout.image_key, heldout.caption_key
    else:
      image_key, caption_key = spec.image_key or "image", spec.caption_key or "captions/text"
    tfds_source.feature(builder.info, image_key, f"{key}.image_key")
    tfds_source.feature(builder.info, caption_key, f"{key}.caption_key")
    return base.EvalRecords(builder.as_dataset(split=split, shuffle_files=False), lambda e: {
        "image": tfds_source.get(e, image_key), "captions": tfds_source.get(e, caption_key)})
