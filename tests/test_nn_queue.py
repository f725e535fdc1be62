"""The grouped NN queue: lookups against NumPy, chunking, global search, FIFO enqueue with wrap-around."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from declip_jax.training import nn_queue


def _unit(rng, shape):
  x = rng.normal(size=shape).astype(np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.mark.parametrize("chunk_size", [1000, 12, 5])
def test_local_lookup_searches_own_group_only(chunk_size):
  rng = np.random.default_rng(0)
  queue, queries = _unit(rng, (3, 60, 8)), _unit(rng, (9, 8))
  neighbours, sims = nn_queue.lookup(jnp.asarray(queue), jnp.asarray(queries), "local", chunk_size)
  for i, q in enumerate(queries):
    g = i // 3
    best = np.argmax(queue[g] @ q)
    np.testing.assert_allclose(neighbours[i], queue[g, best], atol=1e-6)
    np.testing.assert_allclose(sims[i], queue[g, best] @ q, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1000, 7])
def test_global_lookup_searches_all_groups(chunk_size):
  rng = np.random.default_rng(1)
  queue, queries = _unit(rng, (4, 21, 8)), _unit(rng, (8, 8))
  neighbours, _ = nn_queue.lookup(jnp.asarray(queue), jnp.asarray(queries), "global", chunk_size)
  flat = queue.reshape(-1, 8)
  np.testing.assert_allclose(neighbours, flat[np.argmax(queries @ flat.T, axis=1)], atol=1e-6)


def test_enqueue_is_fifo_per_group_and_wraps():
  groups, size, dim = 2, 5, 3
  queue = jnp.zeros((groups, size, dim))
  ptr = jnp.asarray([0, 3], jnp.int32)
  eda = jnp.arange(4 * dim, dtype=jnp.float32).reshape(4, dim) + 100  # Rows 0-1 -> group 0, rows 2-3 -> group 1.
  txt = jnp.arange(4 * dim, dtype=jnp.float32).reshape(4, dim) + 200
  new, new_ptr = nn_queue.enqueue(queue, ptr, [eda, txt])
  np.testing.assert_array_equal(new[0, :4], np.concatenate([eda[:2], txt[:2]]))
  np.testing.assert_array_equal(new[0, 4], np.zeros(dim))
  # Group 1 starts at slot 3: eda[2], eda[3] in slots 3, 4; txt[2], txt[3] wrap to slots 0, 1.
  np.testing.assert_array_equal(new[1, 3:], eda[2:])
  np.testing.assert_array_equal(new[1, :2], txt[2:])
  np.testing.assert_array_equal(new_ptr, [4, 2])


def test_init_queue_has_unit_rows():
  queue, ptr = nn_queue.init_queue(jax.random.PRNGKey(0), 2, 10, 4)
  np.testing.assert_allclose(jnp.linalg.norm(queue, axis=-1), 1.0, rtol=1e-6)
  assert queue.shape == (2, 10, 4) and ptr.tolist() == [0, 0]


@pytest.mark.parametrize("draws", ["uniform", "epochs"])
def test_own_pair_fraction_matches_the_queue_on_a_small_dataset(draws):
  """The demo's queue (4 x 2,048 slots, 2 text views, batch 128) on 500 pairs, each pair a one-hot embedding:
  a lookup scores 1 exactly when the pair's own embedding is in its buffer."""
  num_pairs, batch, groups, group_size = 500, 128, 4, 2048
  eye = jnp.eye(num_pairs, dtype=jnp.float32)

  @jax.jit
  def step(queue, ptr, ids):
    _, sims = nn_queue.lookup(queue, eye[ids], "local", 4096)
    queue, ptr = nn_queue.enqueue(queue, ptr, [eye[ids], eye[ids]])
    return queue, ptr, jnp.mean(sims > 0.5)

  rng = np.random.default_rng(0)
  order = np.concatenate([rng.permutation(num_pairs) for _ in range(200)])
  queue, ptr = jnp.zeros((groups, group_size, num_pairs)), jnp.zeros((groups,), jnp.int32)
  found = []
  for t in range(160):
    ids = rng.integers(num_pairs, size=batch) if draws == "uniform" else order[t * batch:(t + 1) * batch]
    queue, ptr, fraction = step(queue, ptr, jnp.asarray(ids))
    if t >= 2 * group_size // (2 * batch // groups):  # Buffers full of real pairs.
      found.append(float(fraction))
  expected = nn_queue.own_pair_fraction(group_size, 2, num_pairs)
  assert expected == pytest.approx(0.871, abs=1e-3)
  # Uniform draws are the formula's assumption; epoch-wise shuffling (tf.data) sees a pair a little more often.
  assert np.mean(found) == pytest.approx(expected, abs=0.02 if draws == "uniform" else 0.05)
