"""CLIP_benchmark's linear probe (clip-benchmark 1.6.2, `metrics/linear_probe.py`), on NumPy features, in JAX.

What CLIP_benchmark does, and so what this does:

- **Features**: the image embeddings, L2-normalised (CLIP_benchmark's `--normalize`, on by default).
- **Few-shot** (k > 0): k examples of each class of the training split, the first k of each in a random order of
  the split; a class with fewer than k fails the task (CLIP_benchmark prints "insufficient data" and returns no
  result). k = -1: the whole split.
- **The probe**: one linear layer with torch.nn.Linear's initialisation (weights and bias uniform in
  +-1/sqrt(D)), trained on softmax cross-entropy (the mean over each mini-batch) with AdamW (beta 0.9 / 0.999,
  eps 1e-8, decoupled weight decay on weights and bias alike): mini-batches of `batch_size` in a new random order
  each epoch (the last one smaller), the learning rate on a cosine from `lr` at the first step to 0 after the
  last, no warm-up. CLIP_benchmark's defaults: lr 0.1, 10 epochs, batch 64, seed 0.
- **Weight decay**: without a validation split, 0. With one (a split of its own, or a share of the training
  split), CLIP_benchmark's search (after CLIP's paper, appendix A.3): 97 values log-spaced from 1e-6 to 1e2; the
  probe is trained at 7 of them (every 16th: 1e-6, 10^-4.67, ..., 1e2), then at the best one's neighbours 8, 4, 2
  and 1 grid steps away, each time
  keeping the best validation top-1 (a later value replaces it only when strictly better); the final probe is
  trained at the chosen value on the training and validation splits together (full), or on the few-shot
  examples only.
- **Metrics** (CLIP_benchmark's names): `lp_acc1`, `lp_acc5` (NaN when the largest test label is below 5),
  `lp_mean_per_class_recall` (balanced accuracy over the classes present in the test labels), and the settings:
  `weight_decay`, `epochs`, `seed`, `fewshot_k`, `normalized`.

Only the random streams differ: CLIP_benchmark draws the initialisation and the orders from torch's generator,
this from NumPy's (`numpy.random.default_rng(seed)`). `train` takes both explicitly, and given torch's it gives
torch's weights (tests/test_benchmark_linear_probe.py, against CLIP_benchmark's own `train`); end to end, the two
probes differ as two seeds of one probe do (docs/evaluation.md states the tolerance and why).
"""

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from declip_jax.benchmark import metrics as metrics_lib
from declip_jax.data.errors import DataSourceError

# CLIP_benchmark's weight-decay grid (97 values, 1e-6 to 1e2, 12 a decade) and its first pass: the grid's values
# equal to one of 7 log-spaced over the same range, found as CLIP_benchmark finds them (indices 0, 16, ..., 96).
WEIGHT_DECAYS = np.logspace(-6, 2, num=97)
COARSE = tuple(i for i, value in enumerate(WEIGHT_DECAYS.tolist()) if value in np.logspace(-6, 2, num=7).tolist())


@dataclasses.dataclass(frozen=True)
class Settings:
  """The probe's settings (CLIP_benchmark's flags and defaults): `lr` (--fewshot_lr), `epochs` (--fewshot_epochs),
  `batch_size` (--batch_size), `seed` (--seed); `fewshot_k` is the task's (-1: the whole split)."""

  lr: float = 0.1
  epochs: int = 10
  batch_size: int = 64
  seed: int = 0
  val_split: str = ""  # A split of the task's own to choose the weight decay on (--val_split), or
  val_proportion: float = 0.0  # a share of the training split (--val_proportion); neither: weight decay 0.

  def __post_init__(self):
    if self.val_split and self.val_proportion:
      raise ValueError("linear_probe_val_split and linear_probe_val_proportion: one or the other, not both.")
    if not 0.0 <= self.val_proportion < 1.0:
      raise ValueError(f"linear_probe_val_proportion={self.val_proportion} is not in [0, 1).")
    if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
      raise ValueError("linear_probe_lr, linear_probe_epochs and linear_probe_batch_size must be positive.")


def split_validation(num_examples: int, proportion: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(training indices, validation indices): a random split with torch.utils.data.random_split's sizes for the
  fractions [1 - p, p] (each floor(n * fraction), what is left added one each in that order)."""
  sizes = [int(np.floor(num_examples * f)) for f in (1.0 - proportion, proportion)]
  for i in range(num_examples - sum(sizes)):
    sizes[i % 2] += 1
  order = rng.permutation(num_examples)
  return order[:sizes[0]], order[sizes[0]:]


def few_shot(labels: np.ndarray, k: int, rng: np.random.Generator, what: str = "the training split") -> np.ndarray:
  """Indices of the first k examples of each class in a random order of `labels` [N] (k < 0: all of them, in
  that order).

  Raises:
    DataSourceError: a class has fewer than k examples.
  """
  order = rng.permutation(len(labels))
  if k < 0:
    return order
  taken, counts = [], {}
  for i in order:
    label = int(labels[i])
    if counts.get(label, 0) < k:
      counts[label] = counts.get(label, 0) + 1
      taken.append(i)
  short = sorted(c for c, n in counts.items() if n < k)
  if short:
    raise DataSourceError(f"{k}-shot linear probe: {what} has fewer than {k} examples of class(es) "
                          f"{', '.join(map(str, short[:10]))}{' ...' if len(short) > 10 else ''}.")
  return np.asarray(taken, np.int64)


def initial_weights(num_features: int, num_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """torch.nn.Linear's initialisation, weights [D, C] and bias [C], each uniform in +-1/sqrt(D)."""
  bound = 1.0 / np.sqrt(num_features)
  w = rng.uniform(-bound, bound, (num_classes, num_features)).astype(np.float32).T
  return np.ascontiguousarray(w), rng.uniform(-bound, bound, (num_classes,)).astype(np.float32)


def epoch_orders(num_examples: int, epochs: int, rng: np.random.Generator) -> np.ndarray:
  """[epochs, N]: each epoch's random order of the examples."""
  return np.stack([rng.permutation(num_examples) for _ in range(epochs)]).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _train(features, labels, orders, w0, b0, weight_decays, lr, batch_size):
  """Trains one probe per weight decay (vmapped); see `train`. Returns (w [W, D, C], b [W, C])."""
  epochs, n = orders.shape
  steps_per_epoch = -(-n // batch_size)
  padded = jnp.pad(orders, ((0, 0), (0, steps_per_epoch * batch_size - n)), constant_values=-1)
  batches = padded.reshape(epochs * steps_per_epoch, batch_size)  # -1: past the epoch's last example.
  schedule = optax.cosine_decay_schedule(lr, epochs * steps_per_epoch)

  def one(weight_decay):
    optimizer = optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
    params = {"w": w0, "b": b0}

    def step(carry, batch):
      params, state = carry
      valid = batch >= 0
      x, y = features[jnp.maximum(batch, 0)], labels[jnp.maximum(batch, 0)]

      def loss(p):
        ce = optax.softmax_cross_entropy_with_integer_labels(x @ p["w"] + p["b"], y)
        return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.sum(valid)

      updates, state = optimizer.update(jax.grad(loss)(params), state, params)
      return (optax.apply_updates(params, updates), state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), batches)
    return params["w"], params["b"]

  return jax.vmap(one)(weight_decays)


def train(features: np.ndarray, labels: np.ndarray, weight_decays: Sequence[float], settings: Settings,
          init: tuple[np.ndarray, np.ndarray], orders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """CLIP_benchmark's probe training (`linear_probe.train`), once per weight decay.

  Args:
    features: [N, D] float32; labels: [N] int in [0, C).
    weight_decays: [W] AdamW weight decays (decoupled: each step scales the parameters by 1 - lr_t * wd).
    settings: lr, batch size (epochs come from `orders`).
    init: the initial weights [D, C] and bias [C] (`initial_weights`).
    orders: [epochs, N] each epoch's order of the examples (`epoch_orders`).
  Returns:
    weights [W, D, C] and biases [W, C], float32.
  """
  w, b = _train(jnp.asarray(features, jnp.float32), jnp.asarray(labels, jnp.int32), jnp.asarray(orders, jnp.int32),
                jnp.asarray(init[0]), jnp.asarray(init[1]), jnp.asarray(weight_decays, jnp.float32),
                settings.lr, settings.batch_size)
  return np.asarray(w), np.asarray(b)


def search(validation_accuracy: Callable[[list[int]], list[float]]) -> int:
  """CLIP_benchmark's weight-decay search over WEIGHT_DECAYS' indices: the 7 of COARSE, then the best one's
  neighbours at 8, 4, 2 and 1 grid steps (clipped to the grid). `validation_accuracy(indices)` gives each index's
  validation top-1. As CLIP_benchmark's `find_peak`, each pass starts from index 0 with accuracy 0 and keeps an
  index only when strictly better: ties go to the first, and a pass where nothing beats 0 gives index 0."""

  def peak(indices: list[int]) -> int:
    best, best_accuracy = 0, 0.0
    for index, accuracy in zip(indices, validation_accuracy(indices)):
      if best_accuracy < accuracy:
        best, best_accuracy = index, accuracy
    return best

  best = peak(list(COARSE))
  span = 8
  while span > 0:
    best = peak([max(best - span, 0), best, min(best + span, len(WEIGHT_DECAYS) - 1)])
    span //= 2
  return best


def _logits(w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
  return np.asarray(x, np.float32) @ w + b


def evaluate(train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
             test_labels: np.ndarray, fewshot_k: int, settings: Settings,
             validation: Optional[tuple[np.ndarray, np.ndarray]] = None) -> dict:
  """CLIP_benchmark's `linear_probe.evaluate` on features (already normalised): the metrics it returns.

  Args:
    train_features, train_labels: [N, D], [N] the training split; test_features, test_labels: [M, D], [M].
    fewshot_k: examples per class (-1: all).
    validation: the validation split's (features, labels); None: `settings.val_proportion` of the training
      split, drawn at random (`split_validation`), or with none, no search (weight decay 0).
  Raises:
    DataSourceError: too few examples of a class for `fewshot_k`.
  """
  rng = np.random.default_rng(settings.seed)
  if validation is None and settings.val_proportion:
    kept, held = split_validation(len(train_labels), settings.val_proportion, rng)
    validation = train_features[held], train_labels[held]
    train_features, train_labels = train_features[kept], train_labels[kept]
  chosen = few_shot(train_labels, fewshot_k, rng)
  x, y = train_features[chosen], train_labels[chosen]
  # CLIP_benchmark: the training split's largest label + 1; a validation label beyond it would fail its final fit
  # (torch's cross-entropy), and silently train on nothing here, so the validation labels count too.
  num_classes = int(max(train_labels.max(), validation[1].max() if validation is not None else 0)) + 1
  init = initial_weights(train_features.shape[1], num_classes, rng)
  weight_decay = 0.0
  if validation is not None:
    val_x, val_y = validation
    orders = epoch_orders(len(y), settings.epochs, rng)

    def validation_accuracy(indices):
      w, b = train(x, y, WEIGHT_DECAYS[indices], settings, init, orders)
      return [metrics_lib.classification(_logits(wi, bi, val_x), val_y, top_k=(1,))["acc1"] for wi, bi in zip(w, b)]

    weight_decay = float(WEIGHT_DECAYS[search(validation_accuracy)])
    if fewshot_k < 0:  # The full probe's final training adds the validation split; the few-shot one does not.
      x, y = np.concatenate([x, val_x]), np.concatenate([y, val_y])
  w, b = train(x, y, [weight_decay], settings, init, epoch_orders(len(y), settings.epochs, rng))
  logits = _logits(w[0], b[0], test_features)
  test_labels = np.asarray(test_labels)
  scores = metrics_lib.classification(logits, test_labels, top_k=(1, 5))
  return {"lp_acc1": scores["acc1"], "lp_acc5": scores["acc5"] if test_labels.max() >= 5 else float("nan"),
          "lp_mean_per_class_recall": scores["mean_per_class_recall"], "weight_decay": weight_decay,
          "epochs": settings.epochs, "seed": settings.seed, "fewshot_k": fewshot_k, "normalized": True}
