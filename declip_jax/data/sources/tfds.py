"""Any prepared TFDS dataset: image-caption datasets (e.g. `coco_captions`) for training and retrieval, read as a
stream of serialized records with the same file order, windowed shuffle, bad-record handling and resumable
positions as TFRecord shards (data/record_stream.py), and classification datasets for evaluations.

The dataset must be prepared in `data.tfds.data_dir` (`tfds build` or `builder.download_and_prepare()`) in
TFDS's tfrecord file format. Features are named by paths: `data.tfds.image_key` ("image"),
`data.tfds.caption_key` ("captions/text" for coco_captions). A caption feature holding several captions per
image (a TFDS Sequence) gives one of them per visit, drawn with a seed of (seed, record position).
"""

from typing import Optional

import ml_collections
from etils import epy

from declip_jax.data.errors import DataSourceError
from declip_jax.data.sources import base

with epy.lazy_imports():  # Imported when first used: the config reads the keys without TensorFlow.
  import tensorflow as tf
  import tensorflow_datasets as tfds




def get(tree, path: str):
  """tree['a']['b'] for path 'a/b'."""
  for key in path.split("/"):
    tree = tree[key]
  return tree


def prepared_builder(name: str, data_dir: str, split: str, split_key: str, data_dir_key: str):
  """The TFDS builder of a prepared dataset that has `split`.

  Args:
    split_key, data_dir_key: the config keys that named the split and the data directory, for the messages.
  Raises:
    DataSourceError: TFDS does not know the dataset, it is not prepared in the data directory, or it has no
      such split.
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DataSourceError(f"{split_key}: TFDS has no dataset {name!r}.") from e
  if not builder.is_prepared():
    raise DataSourceError(f"TFDS dataset {name!r} is not prepared in {builder.data_dir}: run `tfds build {name} "
                          f"--data_dir=...` (with --manual_dir for manually downloaded data such as ImageNet) "
                          f"first ({data_dir_key}).")
  if split not in builder.info.splits:
    raise DataSourceError(f"{split_key} {split!r} is not a split of {name} ({sorted(builder.info.splits)}).")
  return builder


def feature(info, path: str, key: str):
  """The feature at `path` of a dataset's features; DataSourceError naming the config `key` if there is none."""
  try:
    return get(info.features, path)
  except (KeyError, TypeError) as e:
    raise DataSourceError(f"{key} {path!r} is not a feature of {info.name}: {info.features}") from e


def split_files_and_parser(cfg: ml_collections.ConfigDict, seed: int) -> tuple[list[str], callable]:
  """The split's record files and parse(record_index, record) -> (image bytes, caption bytes).

  Raises:
    DataSourceError: the dataset is not prepared there, the split or a feature path does not exist.
  """
  info = prepared_builder(cfg.name, cfg.data_dir, cfg.split, "data.tfds.split", "data.tfds.data_dir").info
  for key in ("image_key", "caption_key"):
    feature(info, cfg[key], f"data.tfds.{key}")
  files = [str(f) for f in info.splits[cfg.split].filepaths]
  image_name = cfg.image_key.split("/")[0]
  decoders = {image_name: tfds.decode.SkipDecoding()} if "/" not in cfg.image_key else None

  def parse(record_index, record):
    example = info.features.deserialize_example(record, decoders=decoders)
    captions = tf.reshape(get(example, cfg.caption_key), [-1])
    count = tf.shape(captions, out_type=tf.int64)[0]
    pick = tf.random.stateless_uniform([], seed=tf.stack([tf.constant(seed, tf.int64), record_index]),
                                       maxval=tf.maximum(count, 1), dtype=tf.int64)
    caption = tf.cond(count > 0, lambda: tf.gather(captions, pick), lambda: tf.constant(""))
    return get(example, cfg.image_key), caption

  return files, parse


def _builder(location: str, spec, config, key: str):
  """(builder, split) of an evaluation's "tfds:NAME/SPLIT", checked by prepared_builder."""
  name, split = location.rsplit("/", 1)
  data_dir = spec.tfds_data_dir or config.data.tfds.data_dir
  return prepared_builder(name, data_dir, split, f"{key}.dataset", f"{key}.tfds_data_dir"), split


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
    cfg = ml_collections.ConfigDict(data.tfds.to_dict())
    cfg.name, cfg.split = location.rsplit("/", 1)
    files, parse = split_files_and_parser(cfg, seed)
    return base.Stream(files, parse, data.tfrecord)

  def heldout(self, data) -> Optional[base.HeldOut]:
    t = data.tfds
    if not t.eval_split:
      return None
    return base.HeldOut(f"tfds:{t.name}/{t.eval_split}", t.image_key, t.caption_key, t.num_eval_examples,
                        ("data.tfds.image_key", "data.tfds.caption_key"))

  def labelled_images(self, location, spec, config, key):
    builder, split = _builder(location, spec, config, key)
    image_key, label_key = spec.image_key or "image", spec.label_key or "label"
    feature(builder.info, image_key, f"{key}.image_key")
    label_feature = feature(builder.info, label_key, f"{key}.label_key")
    names = None
    if isinstance(label_feature, tfds.features.ClassLabel) and label_feature.names:
      names = tuple(n.replace("_", " ") for n in label_feature.names)
    return base.EvalRecords(builder.as_dataset(split=split, shuffle_files=False), lambda e: {
        "image": get(e, image_key), "label": tf.cast(get(e, label_key), tf.int32)}, names)

  def captioned_images(self, location, spec, config, key, heldout=None):
    builder, split = _builder(location, spec, config, key)
    if heldout:
      image_key, caption_key = heldout.image_key, heldout.caption_key
    else:
      image_key, caption_key = spec.image_key or "image", spec.caption_key or "captions/text"
    feature(builder.info, image_key, f"{key}.image_key")
    feature(builder.info, caption_key, f"{key}.caption_key")
    return base.EvalRecords(builder.as_dataset(split=split, shuffle_files=False), lambda e: {
        "image": get(e, image_key), "captions": get(e, caption_key)})
