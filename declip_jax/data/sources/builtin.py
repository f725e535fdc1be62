"""The built-in procedural shapes data (declip_jax/data/shapes.py): the demo's and the tests' data, generated
in memory, examples drawn by position."""

from typing import Optional

import ml_collections
from etils import epy

from declip_jax import builtin_vocabulary
from declip_jax.data import shapes
from declip_jax.data.errors import DataSourceError
from declip_jax.data.sources import base

with epy.lazy_imports():  # Imported when first used: the config reads the keys without TensorFlow.
  import tensorflow as tf


class Builtin(base.Source):
  kind = "builtin"
  streamed = False

  def config(self) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.num_train = 20_000
    c.num_test = 1000
    c.seed = 1234
    # Web-like caption noise in the training split (fractions; see declip_jax/data/shapes.py). 0: clean data.
    c.noise = ml_collections.ConfigDict()
    c.noise.partial = 0.0  # Captions naming only one or two attributes.
    c.noise.wrong = 0.0  # Captions naming a wrong shape or colour.
    c.noise.unrelated = 0.0  # Alt-text ("IMG_2041.jpg", "click to enlarge") or another image's caption.
    return c

  def validate(self, data, require, location_given=False):
    noise = data.builtin.noise
    fractions = (noise.partial, noise.wrong, noise.unrelated)
    require(min(fractions) >= 0 and sum(fractions) <= 1,
            "data.builtin.noise fractions must be >= 0 and sum to at most 1.")

  def training_location(self, data):
    return "train"

  def examples_by_index(self, config):
    split = shapes.load_split(config, "train")
    images, captions = tf.constant(split.images), tf.constant(split.captions.astype(str))
    return len(split.labels), lambda index: {"image": tf.gather(images, index), "caption": tf.gather(captions, index)}

  def known_size(self, data) -> Optional[int]:
    return data.builtin.num_train

  def synonyms(self) -> Optional[dict]:
    return builtin_vocabulary.SYNONYMS

  def heldout(self, data) -> Optional[base.HeldOut]:
    return base.HeldOut("builtin:test")

  def split_name(self, location):
    return location

  def labelled_images(self, location, spec, config, key):
    attribute = spec.label_key
    if attribute not in builtin_vocabulary.ATTRIBUTES:
      raise DataSourceError(f"{key}.label_key {attribute!r}: the built-in data's labels are its attributes "
                            f"{', '.join(builtin_vocabulary.ATTRIBUTES)}.")
    split = shapes.load_split(config, location)
    return base.EvalRecords(tf.data.Dataset.from_tensor_slices((split.images, split.attributes[attribute])),
                            lambda e: {"image": e[0], "label": tf.cast(e[1], tf.int32)},
                            builtin_vocabulary.ATTRIBUTES[attribute])

  def captioned_images(self, location, spec, config, key, heldout=None):
    split = shapes.load_split(config, location)
    return base.EvalRecords(tf.data.Dataset.from_tensor_slices((split.images, split.captions)),
                            lambda e: {"image": e[0], "captions": tf.reshape(e[1], [1])})
