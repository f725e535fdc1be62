"""Zero-shot and retrieval metrics on hand-computed inputs, ties included."""

import numpy as np
import pytest

from declip_jax.evaluation import retrieval, zero_shot


def test_classifier_weights_average_normalised_prompt_embeddings():
  table = {"a x": [2.0, 0.0], "b x": [0.0, 1.0], "a y": [0.0, 3.0], "b y": [0.0, 1.0]}
  encode = lambda texts: np.asarray([table[t] for t in texts])
  w = zero_shot.classifier_weights(encode, ["x", "y"], ["a {}", "b {}"])
  np.testing.assert_allclose(w[0], [np.sqrt(0.5), np.sqrt(0.5)])  # mean of (1,0) and (0,1), renormalised.
  np.testing.assert_allclose(w[1], [0.0, 1.0])


def test_classification_metrics_by_hand():
  weights = np.eye(3)
  images = np.asarray([[1.0, 0.1, 0.0], [0.2, 1.0, 0.0], [0.9, 0.0, 0.5], [0.0, 0.0, 1.0]])
  labels = np.asarray([0, 1, 2, 2])
  m = zero_shot.classification_metrics(images, weights, labels, top_k=(1, 2))
  assert m["zero_shot_top1"] == pytest.approx(0.75)  # Image 2 is closer to class 0.
  assert m["zero_shot_top2"] == pytest.approx(1.0)
  assert m["zero_shot_mean_per_class_recall"] == pytest.approx((1 + 1 + 0.5) / 3)


def test_ties_count_against_the_true_class():
  weights = np.eye(2)
  images = np.asarray([[1.0, 1.0], [1.0, 1.0]])  # Equal scores for both classes.
  m = zero_shot.classification_metrics(images, weights, np.asarray([0, 1]), top_k=(1, 2))
  assert m["zero_shot_top1"] == 0.0 and m["zero_shot_top2"] == 1.0


def test_retrieval_with_several_captions_per_image():
  images = np.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  texts = np.asarray([[1.0, 0.0, 0.0],   # image 0
                      [0.0, 0.8, 0.6],   # image 1
                      [0.9, 0.1, 0.0],   # image 1, but closest to image 0
                      [0.1, 0.0, 1.0],   # image 2
                      [0.0, 1.0, 0.2]])  # image 2, but closest to image 1
  owner = np.asarray([0, 1, 1, 2, 2])
  m = retrieval.recall_at_k(images, texts, owner, ks=(1, 2))
  assert m["i2t_recall@1"] == pytest.approx(2 / 3)  # Image 1's top text is caption 4 (image 2's).
  assert m["i2t_recall@2"] == pytest.approx(1.0)
  assert m["t2i_recall@1"] == pytest.approx(3 / 5)
  assert m["t2i_recall@2"] == pytest.approx(1.0)


def test_retrieval_ties_are_not_hits():
  images = np.ones((2, 2))
  texts = np.ones((2, 2))
  m = retrieval.recall_at_k(images, texts, np.asarray([0, 1]), ks=(1, 2))
  assert m["i2t_recall@1"] == 0.0 and m["t2i_recall@1"] == 0.0
  assert m["i2t_recall@2"] == 1.0
