"""SigLIP's sigmoid loss (losses/sigmoid.py): the ring and the gathered implementations against a plain NumPy
reference of the formula, values and gradients; chunked against unchunked. The 1-vs-8-device agreement and the
ring's per-device memory run in a subprocess with 8 virtual devices (tests/sigmoid_check.py)."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from declip_jax.losses import sigmoid
from tests.conftest import REPO, virtual_devices_flags
from tests.test_losses_methods import _numeric_gradient, _unit


def np_sigmoid_loss(x, y, t, b):
  """-1/B sum_ij log sigmoid(z_ij (t x_i.y_j + b)), z = +1 on the diagonal, -1 elsewhere, pair by pair."""
  n = len(x)
  total = 0.0
  for i in range(n):
    for j in range(n):
      z = 1.0 if i == j else -1.0
      total += np.logaddexp(0.0, -z * (t * float(x[i] @ y[j]) + b))  # -log sigmoid(u) = log(1 + exp(-u)).
  return total / n


@pytest.mark.parametrize("implementation, chunk", [("ring", None), ("gathered", None), ("gathered", 3)])
def test_matches_numpy_and_its_gradients(implementation, chunk):
  rng = np.random.default_rng(0)
  x, y = _unit(rng.normal(size=(7, 4))), _unit(rng.normal(size=(7, 4)))
  t, b = 10.0, -10.0  # The paper's initialisation.
  with jax.enable_x64(True):
    loss = lambda x, y, t, b: sigmoid.sigmoid_loss(x, y, t, b, implementation=implementation, chunk=chunk)
    np.testing.assert_allclose(loss(x, y, t, b), np_sigmoid_loss(x, y, t, b), rtol=1e-12)
    np.testing.assert_allclose(loss(x, y, 3.0, 0.5), np_sigmoid_loss(x, y, 3.0, 0.5), rtol=1e-12)
    gx, gy, gt, gb = jax.grad(loss, argnums=(0, 1, 2, 3))(x, y, jnp.float64(t), jnp.float64(b))
    np.testing.assert_allclose(gx, _numeric_gradient(lambda a: np_sigmoid_loss(a, y, t, b), x), atol=1e-7)
    np.testing.assert_allclose(gy, _numeric_gradient(lambda a: np_sigmoid_loss(x, a, t, b), y), atol=1e-7)
    np.testing.assert_allclose(gt, _numeric_gradient(lambda a: np_sigmoid_loss(x, y, a, b), np.float64(t)), atol=1e-7)
    np.testing.assert_allclose(gb, _numeric_gradient(lambda a: np_sigmoid_loss(x, y, t, a), np.float64(b)), atol=1e-7)


def test_at_initialisation_the_loss_is_the_papers_log_2_per_pair_scale():
  """With t = 10, b = -10 every negative costs about log(1 + e^-10 e^(10 x.y)) ~ 0 and every positive about 10:
  the loss starts near the bias, not at B log 2 (the reason for the paper's -10)."""
  rng = np.random.default_rng(1)
  x, y = _unit(rng.normal(size=(64, 32))), _unit(rng.normal(size=(64, 32)))
  loss = float(sigmoid.sigmoid_loss(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), 10.0, -10.0))
  np.testing.assert_allclose(loss, np_sigmoid_loss(x, y, 10.0, -10.0), rtol=1e-5)
  assert 9.0 < loss < 12.0


def test_an_unknown_implementation_is_named():
  with pytest.raises(ValueError, match="'allgather'"):
    sigmoid.sigmoid_loss(jnp.ones((2, 2)), jnp.ones((2, 2)), 1.0, 0.0, implementation="allgather")


@pytest.mark.xdist_group("virtual_devices")
def test_eight_devices_match_one_and_the_ring_holds_no_local_by_global_logits():
  env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "XLA_FLAGS": virtual_devices_flags(8)}
  out = subprocess.run([sys.executable, "tests/sigmoid_check.py"], cwd=REPO, capture_output=True, text=True,
                       timeout=900, env=env)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.count("agree with one device") == 4 and "ring holds no [512, 4096] logits" in out.stdout, out.stdout


def test_desiglips_clip_mvs_and_nns_terms_are_the_sigmoid_loss_of_their_pairs():
  """With loss.contrastive "sigmoid": clip_mvs is the mean of SigLIP's loss over the 2 x 2 (image view, text
  view) pairs; nns the mean over image views and neighbour sets of SigLIP's loss of images against the
  neighbours (positive: one's own text's neighbour). ISS and TSS are not the base's business."""
  from declip_jax import presets  # pylint: disable=g-import-not-at-top
  from declip_jax.losses import declip as declip_loss  # pylint: disable=g-import-not-at-top
  from tests.tiny_config import tiny_config  # pylint: disable=g-import-not-at-top
  config = presets.use_sigmoid(tiny_config())
  config.loss.weights.update({"iss": 0.0, "tss": 0.0})
  rng = np.random.default_rng(2)
  outputs = {k: rng.normal(size=(6, 5)) for k in ("z_img1", "z_img2", "z_txt", "z_txt_eda")}
  neighbours = [_unit(rng.normal(size=(6, 5))) for _ in range(2)]
  t, b = 3.0, -1.5
  with jax.enable_x64(True):
    terms = declip_loss.loss_terms(outputs, None, neighbours, t, config, logit_bias=b)
  images = [_unit(outputs["z_img1"]), _unit(outputs["z_img2"])]
  texts = [_unit(outputs["z_txt"]), _unit(outputs["z_txt_eda"])]  # text_norm_eps 1e-10: below rtol.
  want_clip_mvs = np.mean([np_sigmoid_loss(i, x, t, b) for i in images for x in texts])
  want_nns = np.mean([np_sigmoid_loss(i, n, t, b) for i in images for n in neighbours])
  assert sorted(terms) == ["clip_mvs", "nns"]
  np.testing.assert_allclose(terms["clip_mvs"], want_clip_mvs, rtol=1e-9)
  np.testing.assert_allclose(terms["nns"], want_nns, rtol=1e-9)


def test_the_sigmoid_base_adds_a_learned_bias_without_weight_decay():
  from declip_jax import presets  # pylint: disable=g-import-not-at-top
  from declip_jax.training import optim, train_setup  # pylint: disable=g-import-not-at-top
  from tests.tiny_config import tiny_config  # pylint: disable=g-import-not-at-top
  config = presets.use_sigmoid(tiny_config())
  params = train_setup.Setup(config, jax.devices()[:1]).init_state().params
  assert float(params["logit_bias"]) == -10.0 and np.isclose(float(params["logit_scale"]), np.log(10.0))
  decayed = optim.weight_decay_mask(params)
  assert not decayed["logit_bias"] and not decayed["logit_scale"]
  assert "logit_bias" not in train_setup.Setup(tiny_config(), jax.devices()[:1]).init_state().params
