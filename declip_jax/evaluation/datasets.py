"""Evaluation datasets as tf.data pipelines of eval-transformed images, each process reading a disjoint slice.

An evaluation names its data with one string (`evals.<name>.dataset`), "KIND:LOCATION" of a data source
(declip_jax/data/sources/: how each kind is read), or "heldout":
  "builtin:SPLIT"       the built-in shapes data ("train" or "test"); labels: the attribute in `label_key`.
  "tfds:NAME/SPLIT"     a prepared TFDS dataset (in `tfds_data_dir`, else data.tfds.data_dir, else TFDS's default).
  "tfrecord:GLOB"       tf.train.Example shards (comma-separated globs allowed).
  "webdataset:GLOB"     webdataset tar shards: KEY.jpg/png/webp with KEY.txt (captions) or KEY.cls (an integer
                        label, webdataset's convention).
  "image_folder:FILE"   a CSV/JSONL file of image paths (relative to its folder) and captions or integer labels.
  "heldout"             the training data's held-out split (data.tfrecord.eval_files, data.webdataset.eval_files,
                        data.tfds.eval_split, data.image_folder.eval_captions, or the built-in test split), read
                        with the training data's feature names.

Labels are integers; class names (a TFDS ClassLabel's, the built-in attributes', or `class_names_file`) are
needed only by zero-shot classification: a linear probe without them takes the number of classes from its
labels.

Elements carry `index`, the example's position in the (possibly truncated) dataset, so that embeddings computed
on any number of processes can be put back in dataset order. Undecodable images are skipped (their index is
then missing from the results; `num_examples` in each result says how many were evaluated).
"""

import dataclasses
from typing import Optional

import ml_collections
import tensorflow as tf
from etils import epath

from declip_jax.data import image_views, record_stream, sources
from declip_jax.data.errors import DataSourceError


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


def eval_transform(config: ml_collections.ConfigDict):
  """uint8 [H, W, 3] -> the eval view (resize, centre crop; docs/design.md §6), normalised."""
  size, data = config.model.image.image_size, config.data

  def transform(image):
    return image_views.normalize(image_views.eval_view(image, size, data.eval_crop_fraction), data.mean, data.std)

  return transform


def _this_process(records: sources.base.EvalRecords, decoded, num_examples: int, process_index: int,
                  process_count: int) -> tf.data.Dataset:
  """This process's slice (examples index % process_count == process_index of the first `num_examples`, 0: all),
  each record decoded by `decoded(index, record)`; records it fails on are skipped."""
  ds = records.records.take(num_examples) if num_examples > 0 else records.records
  ds = ds.enumerate().shard(process_count, process_index)
  return ds.map(decoded, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()


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
  key = f"evals.{name}"
  source, location = sources.parse_dataset(dataset, f"{key}.dataset")
  transform = eval_transform(config)
  num = spec.num_examples if num_examples is None else num_examples
  records = source.labelled_images(location, spec, config, key)
  names = _read_names_file(spec.class_names_file, f"{key}.class_names_file") if spec.class_names_file else None
  names = names or records.class_names
  if names is None and spec.kind == "zero_shot":
    raise DataSourceError(f"{key}: zero-shot classification on {source.kind} data needs {key}.class_names_file "
                          "(one name per line, in label order).")

  def decoded(i, record):
    e = records.decode(record)
    return {"image": transform(e["image"]), "label": e["label"], "index": i}

  return LabelledImages(_this_process(records, decoded, num, process_index, process_count), names or (), dataset)


def _cleaned(captions: tf.Tensor, max_chars: int) -> tf.Tensor:
  """Every caption cleaned (record_stream.clean_caption), empty ones dropped; fails when none is left."""
  captions, _ = record_stream.clean_caption(tf.reshape(captions, [-1]), max_chars)  # Elementwise.
  keep = tf.strings.length(captions) > 0
  with tf.control_dependencies([tf.debugging.assert_positive(tf.reduce_sum(tf.cast(keep, tf.int32)),
                                                             message="no caption")]):
    return tf.boolean_mask(captions, keep)


def captioned_images(spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str,
                     process_index: int = 0, process_count: int = 1) -> Optional[CaptionedImages]:
  """An image-caption dataset for retrieval, every caption of each image kept (empty captions dropped; an image
  left with none is skipped). None for "heldout" when the training data has no held-out split.

  Args:
    spec: `evals.<name>` (reads dataset, image_key, caption_key, num_examples, tfds_data_dir).
  Raises:
    DataSourceError: the dataset, split or a feature cannot be found.
  """
  dataset, num, heldout = spec.dataset, spec.num_examples, None
  if dataset == "heldout":
    heldout = sources.heldout(config)
    if heldout is None:
      return None
    dataset, num = heldout.dataset, num or heldout.num_examples
  key = f"evals.{name}"
  source, location = sources.parse_dataset(dataset, f"{key}.dataset")
  transform = eval_transform(config)
  records = source.captioned_images(location, spec, config, key, heldout)

  def decoded(i, record):
    e = records.decode(record)
    return {"image": transform(e["image"]), "captions": _cleaned(e["captions"], config.data.max_caption_chars),
            "index": i}

  return CaptionedImages(_this_process(records, decoded, num, process_index, process_count), dataset)


def check_available(spec: ml_collections.ConfigDict, config: ml_collections.ConfigDict, name: str) -> None:
  """Raises DataSourceError now (at start, not at the first evaluation) when an evaluation's data is missing,
  unreadable, lacks a feature, or yields no usable example."""
  datasets = [(spec.dataset, spec.num_examples)]
  if spec.kind == "linear_probe":
    datasets.append((spec.train_dataset, spec.num_train_examples))
  for dataset, num in datasets:
    heldout = None
    if dataset == "heldout":
      heldout = sources.heldout(config)
      if heldout is None:
        continue
      dataset = heldout.dataset
    source, location = sources.parse_dataset(dataset, f"evals.{name}.dataset")
    source.check_evaluation(location, spec, config, f"evals.{name}", heldout)
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
