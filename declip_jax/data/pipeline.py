"""tf.data assembly: source -> two image views, MLM and EDA text views -> local batches (DESIGN §1, §6).

Example positions are global and deterministic: the example at training position p (step p // B, row p % B
of the global batch) is drawn from epoch p // N through a seeded permutation, and every random choice made for
it is seeded by (train.seed, p). So a run is reproducible, a resumed run at step s sees exactly what it would
have seen, and each process builds only its own rows of every global batch.
"""

from typing import Iterator, Optional

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging
from etils import epath

from declip_jax.data import builtin, image_views, text_views, tokenizers

_ENDLESS = 2**62  # Positions never run out.


def hide_accelerators_from_tensorflow() -> None:
  """TensorFlow only feeds data: keep it off GPUs/TPUs so it never takes memory JAX needs."""
  for kind in ("GPU", "TPU"):
    try:
      tf.config.set_visible_devices([], kind)
    except (RuntimeError, ValueError):  # Already initialised, or no such device type.
      pass


def build_tokenizer(config: ml_collections.ConfigDict) -> tokenizers.WordTokenizer:
  """The tokenizer `data.tokenizer` names, with `model.text.context_length`."""
  length = config.model.text.context_length
  if config.data.vocab_path:
    return tokenizers.WordTokenizer.from_file(config.data.vocab_path, length)
  return tokenizers.WordTokenizer(builtin.vocabulary(), length)


def _synonym_table(config: ml_collections.ConfigDict) -> Optional[tf.lookup.StaticHashTable]:
  if config.data.synonyms_path:
    table = text_views.load_synonyms_tsv(epath.Path(config.data.synonyms_path).read_text())
  elif config.data.source == "builtin":
    table = builtin.SYNONYMS
  else:
    table = {}
  if not table:
    logging.info("No synonym table: EDA draws from random swap and random deletion only.")
    return None
  return text_views.synonym_table(table)


def load_split(config: ml_collections.ConfigDict, split: str) -> builtin.Split:
  """The examples of `split` ("train" or "test") of `data.source`."""
  b = config.data.builtin
  n = b.num_train if split == "train" else b.num_test
  return builtin.generate(n, config.model.image.image_size, b.seed, split)


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


def train_dataset(config: ml_collections.ConfigDict, tokenizer: tokenizers.WordTokenizer, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> tf.data.Dataset:
  """Endless local batches of training examples.

  Each element is a dict: `img1` (and `img2` with two views) [b, S, S, 3] float32 normalised, `text_mlm` [b, L]
  int32 (MLM-masked when loss.weights.tss > 0), `mlm_labels` [b, L] (TSS only), `text_eda` [b, L] (EDA only),
  with b = train.batch_size / process_count.
  """
  data, aug = config.data, config.data.augment
  split = load_split(config, "train")
  n = len(split.labels)
  images = tf.constant(split.images)
  captions = tf.constant(split.captions.astype(str))
  size = config.model.image.image_size
  seed = config.train.seed
  table = _synonym_table(config) if data.eda else None
  use_mlm = config.loss.weights.tss > 0
  m = config.mlm

  def example(pos):
    index = example_index(pos, n, seed)
    seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(seed, tf.int64), pos]), 4)
    image, caption = tf.gather(images, index), tf.gather(captions, index)
    out = {}
    for v in range(data.num_image_views):
      view = image_views.train_view(image, seeds[v], size, aug)
      out[f"img{v + 1}"] = image_views.normalize(view, data.mean, data.std)
    tokens = tokenizer.tokenize(caption)
    if use_mlm:
      out["text_mlm"], out["mlm_labels"] = text_views.mlm_mask(
          tokens, seeds[2], tokenizer.special_ids, tokenizer.mask_id, config.model.text.vocab_size,
          m.mask_prob, m.mask_token_frac, m.random_token_frac)
    else:
      out["text_mlm"] = tokens
    if data.eda:
      out["text_eda"] = tokenizer.tokenize(text_views.eda(caption, seeds[3], table))
    return out

  ds = example_positions(start_step, config.train.batch_size, process_index, process_count)
  ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(config.train.batch_size // process_count, drop_remainder=True)
  return ds.prefetch(data.prefetch_batches)


def numpy_batches(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
  return ds.as_numpy_iterator()


def eval_split(config: ml_collections.ConfigDict, tokenizer: tokenizers.WordTokenizer) -> dict:
  """The held-out split, eval-transformed.

  Returns:
    `images` [N, S, S, 3] float32 normalised, `captions` [N, L] int32 (caption i belongs to image i), and
    `zero_shot`: {attribute: (labels [N] int32, class names [C])} for each of data.builtin.zero_shot_attributes.
  """
  split = load_split(config, "test")
  size = config.model.image.image_size
  ds = tf.data.Dataset.from_tensor_slices(split.images).map(
      lambda im: image_views.normalize(image_views.eval_view(im, size, config.data.eval_crop_fraction),
                                       config.data.mean, config.data.std),
      num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  images = np.concatenate(list(ds.as_numpy_iterator()), axis=0)
  zero_shot = {a: (split.attributes[a], builtin.ATTRIBUTES[a]) for a in config.data.builtin.zero_shot_attributes}
  return {"images": images, "captions": tokenizer.tokenize_numpy(list(split.captions)), "zero_shot": zero_shot}
