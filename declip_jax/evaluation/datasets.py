"""Evaluation datasets as tf.data pipelines of eval-transformed images, each process reading a disjoint slice.

An evaluation names its data with one string (`evals.<name>.dataset`):
  "builtin:SPLIT"     the built-in shapes data ("train" or "test"); labels: the attribute in `label_key`.
  "tfds:NAME/SPLIT"   a prepared TFDS dataset (in `tfds_data_dir`, else data.tfds.data_dir, else TFDS's default).
  "tfrecord:GLOB"     tf.train.Example shards (comma-separated globs allowed).
  "webdataset:GLOB"   webdataset tar shards: KEY.jpg/png/webp with KEY.txt (captions) or KEY.cls (an integer
                      label, webdataset's convention).
  "heldout"           the training data's held-out split (data.tfrecord.eval_files, data.webdataset.eval_files,
                      data.tfds.eval_split, or the built-in test split), read with the training data's feature
                      names.

Labels are integers; class names (a TFDS ClassLabel's, or `class_names_file`) are needed only by zero-shot
classification: a linear probe without them takes the number of classes from its labels.

Elements carry `index`, the example's position in the (possibly truncated) dataset, so that embeddings computed
on any number of processes can be put back in dataset order. Undecodable images are skipped (their index is
then missing from the results; `num_examples` in each result says how many were evaluated).
"""

import dataclasses
from typing import Optional

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from declip_jax.data import builtin, image_views, pipeline, tfds_source, tfrecord_source, webdataset_source
from declip_jax.data.tfrecord_source import DataSourceError


@dataclasses.dataclass(frozen=True)
class LabelledImages:
  """Elements {"image": [S, S, 3] float32 normalised, "label": int32, "index": int64}; `class_names[label]`
  (empty when the data has none and the evaluation needs none)."""

  dataset: tf.data.Dataset
  class_names: tuple[str, ...]
  name: str


@dataclasses.dataclass(frozen=True)
class CaptionedImages:
  """Elements {"image": [S, S, 3] float32 normalised, "captions": [n] string (n >= 1), "index": int64}."""

  dataset: tf.data.Dataset
  name: str


@dataclasses.dataclass(frozen=True)
class _Source:
  kind: str  # builtin | tfds | tfrecord | webdataset
  location: str  # split | NAME/SPLIT | glob


def _parse_dataset(spec: str, key: str) -> _Source:
  kind, _, location = spec.partition(":")
  if kind not in ("builtin", "tfds", "tfrecord", "webdataset") or not location:
    raise DataSourceError(f"{key} {spec!r}: use 'builtin:SPLIT', 'tfds:NAME/SPLIT', 'tfrecord:GLOB', "
                          "'webdataset:GLOB' or 'heldout'.")
  if kind == "tfds" and "/" not in location:
    raise DataSourceError(f"{key} {spec!r}: a TFDS dataset is named 'tfds:NAME/SPLIT', e.g. 'tfds:cifar10/test'.")
  return _Source(kind, location)


def eval_transform(config: ml_collections.ConfigDict):
  """uint8 [H, W, 3] -> the eval view (resize, centre crop; DESIGN §6), normalised."""
  size, data = config.model.image.image_size, config.data

  def transform(image):
    return image_views.normalize(image_views.eval_view(image, size, data.eval_crop_fraction), data.mean, data.std)

  return transform


def _process_slice(ds: tf.data.Dataset, num_examples: int, process_index: int, process_count: int) -> tf.data.Dataset:
  """(index, element) pairs of this process's slice: examples index % process_count == process_index."""
  if num_examples > 0:
    ds = ds.take(num_examples)
  return ds.enumerate().shard(process_count, process_index)


def _decoded(ds: tf.data.Dataset, fn) -> tf.data.Dataset:
  """Maps the fallible decode+transform `fn` over (index, element), skipping elements it fails on."""
  return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()


def _webdataset_samples(location: str, key: str, member: str) -> tf.data.Dataset:
  """The samples of webdataset shards, in file order, that have an image and the `member` ("caption"/"label")."""
  files = tfrecord_source.list_files(location, key)
  ds = tf.data.Dataset.from_tensor_slices(files).interleave(webdataset_source.read_shard, cycle_length=1)
  return ds.filter(lambda e: ~e["end_of_shard"] & ~e["missing_image"] & ~e[f"missing_{member}"])


def _tfds_builder(spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict, location: str, key: str):
  """(builder, split) of a "tfds:NAME/SPLIT" location, checked by tfds_source.prepared_builder."""
  name, split = location.rsplit("/", 1)
  data_dir = spec.tfds_data_dir or config.data.tfds.data_dir
  data_dir_key = f"{key.rsplit('.', 1)[0]}.tfds_data_dir"
  return tfds_source.prepared_builder(name, data_dir, split, key, data_dir_key), split


def _read_names_file(path: str, key: str) -> tuple[str, ...]:
  try:
    names = tuple(line.strip() for line in epath.Path(path).read_text().splitlines() if line.strip())
  except OSError as e:
    raise DataSourceError(f"{key} {path!r} cannot be read ({e}).") from e
  if not names:
    raise DataSourceError(f"{key} {path!r} has no class names (one per line).")
  return names


def labelled_images(spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str,
                    dataset: Optional[str] = None, num_examples: Optional[int] = None, process_index: int = 0,
                    process_count: int = 1) -> LabelledImages:
  """An image classification dataset for zero-shot classification or a linear probe.

  Args:
    spec: `evals.<name>` (reads dataset, image_key, label_key, class_names_file, num_examples, tfds_data_dir).
    config: the experiment config (image size, eval crop, normalisation).
    name: the evaluation's name, for error messages.
    dataset, num_examples: override spec.dataset and spec.num_examples (a linear probe's training split).
  Raises:
    DataSourceError: the dataset, split, a feature or the class names cannot be found.
  """
  dataset = dataset or spec.dataset
  source = _parse_dataset(dataset, f"evals.{name}.dataset")
  transform = eval_transform(config)
  num = spec.num_examples if num_examples is None else num_examples
  names = _read_names_file(spec.class_names_file, f"evals.{name}.class_names_file") if spec.class_names_file else None
  if source.kind == "builtin":
    attribute = spec.label_key
    if attribute not in builtin.ATTRIBUTES:
      raise DataSourceError(f"evals.{name}.label_key {attribute!r}: the built-in data's labels are its attributes "
                            f"{', '.join(builtin.ATTRIBUTES)}.")
    split = pipeline.load_split(config, source.location)
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.attributes[attribute]))
    ds = _process_slice(ds, num, process_index, process_count).map(
        lambda i, e: {"image": transform(e[0]), "label": tf.cast(e[1], tf.int32), "index": i},
        num_parallel_calls=tf.data.AUTOTUNE)
    return LabelledImages(ds, names or builtin.ATTRIBUTES[attribute], dataset)
  if source.kind == "tfds":
    builder, split = _tfds_builder(spec, config, source.location, f"evals.{name}.dataset")
    image_key, label_key = spec.image_key or "image", spec.label_key or "label"
    tfds_source.feature(builder.info, image_key, f"evals.{name}.image_key")
    label_feature = tfds_source.feature(builder.info, label_key, f"evals.{name}.label_key")
    if names is None:
      if not isinstance(label_feature, tfds.features.ClassLabel) or not label_feature.names:
        raise DataSourceError(f"evals.{name}: {label_key!r} of {builder.info.name} has no class names; set "
                              f"evals.{name}.class_names_file.")
      names = tuple(n.replace("_", " ") for n in label_feature.names)
    ds = builder.as_dataset(split=split, shuffle_files=False)
    ds = _decoded(_process_slice(ds, num, process_index, process_count), lambda i, e: {
        "image": transform(tfds_source.get(e, image_key)),
        "label": tf.cast(tfds_source.get(e, label_key), tf.int32), "index": i})
    return LabelledImages(ds, names, dataset)
  if names is None and spec.kind == "zero_shot":
    raise DataSourceError(f"evals.{name}: zero-shot classification on {source.kind} data needs "
                          f"evals.{name}.class_names_file (one name per line, in label order).")
  names = names or ()
  if source.kind == "webdataset":
    ds = _webdataset_samples(source.location, f"evals.{name}.dataset", "label")
    return LabelledImages(_decoded(_process_slice(ds, num, process_index, process_count), lambda i, e: {
        "image": transform(tfrecord_source.decode_image(e["image"])),
        "label": tf.strings.to_number(tf.strings.strip(e["label"]), tf.int32), "index": i}), names, dataset)
  image_key, label_key = spec.image_key or "jpg", spec.label_key or "label"
  features = {image_key: tf.io.FixedLenFeature([], tf.string), label_key: tf.io.FixedLenFeature([], tf.int64)}
  ds = tf.data.TFRecordDataset(tfrecord_source.list_files(source.location))

  def parse(i, record):
    e = tf.io.parse_single_example(record, features)
    return {"image": transform(tfrecord_source.decode_image(e[image_key])),
            "label": tf.cast(e[label_key], tf.int32), "index": i}

  return LabelledImages(_decoded(_process_slice(ds, num, process_index, process_count), parse), names, dataset)


def captioned_images(spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str,
                     process_index: int = 0, process_count: int = 1) -> Optional[CaptionedImages]:
  """An image-caption dataset for retrieval, every caption of each image kept (empty captions dropped; an image
  left with none is skipped). None for "heldout" when the training data has no held-out split.

  Args:
    spec: `evals.<name>` (reads dataset, image_key, caption_key, num_examples, tfds_data_dir).
  Raises:
    DataSourceError: the dataset, split or a feature cannot be found.
  """
  dataset, data = spec.dataset, config.data
  num = spec.num_examples
  image_key, caption_key = spec.image_key, spec.caption_key
  if dataset == "heldout":
    if data.source == "builtin":
      dataset = "builtin:test"
    elif data.source in ("tfrecord", "mixture") and data.tfrecord.eval_files:
      dataset = f"tfrecord:{data.tfrecord.eval_files}"
      image_key, caption_key = data.tfrecord.image_key, data.tfrecord.caption_key
      num = num or data.tfrecord.num_eval_examples
    elif data.source in ("webdataset", "mixture") and data.webdataset.eval_files:
      dataset = f"webdataset:{data.webdataset.eval_files}"
      num = num or data.webdataset.num_eval_examples
    elif data.source in ("tfds", "mixture") and data.tfds.eval_split:
      dataset = f"tfds:{data.tfds.name}/{data.tfds.eval_split}"
      image_key, caption_key = data.tfds.image_key, data.tfds.caption_key
      num = num or data.tfds.num_eval_examples
    else:
      return None
  source = _parse_dataset(dataset, f"evals.{name}.dataset")
  transform = eval_transform(config)

  def cleaned(captions):
    captions, _ = tfrecord_source.clean_caption(tf.reshape(captions, [-1]), data.max_caption_chars)  # Elementwise.
    keep = tf.strings.length(captions) > 0
    with tf.control_dependencies([tf.debugging.assert_positive(tf.reduce_sum(tf.cast(keep, tf.int32)),
                                                               message="no caption")]):
      return tf.boolean_mask(captions, keep)

  if source.kind == "builtin":
    split = pipeline.load_split(config, source.location)
    ds = tf.data.Dataset.from_tensor_slices((split.images, split.captions))
    ds = _process_slice(ds, num, process_index, process_count).map(
        lambda i, e: {"image": transform(e[0]), "captions": tf.reshape(e[1], [1]), "index": i},
        num_parallel_calls=tf.data.AUTOTUNE)
    return CaptionedImages(ds, dataset)
  if source.kind == "tfds":
    builder, split = _tfds_builder(spec, config, source.location, f"evals.{name}.dataset")
    image_key, caption_key = image_key or "image", caption_key or "captions/text"
    tfds_source.feature(builder.info, image_key, f"evals.{name}.image_key")
    tfds_source.feature(builder.info, caption_key, f"evals.{name}.caption_key")
    ds = builder.as_dataset(split=split, shuffle_files=False)
    return CaptionedImages(_decoded(_process_slice(ds, num, process_index, process_count), lambda i, e: {
        "image": transform(tfds_source.get(e, image_key)), "captions": cleaned(tfds_source.get(e, caption_key)),
        "index": i}), dataset)
  if source.kind == "webdataset":
    ds = _webdataset_samples(source.location, f"evals.{name}.dataset", "caption")
    return CaptionedImages(_decoded(_process_slice(ds, num, process_index, process_count), lambda i, e: {
        "image": transform(tfrecord_source.decode_image(e["image"])), "captions": cleaned(e["caption"]),
        "index": i}), dataset)
  image_key, caption_key = image_key or "jpg", caption_key or "txt"
  features = {image_key: tf.io.FixedLenFeature([], tf.string), caption_key: tf.io.VarLenFeature(tf.string)}

  def parse(i, record):
    e = tf.io.parse_single_example(record, features)
    return {"image": transform(tfrecord_source.decode_image(e[image_key])),
            "captions": cleaned(tf.sparse.to_dense(e[caption_key])), "index": i}

  ds = tf.data.TFRecordDataset(tfrecord_source.list_files(source.location))
  return CaptionedImages(_decoded(_process_slice(ds, num, process_index, process_count), parse), dataset)


def _check_first_record(location: str, features: dict[str, str], key: str) -> None:
  """The first record of tf.train.Example shards has the named features, else one DataSourceError line."""
  files = tfrecord_source.list_files(location, key)
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


def check_available(spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
  """Raises DataSourceError now (at start, not at the first evaluation) when an evaluation's data is missing,
  unreadable, lacks a feature, or yields no usable example."""
  datasets = [(spec.dataset, spec.num_examples)]
  if spec.kind == "linear_probe":
    datasets.append((spec.train_dataset, spec.num_train_examples))
  for dataset, num in datasets:
    if dataset == "heldout":
      built = captioned_images(spec, config, name)
      if built is None:
        continue
      dataset = built.name
    source = _parse_dataset(dataset, f"evals.{name}.dataset")
    if source.kind == "tfrecord":
      second = "caption_key" if spec.kind == "retrieval" else "label_key"
      default = "txt" if spec.kind == "retrieval" else "label"
      if spec.dataset == "heldout":
        features = {"data.tfrecord.image_key": config.data.tfrecord.image_key,
                    "data.tfrecord.caption_key": config.data.tfrecord.caption_key}
      else:
        features = {f"evals.{name}.image_key": spec.image_key or "jpg",
                    f"evals.{name}.{second}": spec.get(second) or default}
      _check_first_record(source.location, features, f"evals.{name}.dataset")
    if spec.kind == "retrieval":
      data = captioned_images(spec, config, name)
    else:
      data = labelled_images(spec, config, name, dataset=dataset, num_examples=num)
    if next(iter(data.dataset.take(1)), None) is None:
      raise DataSourceError(f"evals.{name}: {dataset} yields no usable example (undecodable images, missing "
                            "members or features, or empty captions).")


def batches(ds: tf.data.Dataset, batch_size: int, keys: tuple[str, ...]):
  """Numpy batches of the given keys (the last one smaller; captions padded with empty strings)."""
  ds = ds.map(lambda e: {k: e[k] for k in keys}).padded_batch(batch_size)
  yield from ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()
