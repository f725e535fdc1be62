"""Evaluation data in CLIP_benchmark's webdataset layout, the layout of the field's published evaluation tars
(LAION-AI/CLIP_benchmark; DataComp's 38 tasks are downloaded in it):

  <root>/<task>/classnames.txt                           one class name per line, in label order
  <root>/<task>/zeroshot_classification_templates.txt    one prompt per line, "{c}" where the class name goes
  <root>/<task>/dataset_type.txt                         "classification" (also when absent) or "retrieval"
  <root>/<task>/<split>/nshards.txt                      N
  <root>/<task>/<split>/0.tar ... N-1.tar                members KEY.webp/png/jpg/jpeg with KEY.cls (the label)
                                                         or KEY.txt (the captions, one per line)

An evaluation dataset string is "clip_benchmark:<root>/<task>/<split>". The tars are read by the webdataset
source's reader (TF ops; a sample without its image or its label/caption member is skipped, an undecodable image
too). Evaluation data only: nothing trains on it.
"""

from __future__ import annotations

from typing import Optional

from etils import epath, epy

from declip_jax.data.errors import DataSourceError
from declip_jax.data.sources import base

with epy.lazy_imports():  # Imported when first used: the config reads the keys without TensorFlow.
  import tensorflow as tf
  from declip_jax.data import record_stream
  from declip_jax.data.sources import webdataset

CLASS_NAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
DATASET_TYPE = "dataset_type.txt"
SHARD_COUNT = "nshards.txt"


def _lines(path: epath.Path) -> list[str]:
  return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def task_dir(location: str) -> epath.Path:
  """The task's directory (where class names and templates are) of a split directory `location`."""
  return epath.Path(location.rstrip("/")).parent


def class_names(location: str, key: str) -> tuple[str, ...]:
  """The task's class names, in label order.

  Raises:
    DataSourceError: the task has no (or an empty) classnames.txt.
  """
  path = task_dir(location) / CLASS_NAMES
  if not path.exists():
    raise DataSourceError(f"{key}: {task_dir(location)} has no {CLASS_NAMES} (one class name per line).")
  names = _lines(path)
  if not names:
    raise DataSourceError(f"{key}: {path} holds no class names.")
  return tuple(names)


def templates(location: str) -> Optional[tuple[str, ...]]:
  """The task's zero-shot prompts with "{}" where the class name goes (CLIP_benchmark writes "{c}"); None when
  the task has no templates file."""
  path = task_dir(location) / TEMPLATES
  if not path.exists():
    return None
  return tuple(line.replace("{c}", "{}") for line in _lines(path)) or None


def dataset_type(location: str) -> str:
  """"classification" (also when the task does not say) or "retrieval" (or another type the task names)."""
  path = task_dir(location) / DATASET_TYPE
  return path.read_text().strip() if path.exists() else "classification"


def shard_files(location: str, key: str) -> list[str]:
  """The split's shards, 0.tar ... N-1.tar as nshards.txt says.

  Raises:
    DataSourceError: the split has no nshards.txt, it does not hold a positive count, or shards are missing.
  """
  split = epath.Path(location)
  count_file = split / SHARD_COUNT
  if not count_file.exists():
    raise DataSourceError(f"{key}: {split} has no {SHARD_COUNT} (CLIP_benchmark's layout: "
                          f"<root>/<task>/<split>/{SHARD_COUNT} and 0.tar ...).")
  text = count_file.read_text().strip()
  if not text.isdigit() or int(text) < 1:
    raise DataSourceError(f"{key}: {count_file} must hold the number of shards, not {text[:40]!r}.")
  files = [split / f"{i}.tar" for i in range(int(text))]
  missing = [f.name for f in files if not f.exists()]
  if missing:
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    raise DataSourceError(f"{key}: {count_file} names {len(files)} shards, but {shown} "
                          f"{'is' if len(missing) == 1 else 'are'} missing in {split}.")
  return [str(f) for f in files]


def split_captions(text: tf.Tensor) -> tf.Tensor:
  """A txt member's captions, one per line -> [n] strings (blank lines dropped later with empty captions)."""
  return tf.strings.split(tf.strings.regex_replace(text, "\r\n?", "\n"), "\n")


class ClipBenchmark(base.Source):
  kind = "clip_benchmark"
  streamed = False

  def validate(self, data, require, location_given=False):
    require(False, "data.source 'clip_benchmark' is evaluation data (CLIP_benchmark's tars): evaluations and "
            "python -m declip_jax.benchmark read it; nothing trains on it.")

  def training_location(self, data):
    raise DataSourceError("clip_benchmark data is evaluation data only.")

  def split_name(self, location: str) -> Optional[str]:
    return epath.Path(location.rstrip("/")).name or None

  def labelled_images(self, location, spec, config, key):
    files = shard_files(location, f"{key}.dataset")
    names = None if spec.class_names_file else class_names(location, f"{key}.dataset")
    return base.EvalRecords(webdataset.samples_with(files, "label"), lambda e: {
        "image": record_stream.decode_image(e["image"]),
        "label": tf.strings.to_number(tf.strings.strip(e["label"]), tf.int32)}, names)

  def captioned_images(self, location, spec, config, key, heldout=None):
    files = shard_files(location, f"{key}.dataset")
    return base.EvalRecords(webdataset.samples_with(files, "caption"), lambda e: {
        "image": record_stream.decode_image(e["image"]), "captions": split_captions(e["caption"])})

  # What the benchmark reads of a task besides its images (through the registry: sources.get(KIND)).
  templates = staticmethod(templates)
  dataset_type = staticmethod(dataset_type)
  shard_files = staticmethod(shard_files)
  class_names = staticmethod(class_names)

  def check_evaluation(self, location, spec, config, key, heldout=None):
    shard_files(location, f"{key}.dataset")
    kind = dataset_type(location)
    wanted = "retrieval" if spec.kind == "retrieval" else "classification"
    if kind != wanted:
      raise DataSourceError(f"{key}: {task_dir(location)} is a {kind} task ({DATASET_TYPE}); evals of kind "
                            f"{spec.kind!r} need {wanted} data.")
    if spec.kind == "zero_shot" and not spec.class_names_file:
      class_names(location, f"{key}.dataset")
