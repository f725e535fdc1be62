"""Weighted mixtures of streamed sources: `data.mixture = ("0.7:tfrecord:/data/cc12m/*.tfrecord",
"0.3:tfds:coco_captions/train")`.

Each entry is "WEIGHT:tfrecord:GLOB[,GLOB...]" (feature names from data.tfrecord), "WEIGHT:webdataset:GLOB"
(tar shards, see webdataset_source) or "WEIGHT:tfds:NAME/SPLIT" (data_dir and feature paths from data.tfds).
Each source is its own stream (file order seeded per source); the source of the example at local stream
position j is drawn with a seed of (seed, j), so the mixture, like each stream, resumes from its checkpointed
position.
"""

import dataclasses
from typing import Callable, Optional

import ml_collections
import tensorflow as tf

from declip_jax.data import tfds_source, tfrecord_source, webdataset_source

KINDS = ("tfrecord", "webdataset", "tfds")


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  weight: float
  kind: str  # One of KINDS.
  target: str  # Glob(s), or NAME/SPLIT.


def parse_specs(entries) -> list[SourceSpec]:
  """Parses data.mixture entries.

  Raises:
    ValueError: naming the malformed entry.
  """
  specs = []
  for entry in entries:
    parts = str(entry).split(":", 2)
    try:
      weight = float(parts[0])
    except ValueError:
      weight = -1.0
    if len(parts) != 3 or parts[1] not in KINDS or weight <= 0 or not parts[2]:
      raise ValueError(f"data.mixture entry {entry!r} is not 'WEIGHT:tfrecord:GLOB', 'WEIGHT:webdataset:GLOB' or "
                       "'WEIGHT:tfds:NAME/SPLIT' with WEIGHT > 0.")
    if parts[1] == "tfds" and "/" not in parts[2]:
      raise ValueError(f"data.mixture entry {entry!r}: give the TFDS split as NAME/SPLIT.")
    specs.append(SourceSpec(weight, parts[1], parts[2]))
  return specs


def files_and_parser(spec: SourceSpec, data: ml_collections.ConfigDict, seed: int) -> tuple[list[str], Callable]:
  """The record files of one source and its parse(record_index, record) -> (image bytes, caption bytes[, flags])
  (see tfrecord_source.examples); raises DataSourceError when the files hold nothing usable."""
  if spec.kind == "webdataset":
    files = tfrecord_source.list_files(spec.target, "data.webdataset.files")
    webdataset_source.check_usable(files, data)
    return files, webdataset_source.parse
  if spec.kind == "tfds":
    name, split = spec.target.rsplit("/", 1)
    cfg = ml_collections.ConfigDict(data.tfds.to_dict())
    cfg.name, cfg.split = name, split
    return tfds_source.split_files_and_parser(cfg, seed)
  files = tfrecord_source.list_files(spec.target)
  tfrecord_source.check_usable(files, data.tfrecord, data)
  return files, tfrecord_source.example_parser(data.tfrecord)


def read_file(spec: SourceSpec) -> Optional[Callable[[tf.Tensor], tf.data.Dataset]]:
  """file name -> its records, for tfrecord_source.raw_records (None: TFRecord files)."""
  return webdataset_source.read_shard if spec.kind == "webdataset" else None


def mix(streams: list[tf.data.Dataset], weights: list[float], seed: int) -> tf.data.Dataset:
  """Interleaves example streams, source drawn per position with probabilities ∝ weights; `bad_records`
  becomes the sum over sources of each source's latest cumulative counts."""
  probabilities = tf.constant([w / sum(weights) for w in weights], tf.float32)
  cumulative = tf.math.cumsum(probabilities)

  def choose(j):
    key = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), j]), 2)
    u = tf.random.stateless_uniform([], seed=key)
    return tf.minimum(tf.reduce_sum(tf.cast(cumulative <= u, tf.int64)), len(weights) - 1)

  tagged = [s.map(lambda e, i=i: {**e, "source": tf.constant(i, tf.int64)}) for i, s in enumerate(streams)]
  choices = tf.data.Dataset.range(tfrecord_source.ENDLESS).map(choose)
  mixed = tf.data.Dataset.choose_from_datasets(tagged, choices)
  counters = len(tfrecord_source.BAD_RECORD_COUNTERS)

  def total_counts(latest, e):
    latest = tf.tensor_scatter_nd_update(latest, [[e["source"]]], [e["bad_records"]])
    return latest, {"image": e["image"], "caption": e["caption"], "bad_records": tf.reduce_sum(latest, axis=0)}

  return mixed.scan(tf.zeros([len(streams), counters], tf.int64), total_counts)
