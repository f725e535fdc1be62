"""Losses against plain NumPy references on random inputs, and gradients against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from declip_jax.losses import contrastive, mlm, simsiam


def _np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _np_info_nce(a, b, scale, symmetric):
  logits = scale * a @ b.T
  a2b = -np.mean(np.diag(_np_log_softmax(logits)))
  if not symmetric:
    return a2b
  return 0.5 * (a2b - np.mean(np.diag(_np_log_softmax(logits.T))))


def _unit(rng, shape):
  x = rng.normal(size=shape)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_info_nce_matches_numpy():
  rng = np.random.default_rng(0)
  a, b = _unit(rng, (12, 5)), _unit(rng, (12, 5))
  for symmetric, fn in ((True, contrastive.symmetric_info_nce), (False, contrastive.one_way_info_nce)):
    got = fn(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), jnp.float32(7.0))
    np.testing.assert_allclose(got, _np_info_nce(a, b, 7.0, symmetric), rtol=1e-5)


def test_info_nce_gradients_match_finite_differences():
  rng = np.random.default_rng(1)
  with jax.enable_x64(True):
    a, b = jnp.asarray(_unit(rng, (6, 4))), jnp.asarray(_unit(rng, (6, 4)))
    check_grads(lambda a, b, s: contrastive.symmetric_info_nce(a, b, s), (a, b, jnp.float64(3.0)), order=1,
                modes=("rev",), eps=1e-6, atol=1e-6, rtol=1e-6)


def test_simsiam_matches_numpy_and_stops_gradient_at_targets():
  rng = np.random.default_rng(2)
  p1, z1, p2, z2 = (rng.normal(size=(8, 6)) for _ in range(4))
  cos = lambda x, y: np.sum(x * y, 1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
  expected = -0.5 * (cos(p1, z2).mean() + cos(p2, z1).mean())
  args = [jnp.asarray(x, jnp.float32) for x in (p1, z1, p2, z2)]
  np.testing.assert_allclose(simsiam.simsiam_loss(*args), expected, rtol=1e-5)
  grads = jax.grad(lambda *a: simsiam.simsiam_loss(*a), argnums=(0, 1, 2, 3))(*args)
  assert np.all(grads[1] == 0) and np.all(grads[3] == 0)
  assert np.any(grads[0] != 0) and np.any(grads[2] != 0)


def test_masked_lm_averages_over_chosen_positions_only():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(3, 5, 7))
  labels = np.full((3, 5), mlm.IGNORE_LABEL)
  labels[0, 1], labels[2, 4], labels[2, 0] = 3, 6, 0
  lp = _np_log_softmax(logits)
  expected = -np.mean([lp[0, 1, 3], lp[2, 4, 6], lp[2, 0, 0]])
  np.testing.assert_allclose(mlm.masked_lm_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(labels)), expected,
                             rtol=1e-5)
  none_chosen = np.full((3, 5), mlm.IGNORE_LABEL)
  assert float(mlm.masked_lm_loss(jnp.asarray(logits, jnp.float32), jnp.asarray(none_chosen))) == 0.0


@pytest.mark.parametrize("chunk", [1, 3, 7, 10, 64])
def test_chunked_info_nce_has_the_same_value_and_gradients(chunk):

  rng = np.random.default_rng(chunk)
  a = contrastive.l2_normalize(jnp.asarray(rng.normal(size=(10, 6)), jnp.float32))
  b = contrastive.l2_normalize(jnp.asarray(rng.normal(size=(10, 6)), jnp.float32))
  scale = jnp.float32(14.3)
  for loss in (contrastive.symmetric_info_nce, contrastive.one_way_info_nce):
    plain = jax.value_and_grad(lambda a, b, s: loss(a, b, s), argnums=(0, 1, 2))(a, b, scale)
    chunked = jax.value_and_grad(lambda a, b, s: loss(a, b, s, chunk=chunk), argnums=(0, 1, 2))(a, b, scale)
    np.testing.assert_allclose(chunked[0], plain[0], rtol=1e-6)
    for g_chunked, g_plain in zip(chunked[1], plain[1]):
      np.testing.assert_allclose(g_chunked, g_plain, rtol=1e-5, atol=1e-6)
