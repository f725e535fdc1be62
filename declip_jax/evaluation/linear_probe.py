"""Linear probe: multinomial logistic regression on frozen image features, its L2 strength chosen on a
validation split (CLIP's protocol, with L-BFGS as in their scikit-learn version)."""

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from declip_jax.data import sources
from declip_jax.evaluation import datasets


def _objective(params, x, y, l2):
  """Mean cross-entropy of softmax(x W + b) + l2 / 2 ||W||^2 (the bias is not regularised)."""
  logits = x @ params["w"] + params["b"]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return ce + 0.5 * l2 * jnp.sum(params["w"] ** 2)


@functools.partial(jax.jit, static_argnames=("num_classes", "max_iterations"))
def fit(x: jax.Array, y: jax.Array, l2: float, num_classes: int, max_iterations: int = 1000,
        tolerance: float = 1e-6) -> dict[str, jax.Array]:
  """Minimises `_objective` from zero weights with L-BFGS until the gradient norm is below `tolerance` or
  `max_iterations` steps.

  Args:
    x: [N, F] float32 features; y: [N] int labels in [0, num_classes).
  Returns:
    {"w": [F, C], "b": [C]}.
  """
  objective = lambda p: _objective(p, x, y, l2)
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(objective)
  params = {"w": jnp.zeros((x.shape[1], num_classes), jnp.float32), "b": jnp.zeros((num_classes,), jnp.float32)}

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=objective)
    return optax.apply_updates(params, updates), state

  def going(carry):
    _, state = carry
    count = optax.tree_utils.tree_get(state, "count")
    grad_norm = optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, "grad"))
    return (count == 0) | ((count < max_iterations) & (grad_norm >= tolerance))

  params, _ = jax.lax.while_loop(going, step, (params, solver.init(params)))
  return params


def accuracy(params: dict, x: np.ndarray, y: np.ndarray) -> float:
  """Top-1 of argmax(x W + b); ties go to the lower class index (np.argmax)."""
  logits = np.asarray(x, np.float32) @ np.asarray(params["w"]) + np.asarray(params["b"])
  return float(np.mean(np.argmax(logits, axis=1) == y))


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """Centres and scales every feature by the training features' mean and standard deviation."""
  mean, std = train.mean(axis=0), train.std(axis=0) + 1e-6
  return [((a - mean) / std).astype(np.float32) for a in (train,) + others]


def evaluate(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, num_classes: int,
             l2_grid: Sequence[float], validation_fraction: float, seed: int = 0,
             max_iterations: int = 1000) -> tuple[dict[str, float], float]:
  """Chooses the L2 strength on a held-out part of the training split, refits on all of it, scores the test split.

  The validation part is a seeded random `validation_fraction` of the training examples; of equally accurate
  strengths the largest (simplest model) is chosen.
  Returns:
    ({"linear_probe_top1", "linear_probe_validation_top1"}, the chosen l2).
  """
  rng = np.random.default_rng(seed)
  order = rng.permutation(len(train_x))
  num_val = max(1, int(round(validation_fraction * len(train_x))))
  val, fit_part = order[:num_val], order[num_val:]
  fx, vx = standardise(train_x[fit_part], train_x[val])
  scores = []
  for l2 in sorted(l2_grid):
    params = fit(fx, train_y[fit_part], l2, num_classes, max_iterations)
    scores.append((accuracy(params, vx, train_y[val]), l2))
  best_val, best_l2 = max(scores)  # Ties: the larger l2.
  tx, sx = standardise(train_x, test_x)
  params = fit(tx, train_y, best_l2, num_classes, max_iterations)
  return {"linear_probe_top1": accuracy(params, sx, test_y), "linear_probe_validation_top1": best_val}, best_l2


def run(evals, name: str, spec: ml_collections.ConfigDict, variables) -> dict:
  """The `linear_probe` evaluator (`evaluations.EVALUATORS`): runs evals.<name>, whose settings are `spec`, on the
  model's `variables` through `evals` (an `evaluations.Evaluations`: the config, the tokenizer and the mesh-sharded
  encoders); returns the result's fields (dataset, split, num_examples, metrics, ...)."""
  p, count = jax.process_index(), jax.process_count()
  test = datasets.labelled_images(spec, evals.config, name, process_index=p, process_count=count)
  train = datasets.labelled_images(spec, evals.config, name, dataset=spec.train_dataset,
                                   num_examples=spec.num_train_examples, process_index=p, process_count=count)
  train_x, _, train_y = evals.encode_images(variables, train.dataset, "image_features", extra="label")
  test_x, _, test_y = evals.encode_images(variables, test.dataset, "image_features", extra="label")
  num_classes = len(test.class_names) or int(max(train_y.max(initial=0), test_y.max(initial=0))) + 1
  metrics, l2 = evaluate(train_x, train_y, test_x, test_y, num_classes, spec.l2_grid,
                                      spec.validation_fraction, seed=evals.config.train.seed,
                                      max_iterations=spec.max_iterations)
  return {"dataset": test.name, "split": sources.split_of(test.name), "train_dataset": train.name,
          "num_examples": len(test_y), "num_train_examples": len(train_y), "l2": l2, "metrics": metrics}
