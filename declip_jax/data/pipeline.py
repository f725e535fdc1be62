"""tf.data assembly: source -> two image views, MLM and EDA text views -> local batches (docs/design.md §1, §6).

Example positions are global and deterministic: the example at training position p (step p // B, row p % B
of the global batch) is drawn from epoch p // N through a seeded permutation, and every random choice made for
it is seeded by (train.seed, p). So a run is reproducible, a resumed run at step s sees exactly what it would
have seen, and each process builds only its own rows of every global batch.
"""

import base64
import json
import os
import tempfile
from typing import Iterator, Optional

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from etils import epath

from declip_jax.data import image_views, mixture, record_stream, sources, text_views, tokenizers

_ENDLESS = 2**62  # Positions never run out.


def hide_accelerators_from_tensorflow() -> None:
  """TensorFlow only feeds data: keep it off GPUs/TPUs so it never takes memory JAX needs."""
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # Already initialised, or no such device type.
      pass


def _synonym_table(config: ml_collections.ConfigDict) -> Optional[tf.lookup.StaticHashTable]:
  """EDA's synonyms: data.synonyms_path (TSV), else the training data's own table (the built-in data's), else
  WordNet when an installed nltk has its corpus; None (with one log line) when there is none."""
  if config.data.synonyms_path:
    table = text_views.load_synonyms_tsv(epath.Path(config.data.synonyms_path).read_text())
  else:
    table = sources.synonyms(config) or text_views.wordnet_synonyms()
  if not table:
    logging.warning("No synonym table (data.synonyms_path empty, no WordNet corpus for nltk): EDA draws from "
                    "random swap and random deletion only.")
    return None
  return text_views.synonym_table(table)


def example_positions(start_step: int, global_batch: int, process_index: int,
                      process_count: int) -> tf.data.Dataset:
  """Global positions of this process's rows from `start_step` on: step * B + process_index * b + row."""
  local = global_batch // process_count
  j = tf.data.Dataset.range(start_step * local, _ENDLESS)
  return j.map(lambda j: (j // local) * global_batch + process_index * local + j % local)


def example_index(pos: tf.Tensor, num_examples: int, seed: int) -> tf.Tensor:
  """The example at global position `pos`: epoch pos // N visits every example once, in a seeded order."""
  pos = tf.cast(pos, tf.int64)
  return tf.raw_ops.RandomIndexShuffle(  # tf.random.experimental.index_shuffle mis-pads the seed in TF 2.21.
      index=pos % num_examples, seed=tf.stack([tf.constant(seed, tf.int64), pos // num_examples,
                                                tf.constant(0, tf.int64)]),
      max_index=tf.constant(num_examples - 1, tf.int64))


def _local_to_global_position(j: tf.Tensor, start_step: int, global_batch: int, process_index: int,
                              process_count: int) -> tf.Tensor:
  """Global position of this process's j-th example from start_step on (see example_positions)."""
  local = global_batch // process_count
  j = tf.cast(j, tf.int64) + start_step * local
  return (j // local) * global_batch + process_index * local + j % local


def _examples_by_position(source, config: ml_collections.ConfigDict, start_step: int, process_index: int,
                          process_count: int) -> tf.data.Dataset:
  """(position, {"image", "caption"}) pairs of a source held in memory (the built-in data), drawn by position
  (nothing to skip)."""
  n, example_at = source.examples_by_index(config)
  seed = config.train.seed

  def example(pos):
    return pos, example_at(example_index(pos, n, seed))

  return example_positions(start_step, config.train.batch_size, process_index, process_count).map(example)


def _streamed_examples(config: ml_collections.ConfigDict, start_step: int, process_index: int,
                       process_count: int) -> tf.data.Dataset:
  """(position, {"image", "caption", "bad_records"}) pairs streamed from the training source's records (TFRecord or
  webdataset shards, a TFDS split, an image folder), or a weighted mixture of such sources.

  Streams have no random access: a resumed run restores the iterator's checkpointed position
  (`TrainBatches.restore`); started at start_step > 0 without one, it reads and drops the earlier examples.
  """
  data, seed = config.data, config.train.seed
  entries, streams = sources.training_entries(config), []
  for weight, source, location in entries:
    stream = source.stream(location, data, seed)
    logging.info("Data from %s:%s: %d files (%s ...), weight %g, process %d of %d.", source.kind, location,
                 len(stream.files), stream.files[0], weight, process_index, process_count)
    if len(stream.files) < process_count * stream.read.cycle_length:
      logging.warning("%d files for %d processes reading %d at a time (cycle_length): processes read some of the "
                      "same files at the same time; use more, smaller shards.", len(stream.files), process_count,
                      stream.read.cycle_length)
    streams.append(record_stream.examples(stream.files, stream.parse, stream.read, data, seed, process_index,
                                            process_count, stream.read_file))
  ds = streams[0] if len(streams) == 1 else mixture.mix(streams, [weight for weight, _, _ in entries], seed)
  skip = start_step * (config.train.batch_size // process_count)
  ds = ds.skip(skip).enumerate()
  return ds.map(lambda j, e: (_local_to_global_position(j, start_step, config.train.batch_size, process_index,
                                                        process_count), e))


def bad_record_scalars(totals) -> dict[str, int]:
  """`data/<counter>` -> count, from the `bad_records` counts of a batch (summed over processes): the metrics
  under which training reports the records it skipped or repaired."""
  return {f"data/{name}": int(n) for name, n in zip(record_stream.BAD_RECORD_COUNTERS, totals)}


def train_dataset(config: ml_collections.ConfigDict, tokenizer: tokenizers.Tokenizer, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Endless local batches of training examples.

  Each element is a dict: `img1` (and `img2`, `img3` with two or three views; the first view is the CLIP
  baseline's crop with data.augment.first_view "crop") [b, S, S, 3] float32 normalised, `text_mlm` [b, L] int32
  (MLM-masked when loss.weights.tss > 0 or data.mask_captions), `mlm_labels` [b, L] (TSS only), `text_eda` [b, L]
  (EDA only),
  with b = train.batch_size / process_count; streamed sources add `bad_records` [b, K] int64 (cumulative
  counts of record_stream.BAD_RECORD_COUNTERS; `bad_record_scalars` names them).
  """
  data, aug = config.data, config.data.augment
  size = config.model.image.image_size
  seed = config.train.seed
  table = _synonym_table(config) if data.eda else None
  use_mlm = config.loss.weights.tss > 0 or data.mask_captions
  m = config.mlm
  view_augment = [aug] * data.num_image_views
  if data.augment.first_view == "crop":
    view_augment[0] = ml_collections.ConfigDict({**aug.to_dict(), "recipe": "crop",
                                                 "crop_scale": tuple(aug.first_view_crop_scale)})

  def views(pos, example):
    seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), pos]), 4)
    image, caption = example["image"], example["caption"]
    out = {}
    for v in range(data.num_image_views):
      view_seed = seeds[v] if v < 2 else tf.random.experimental.stateless_fold_in(seeds[0], v + 1)  # SLIP's third.
      view = image_views.train_view(image, view_seed, size, view_augment[v])
      out[f"img{v + 1}"] = image_views.normalize(view, data.mean, data.std)
    out["caption"] = caption
    if use_mlm:
      out["mlm_draws"] = text_views.mlm_draws(seeds[2], config.model.text.context_length,
                                              config.model.text.vocab_size)
    if data.eda:
      out["caption_eda"] = text_views.eda(caption, seeds[3], table)
    if "bad_records" in example:
      out["bad_records"] = example["bad_records"]
    return out

  def tokenized(batch):
    """Captions -> token ids a batch at a time (the tokenizers' per-call cost is mostly fixed)."""
    out = {k: v for k, v in batch.items() if k not in ("caption", "caption_eda", "mlm_draws")}
    tokens = tokenizer.tokenize(batch["caption"])
    if use_mlm:
      out["text_mlm"], labels = text_views.apply_mlm(
          tokens, batch["mlm_draws"], tokenizer.special_ids, tokenizer.mask_id, m.mask_prob, m.mask_token_frac,
          m.random_token_frac)
      if config.loss.weights.tss > 0:
        out["mlm_labels"] = labels
    else:
      out["text_mlm"] = tokens
    if data.eda:
      out["text_eda"] = tokenizer.tokenize(batch["caption_eda"])
    return out

  if sources.is_streamed(config):
    ds = _streamed_examples(config, start_step, process_index, process_count)
  else:
    ds = _examples_by_position(sources.get(data.source), config, start_step, process_index, process_count)
  ds = ds.map(views, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(config.train.batch_size // process_count, drop_remainder=True)
  ds = ds.map(tokenized, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  options = tf.data.Options()
  options.experimental_symbolic_checkpoint = True  # Positions only: buffered elements are recomputed.
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE  # Pure decode.
  return ds.prefetch(data.prefetch_batches).with_options(options)


class TrainBatches:
  """Local numpy batches of `train_dataset` whose position can be saved and restored (a few KB of state)."""

  def __init__(self, dataset: tf.data.Dataset):
    self._iterator = iter(dataset)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in next(self._iterator).items()}

  def save(self) -> str:
    """The iterator's position, as a string (JSON of the base64 TensorFlow checkpoint files)."""
    with tempfile.TemporaryDirectory() as tmp:
      prefix = tf.train.Checkpoint(iterator=self._iterator).write(os.path.join(tmp, "iterator"))
      files = {os.path.basename(f)[len("iterator"):]: base64.b64encode(tf.io.gfile.GFile(f, "rb").read()).decode()
               for f in tf.io.gfile.glob(prefix + "*")}
    return json.dumps(files, sort_keys=True)

  def restore(self, state: str) -> None:
    """Moves the iterator to a position returned by `save` (of a dataset built from the same config)."""
    with tempfile.TemporaryDirectory() as tmp:
      for suffix, content in json.loads(state).items():
        with open(os.path.join(tmp, "iterator" + suffix), "wb") as f:
          f.write(base64.b64decode(content))
      tf.train.Checkpoint(iterator=self._iterator).read(os.path.join(tmp, "iterator")).assert_consumed()


def numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  return ds.as_numpy_iterator()
