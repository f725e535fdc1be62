"""Weighted mixtures of streamed sources: `data.source = "mixture"` with `data.mixture = ("0.7:tfrecord:/data/
cc12m/*.tfrecord", "0.3:tfds:coco_captions/train")`.

Each entry is "WEIGHT:KIND:LOCATION" of a streamed source (declip_jax/data/sources/: "WEIGHT:tfrecord:GLOB[,GLOB
...]" with data.tfrecord's feature names, "WEIGHT:webdataset:GLOB", "WEIGHT:tfds:NAME/SPLIT" with data.tfds's
data_dir and feature paths, "WEIGHT:image_folder:CAPTION_FILE"; parsed by `sources.parse_specs`). Each source is
its own stream (file order seeded per source); the source of the example at local stream position j is drawn
with a seed of (seed, j), so the mixture, like each stream, resumes from its checkpointed position.
"""

import tensorflow as tf

from declip_jax.data import record_stream


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
  choices = tf.data.Dataset.range(record_stream.ENDLESS).map(choose)
  mixed = tf.data.Dataset.choose_from_datasets(tagged, choices)
  counters = len(record_stream.BAD_RECORD_COUNTERS)

  def total_counts(latest, e):
    latest = tf.tensor_scatter_nd_update(latest, [[e["source"]]], [e["bad_records"]])
    return latest, {"image": e["image"], "caption": e["caption"], "bad_records": tf.reduce_sum(latest, axis=0)}

  return mixed.scan(tf.zeros([len(streams), counters], tf.int64), total_counts)
