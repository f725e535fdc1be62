"""SLIP's SimCLR term and FILIP's token-wise term: against plain NumPy references of their formulas (values and
gradients by finite differences of the reference), against the official code's outputs
(tests/data/official_methods_losses.npz), chunked against unchunked, and FILIP's token selection against an
all-tokens computation where they must agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from declip_jax.losses import contrastive, filip, simclr
from tests.conftest import REPO

OFFICIAL = REPO / "tests" / "data" / "official_methods_losses.npz"


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _np_log_softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def np_nt_xent(z1, z2, temperature):
  """SimCLR: rows [z1; z2] against the same 2N columns, own column out, positive the other view; mean."""
  z = _unit(np.concatenate([z1, z2]))
  n = len(z1)
  logits = z @ z.T / temperature
  np.fill_diagonal(logits, -np.inf)
  positive = np.concatenate([np.arange(n, 2 * n), np.arange(n)])
  return -np.mean(_np_log_softmax(logits)[np.arange(2 * n), positive])


def np_filip(x, y, scale, top_k, text_mask=None):
  """FILIP's loss written out pair by pair: per-pair selection by in-pair similarity sums, mean of max."""
  x, y = _unit(x), _unit(y)
  b = len(x)
  valid = np.ones(y.shape[:2], bool) if text_mask is None else text_mask
  sel_x, sel_y, sel_y_valid = [], [], []
  for i in range(b):
    c = x[i] @ y[i].T
    image_scores = (c * valid[i][None, :]).sum(axis=1)
    text_scores = np.where(valid[i], c.sum(axis=0), -np.inf)
    ix, iy = np.argsort(-image_scores, kind="stable")[:top_k], np.argsort(-text_scores, kind="stable")[:top_k]
    sel_x.append(x[i][ix])
    sel_y.append(y[i][iy])
    sel_y_valid.append(valid[i][iy])
  per_image, per_text = np.zeros((b, b)), np.zeros((b, b))
  for i in range(b):
    for j in range(b):
      sim_i = x[i] @ sel_y[j].T
      per_image[i, j] = scale * np.mean(np.max(np.where(sel_y_valid[j][None], sim_i, -np.inf), axis=1))
      sim_t = (y[i] @ sel_x[j].T).max(axis=1)
      per_text[i, j] = scale * np.mean(sim_t[valid[i]])
  ce = lambda logits: -np.mean(np.diag(_np_log_softmax(logits)))
  return 0.5 * (ce(per_image) + ce(per_text)), per_image, per_text


def _numeric_gradient(f, x, eps=1e-6):
  g = np.zeros_like(x)
  for index in np.ndindex(x.shape):
    step = np.zeros_like(x)
    step[index] = eps
    g[index] = (f(x + step) - f(x - step)) / (2 * eps)
  return g


def test_nt_xent_matches_numpy_the_official_code_and_its_gradients():
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
  with jax.enable_x64(True):
    np.testing.assert_allclose(simclr.nt_xent(z1, z2, 0.1), np_nt_xent(z1, z2, 0.1), rtol=1e-12)
    np.testing.assert_allclose(simclr.nt_xent(z1, z2, 0.1, chunk=3), np_nt_xent(z1, z2, 0.1), rtol=1e-12)
    grads = jax.grad(lambda a, b: simclr.nt_xent(a, b, 0.1), argnums=(0, 1))(z1, z2)
    np.testing.assert_allclose(grads[0], _numeric_gradient(lambda a: np_nt_xent(a, z2, 0.1), z1), atol=1e-7)
    np.testing.assert_allclose(grads[1], _numeric_gradient(lambda b: np_nt_xent(z1, b, 0.1), z2), atol=1e-7)
    official = np.load(OFFICIAL)
    got = simclr.nt_xent(official["slip_z1"], official["slip_z2"], float(official["slip_temperature"]))
    np.testing.assert_allclose(got, official["slip_loss"], rtol=1e-12)
  got32 = simclr.nt_xent(jnp.asarray(official["slip_z1"], jnp.float32), jnp.asarray(official["slip_z2"], jnp.float32),
                         0.1)
  np.testing.assert_allclose(got32, official["slip_loss"], rtol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_filip_matches_numpy_and_its_gradients(masked):
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 6, 3))
  mask = np.arange(6)[None, :] <= np.array([[5], [2], [3], [1]]) if masked else None  # Text 3 has 2 < k tokens.
  with jax.enable_x64(True):
    want, _, _ = np_filip(x, y, 7.0, 3, mask)
    got = filip.filip_loss(x, y, 7.0, 3, text_mask=None if mask is None else jnp.asarray(mask))
    np.testing.assert_allclose(got, want, rtol=1e-12)
    loss = lambda a, b: filip.filip_loss(a, b, 7.0, 3, chunk=3, text_mask=None if mask is None else jnp.asarray(mask))
    np.testing.assert_allclose(loss(x, y), want, rtol=1e-12)  # Chunked: blocks of 3 of the 4 columns.
    gx, gy = jax.grad(loss, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, _numeric_gradient(lambda a: np_filip(a, y, 7.0, 3, mask)[0], x), atol=1e-7)
    np.testing.assert_allclose(gy, _numeric_gradient(lambda b: np_filip(x, b, 7.0, 3, mask)[0], y), atol=1e-7)
  if masked:  # Padding neither selected nor scored: changing it changes nothing.
    noisy = np.where(mask[..., None], y, rng.normal(size=y.shape))
    with jax.enable_x64(True):
      np.testing.assert_allclose(filip.filip_loss(x, noisy, 7.0, 3, text_mask=jnp.asarray(mask)), want, rtol=1e-12)


def test_filip_matches_the_official_code():
  official = np.load(OFFICIAL)
  x, y = official["filip_image_tokens"], official["filip_text_tokens"]
  k, scale = int(official["filip_top_k"]), float(np.exp(official["filip_log_scale"]))
  with jax.enable_x64(True):
    xn, yn = contrastive.l2_normalize(jnp.asarray(x)), contrastive.l2_normalize(jnp.asarray(y))
    sel_x, valid_x, sel_y, valid_y = filip.select_tokens(xn, yn, k)
    per_image = filip.token_wise_logits(xn, jnp.ones(x.shape[:2], bool), sel_y, valid_y, scale)
    per_text = filip.token_wise_logits(yn, jnp.ones(y.shape[:2], bool), sel_x, valid_x, scale)
    np.testing.assert_allclose(per_image, official["filip_logits_per_image"], rtol=1e-12)
    np.testing.assert_allclose(per_text, official["filip_logits_per_text"], rtol=1e-12)
    np.testing.assert_allclose(filip.filip_loss(x, y, scale, k), official["filip_loss"], rtol=1e-12)
  np.testing.assert_allclose(filip.filip_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), scale, k),
                             official["filip_loss"], rtol=1e-5)


def test_selecting_every_token_is_the_all_tokens_computation():
  """top_k = all tokens: selection only reorders them, and mean-of-max does not depend on the order; it equals
  the late interaction over all tokens written directly."""
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 4, 5))
  with jax.enable_x64(True):
    xn, yn = _unit(x), _unit(y)
    all_image = np.einsum("itd,jud->ijtu", xn, yn).max(axis=3).mean(axis=2)  # [i, j]
    all_text = np.einsum("itd,jud->ijtu", yn, xn).max(axis=3).mean(axis=2)
    ce = lambda logits: -np.mean(np.diag(_np_log_softmax(logits)))
    want = 0.5 * (ce(5.0 * all_image) + ce(5.0 * all_text))
    np.testing.assert_allclose(filip.filip_loss(x, y, 5.0, 4), want, rtol=1e-12)
    assert abs(float(filip.filip_loss(x, y, 5.0, 2)) - want) > 1e-3  # Fewer tokens: another function.


def test_filip_blocks_hold_only_chunk_columns():
  """The chunked logits never hold [b, n, N, k] similarities for all N columns at once."""
  x, y = jnp.ones((4, 5, 3)), jnp.ones((4, 6, 3))
  jaxpr = str(jax.make_jaxpr(lambda a, b: filip.filip_loss(a, b, 7.0, 2, chunk=2))(x, y))
  assert "f32[4,5,2,2]" in jaxpr and "f32[4,5,4,2]" not in jaxpr
