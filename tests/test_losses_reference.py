"""Every loss term, its gradients, the NN lookup and the queue update against the authors' own outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from declip_jax import config as config_lib
from declip_jax.training import nn_queue
from declip_jax.losses import contrastive, declip

INPUTS = ("img1", "img2", "txt", "txt_eda", "p1", "p2", "z1", "z2", "mlm_logits")


def _total(inputs, logit_scale_param, labels, nn_txt, nn_txt_eda):
  config = config_lib.base_config()
  outputs = {"z_img1": inputs["img1"], "z_img2": inputs["img2"], "z_txt": inputs["txt"],
             "z_txt_eda": inputs["txt_eda"], "p1": inputs["p1"], "p2": inputs["p2"], "z1": inputs["z1"],
             "z2": inputs["z2"], "mlm_logits": inputs["mlm_logits"]}
  scale = contrastive.capped_logit_scale(logit_scale_param, config.model.logit_scale.cap)
  terms = declip.loss_terms(outputs, labels, [nn_txt, nn_txt_eda], scale, config)
  return declip.weighted_total(terms, config), terms


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


@pytest.mark.parametrize("prefix", ["", "cap_"])
def test_terms_and_gradients_match_official(reference, x64, prefix):
  r = reference
  inputs = {k: jnp.asarray(r[k]) for k in INPUTS}
  s = jnp.asarray(r[f"{prefix}logit_scale_param"])
  args = (jnp.asarray(r["mlm_labels"]), jnp.asarray(r["nn_txt"]), jnp.asarray(r["nn_txt_eda"]))
  (total, terms), (grads, grad_s) = jax.value_and_grad(_total, argnums=(0, 1), has_aux=True)(inputs, s, *args)
  expected_terms = ("clip_mvs", "nns", "total") if prefix else ("clip_mvs", "iss", "tss", "nns", "total")
  for name in expected_terms:
    got = total if name == "total" else terms[name]
    np.testing.assert_allclose(got, r[prefix + name], rtol=1e-9, atol=1e-12, err_msg=name)
  np.testing.assert_allclose(grad_s, r[prefix + "grad_logit_scale_param"], rtol=1e-9)
  for name in INPUTS:
    key = f"{prefix}grad_{name}"
    if key in r:
      np.testing.assert_allclose(grads[name], r[key], rtol=1e-7, atol=1e-12, err_msg=key)


def test_straight_through_cap_keeps_gradient(reference, x64):
  s = jnp.asarray(reference["cap_logit_scale_param"])
  assert float(contrastive.capped_logit_scale(s, 100.0)) == pytest.approx(100.0)
  assert float(jax.grad(lambda s: contrastive.capped_logit_scale(s, 100.0))(s)) == pytest.approx(np.exp(5.5))


def test_nn_lookup_matches_official(reference, x64):
  queue = jnp.asarray(reference["queue_init"])[None]  # One group.
  for text, expected in (("txt", "nn_txt"), ("txt_eda", "nn_txt_eda")):
    query = contrastive.l2_normalize(jnp.asarray(reference[text]), 1e-10)
    for chunk in (40, 7, 5):
      neighbours, _ = nn_queue.lookup(queue, query, "local", chunk_size=chunk)
      np.testing.assert_allclose(neighbours, reference[expected], rtol=1e-9, atol=1e-12)


def test_queue_update_matches_official(reference, x64):
  queue = jnp.asarray(reference["queue_init"])[None]
  txt = contrastive.l2_normalize(jnp.asarray(reference["txt"]), 1e-10)
  txt_eda = contrastive.l2_normalize(jnp.asarray(reference["txt_eda"]), 1e-10)
  new_queue, ptr = nn_queue.enqueue(queue, jnp.zeros((1,), jnp.int32), [txt_eda, txt])
  np.testing.assert_allclose(new_queue[0], reference["queue_after"], rtol=1e-9, atol=1e-12)
  assert int(ptr[0]) == int(reference["queue_ptr_after"])
