"""Any TFDS image-caption dataset as a stream of serialized records (e.g. `coco_captions`), read with the same
file order, windowed shuffle, bad-record handling and resumable positions as TFRecord shards.

The dataset must be prepared in `data.tfds.data_dir` (`tfds build` or `builder.download_and_prepare()`) in
TFDS's tfrecord file format. Features are named by paths: `data.tfds.image_key` ("image"),
`data.tfds.caption_key` ("captions/text" for coco_captions). A caption feature holding several captions per
image (a TFDS Sequence) gives one of them per visit, drawn with a seed of (seed, record position).
"""

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from declip_jax.data.tfrecord_source import DataSourceError


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
