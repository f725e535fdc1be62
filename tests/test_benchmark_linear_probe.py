"""The benchmark command's linear probe (declip_jax/benchmark/linear_probe.py) against CLIP_benchmark's
(`clip_benchmark/metrics/linear_probe.py`, 1.6.2): its training against a NumPy transcription of torch's AdamW
loop and against CLIP_benchmark's own `train` (recorded in tests/data/clip_benchmark_linear_probe.npz; live where
torch and CLIP_benchmark are installed), its weight-decay search step by step, few-shot selection, the validation
split's sizes and the metrics."""

import importlib.util
import math

import numpy as np
import pytest

from declip_jax.benchmark import linear_probe as lp
from declip_jax.data.errors import DataSourceError
from tests import clip_benchmark_probe_case as probe_case


# optax computes Adam's bias corrections in float32, where beta2 = 0.999 is 0.99900001 (1 - beta2 is 1.3e-5 off,
# relatively); torch (and the NumPy transcription) in float64: 5-6e-6 apart on these weights after 15 steps. An
# algorithmic difference (a schedule one step off, the decay applied after the step) moves them by 1e-2 or more (0.08, 0.015).
TOLERANCE = 1e-5


def numpy_train(features, labels, init, orders, weight_decay, lr, batch_size):
  """torch's loop in CLIP_benchmark's `train`, transcribed: Linear, CrossEntropyLoss (batch mean), AdamW
  (torch's single-tensor update: decay first, then Adam with bias corrections), cosine learning rate set before
  each step, no warm-up; float64."""
  w, b = init[0].astype(np.float64).T.copy(), init[1].astype(np.float64)  # torch's [C, D] layout.
  m = [np.zeros_like(w), np.zeros_like(b)]
  v = [np.zeros_like(w), np.zeros_like(b)]
  steps = len(orders) * math.ceil(len(labels) / batch_size)
  step = 0
  for order in orders:
    for start in range(0, len(order), batch_size):
      idx = order[start:start + batch_size]
      x, y = features[idx].astype(np.float64), labels[idx]
      rate = 0.5 * (1 + np.cos(np.pi * step / steps)) * lr
      logits = x @ w.T + b
      p = np.exp(logits - logits.max(axis=1, keepdims=True))
      p /= p.sum(axis=1, keepdims=True)
      p[np.arange(len(y)), y] -= 1
      grads = [p.T @ x / len(y), p.sum(axis=0) / len(y)]
      step += 1
      for i, (param, grad) in enumerate(zip((w, b), grads)):
        param *= 1 - rate * weight_decay
        m[i] = 0.9 * m[i] + 0.1 * grad
        v[i] = 0.999 * v[i] + 0.001 * grad * grad
        denom = np.sqrt(v[i]) / np.sqrt(1 - 0.999 ** step) + 1e-8
        param -= rate / (1 - 0.9 ** step) * m[i] / denom
  return w.T, b


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_training_is_torchs_adamw_loop(weight_decay):
  features, labels = probe_case.problem()
  rng = np.random.default_rng(1)
  init, orders = lp.initial_weights(6, 4, rng), lp.epoch_orders(len(labels), 3, rng)
  settings = lp.Settings(lr=0.1, batch_size=8)
  w, b = lp.train(features, labels, [weight_decay], settings, init, orders)
  want_w, want_b = numpy_train(features, labels, init, orders, weight_decay, 0.1, 8)
  np.testing.assert_allclose(w[0], want_w, atol=TOLERANCE)
  np.testing.assert_allclose(b[0], want_b, atol=TOLERANCE)
  assert not np.allclose(w[0], init[0], atol=1e-2)  # It trained.


def test_training_several_weight_decays_at_once_equals_one_at_a_time():
  features, labels = probe_case.problem(3)
  rng = np.random.default_rng(2)
  init, orders = lp.initial_weights(6, 4, rng), lp.epoch_orders(len(labels), 2, rng)
  settings = lp.Settings(batch_size=5)
  w, b = lp.train(features, labels, [1e-4, 1.0, 10.0], settings, init, orders)
  for i, wd in enumerate((1e-4, 1.0, 10.0)):
    wi, bi = lp.train(features, labels, [wd], settings, init, orders)
    np.testing.assert_allclose(w[i], wi[0], atol=1e-6)
    np.testing.assert_allclose(b[i], bi[0], atol=1e-6)


def test_training_equals_clip_benchmarks_recorded_train():
  """Given torch's initialisation and batch orders (recorded from CLIP_benchmark's own `train`), ours gives its
  weights."""
  record = probe_case.load()
  for i, wd in enumerate(record["weight_decays"]):
    w, b = lp.train(record["features"], record["labels"], [wd], lp.Settings(lr=float(record["lr"]),
                    batch_size=int(record["batch_size"])), (record["init_w"], record["init_b"]), record["orders"])
    np.testing.assert_allclose(w[0], record["final_w"][i], atol=TOLERANCE)
    np.testing.assert_allclose(b[0], record["final_b"][i], atol=TOLERANCE)


@pytest.mark.skipif(importlib.util.find_spec("clip_benchmark") is None or importlib.util.find_spec("torch") is None,
                    reason="needs torch and clip-benchmark (requirements-interop.txt; CI's torch phase)")
def test_the_recorded_train_is_what_clip_benchmark_gives_today():
  fresh, recorded = probe_case.record(), probe_case.load()
  for key in set(recorded) - {"versions"}:
    np.testing.assert_allclose(fresh[key], recorded[key], atol=1e-6, err_msg=key)


def _clip_benchmark_search(accuracy_of):
  """CLIP_benchmark's `evaluate` search and `find_peak`, transcribed as they are written; returns (the chosen
  index, the indices in the order they were tried)."""
  tried = []
  wd_list = np.logspace(-6, 2, num=97).tolist()
  wd_list_init = np.logspace(-6, 2, num=7).tolist()
  wd_init_idx = [i for i, val in enumerate(wd_list) if val in wd_list_init]

  def find_peak(idxs):
    best_wd_idx, max_acc = 0, 0
    for idx in idxs:
      tried.append(idx)
      acc1 = accuracy_of(idx)
      if max_acc < acc1:
        best_wd_idx, max_acc = idx, acc1
    return best_wd_idx

  peak_idx = find_peak(wd_init_idx)
  step_span = 8
  while step_span > 0:
    left, right = max(peak_idx - step_span, 0), min(peak_idx + step_span, len(wd_list) - 1)
    peak_idx = find_peak([left, peak_idx, right])
    step_span //= 2
  return peak_idx, tried


@pytest.mark.parametrize("curve", [
    lambda i: 1 - abs(i - 41) / 100,  # One peak between the coarse points.
    lambda i: 1 - abs(i - 2) / 100,  # Near the grid's start (clipped neighbours).
    lambda i: 0.5 if i > 90 else 0.2,  # A plateau: ties keep the first.
    lambda i: 0.0,  # Nothing beats 0: index 0.
    lambda i: round(np.sin(i / 7), 1),  # Several peaks, rounded to ties.
])
def test_weight_decay_search_is_clip_benchmarks(curve):
  want, want_tried = _clip_benchmark_search(curve)
  tried = []

  def accuracies(indices):
    tried.extend(indices)
    return [curve(i) for i in indices]

  assert lp.search(accuracies) == want
  assert tried == want_tried
  assert lp.COARSE == (0, 16, 32, 48, 64, 80, 96)


def test_few_shot_takes_k_of_each_class_and_fails_when_one_has_fewer():
  labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 0, 2])
  chosen = lp.few_shot(labels, 2, np.random.default_rng(0))
  assert sorted(labels[chosen].tolist()) == [0, 0, 1, 1, 2, 2]
  assert len(set(chosen.tolist())) == 6
  assert sorted(lp.few_shot(labels, -1, np.random.default_rng(0)).tolist()) == list(range(10))
  with pytest.raises(DataSourceError, match="fewer than 4 examples of class.*1, 2"):
    lp.few_shot(labels, 4, np.random.default_rng(0))


@pytest.mark.parametrize("n, p, sizes", [(10, 0.3, (7, 3)), (11, 0.25, (9, 2)), (7, 0.5, (4, 3)), (100, 0.2, (80, 20))])
def test_validation_split_has_torch_random_splits_sizes(n, p, sizes):
  kept, held = lp.split_validation(n, p, np.random.default_rng(0))
  assert (len(kept), len(held)) == sizes
  assert sorted(np.concatenate([kept, held]).tolist()) == list(range(n))


def test_evaluate_metrics_search_and_few_shot():
  features, labels = probe_case.problem(5, n=200, d=8, c=6)
  test_x, test_y = features[150:], labels[150:]
  train_x, train_y = features[:150], labels[:150]
  full = lp.evaluate(train_x, train_y, test_x, test_y, -1, lp.Settings())
  assert full["weight_decay"] == 0.0 and full["fewshot_k"] == -1 and full["normalized"]
  assert full["lp_acc1"] > 0.6 and full["lp_acc5"] >= full["lp_acc1"]
  assert 0 <= full["lp_mean_per_class_recall"] <= 1
  searched = lp.evaluate(train_x, train_y, test_x, test_y, -1, lp.Settings(val_proportion=0.2))
  assert searched["weight_decay"] in lp.WEIGHT_DECAYS.tolist()
  assert searched["lp_acc1"] > 0.6
  shots = lp.evaluate(train_x, train_y, test_x, test_y, 3, lp.Settings(epochs=20))
  assert shots["fewshot_k"] == 3 and shots["lp_acc1"] > 1 / 6
  few_classes = lp.evaluate(train_x, train_y % 3, test_x, test_y % 3, -1, lp.Settings())
  assert math.isnan(few_classes["lp_acc5"])  # CLIP_benchmark: NaN when the largest test label is below 5.
  # A class only the validation split has still gets a column, and the refit on train + validation learns it.
  val_only = lp.evaluate(train_x[train_y < 5], train_y[train_y < 5], test_x[test_y == 5], test_y[test_y == 5], -1,
                         lp.Settings(epochs=20), validation=(train_x[train_y == 5], train_y[train_y == 5]))
  assert val_only["lp_acc1"] > 0.5  # Test images of that class only.


@pytest.mark.parametrize("settings, message", [
    (dict(val_split="val", val_proportion=0.2), "one or the other"),
    (dict(val_proportion=1.0), "not in"),
    (dict(epochs=0), "must be positive"),
])
def test_bad_settings_name_themselves(settings, message):
  with pytest.raises(ValueError, match=message):
    lp.Settings(**settings)
