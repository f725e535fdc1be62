"""Web-like caption noise in the built-in data: off by default, the images and labels untouched, each kind at its
rate and recognisable, deterministic, and the held-out split clean."""

import numpy as np
import pytest

from declip_jax import builtin_vocabulary, config as config_lib
from declip_jax.data import shapes
from tests.tiny_config import tiny_config

NOISE = shapes.CaptionNoise(partial=0.2, wrong=0.15, unrelated=0.1)


def _names_of(caption: str, name: str) -> set[str]:
  return {value for value in shapes.ATTRIBUTES[name] if f" {value} " in f" {caption} "}


def test_noise_keeps_images_labels_and_the_test_split_and_hits_each_rate():
  clean = shapes.generate(2000, 16, 7, "train")
  noisy = shapes.generate(2000, 16, 7, "train", NOISE)
  np.testing.assert_array_equal(noisy.images, clean.images)
  for name in shapes.ATTRIBUTES:
    np.testing.assert_array_equal(noisy.attributes[name], clean.attributes[name])
  test_clean, test_noisy = shapes.generate(300, 16, 7, "test"), shapes.generate(300, 16, 7, "test", NOISE)
  assert list(test_noisy.captions) == list(test_clean.captions)
  attrs = [{name: shapes.ATTRIBUTES[name][clean.attributes[name][i]] for name in shapes.ATTRIBUTES}
           for i in range(2000)]
  captions, kinds = shapes.noisy_captions(list(clean.captions), attrs, NOISE, seed=7)
  assert captions == list(noisy.captions)
  for kind, rate in enumerate((1 - 0.45, 0.2, 0.15, 0.1)):
    assert abs(np.mean(kinds == kind) - rate) < 0.03, kind
  vocabulary = set(builtin_vocabulary.vocabulary())
  for i in np.flatnonzero(kinds == 1):  # Partial: only true attributes, fewer of them, known words.
    assert set(captions[i].replace(",", "").split()) <= vocabulary
    for name in ("shape", "colour"):
      assert _names_of(captions[i], name) <= {attrs[i][name]}
  for i in np.flatnonzero(kinds == 2):  # Wrong: the shape or the colour named is not the image's.
    assert (_names_of(captions[i], "shape") != {attrs[i]["shape"]}
            or _names_of(captions[i], "colour") != {attrs[i]["colour"]})
  others = set(clean.captions)
  unrelated = [captions[i] for i in np.flatnonzero(kinds == 3)]
  assert 0.3 < np.mean([c in others for c in unrelated]) < 0.7  # Half another image's caption, half alt-text.
  assert all(c != clean.captions[i] for c, i in zip(unrelated, np.flatnonzero(kinds == 3)) if c not in others)


def test_config_noise_reaches_the_training_split_only_and_is_validated():
  config = tiny_config()
  clean = shapes.load_split(config, "train")
  config.data.builtin.noise.unrelated = 0.5
  noisy = shapes.load_split(config, "train")
  changed = np.mean([a != b for a, b in zip(clean.captions, noisy.captions)])
  assert 0.3 < changed < 0.7
  assert list(shapes.load_split(config, "test").captions) == list(
      shapes.generate(config.data.builtin.num_test, 16, config.data.builtin.seed, "test").captions)
  config.data.builtin.noise.partial = 0.6
  with pytest.raises(config_lib.ConfigError, match="data.builtin.noise"):
    config_lib.validate(config)
