"""Towers and heads: shapes, EOT pooling, causality, grouped BatchNorm, scan/no-scan equivalence."""

import jax
import jax.numpy as jnp
import numpy as np

from declip_jax.models import declip, heads, text, vit
from declip_jax.state import sample_batch_spec


def test_eot_position_is_first_eot_even_with_larger_mask_ids():
  eot, mask = 5, 9
  tokens = jnp.asarray([[7, 1, mask, 2, eot, 0], [7, mask, eot, 0, 0, 0]])
  np.testing.assert_array_equal(text.eot_positions(tokens, eot), [4, 2])


def _text_tower(scan=True):
  return text.TextTransformer(vocab_size=20, context_length=8, width=16, layers=2, heads=2, embed_dim=6, eot_id=19,
                              scan=scan)


def test_text_tower_is_causal_and_pools_at_eot():
  model = _text_tower()
  tokens = jnp.asarray([[18, 3, 4, 19, 0, 0, 0, 0]])
  params = model.init(jax.random.PRNGKey(0), tokens)
  z, states = model.apply(params, tokens)
  assert z.shape == (1, 6) and states.shape == (1, 8, 16)
  changed = tokens.at[0, 5].set(7)  # After EOT: causal attention keeps every earlier state, so z is unchanged.
  z2, states2 = model.apply(params, changed)
  np.testing.assert_allclose(states2[:, :5], states[:, :5], atol=1e-6)
  np.testing.assert_allclose(z2, z, atol=1e-6)
  earlier = tokens.at[0, 1].set(7)
  z3, _ = model.apply(params, earlier)
  assert not np.allclose(z3, z)


def test_scan_and_unrolled_layers_compute_the_same_function():
  tokens = jnp.asarray([[18, 3, 4, 19, 0, 0, 0, 0], [18, 5, 19, 0, 0, 0, 0, 0]])
  scanned, unrolled = _text_tower(True), _text_tower(False)
  p = scanned.init(jax.random.PRNGKey(0), tokens)["params"]
  blocks = p["transformer"]["blocks"]
  unrolled_p = {**p, "transformer": {f"block_{i}": jax.tree.map(lambda x: x[i], blocks) for i in range(2)}}
  np.testing.assert_allclose(unrolled.apply({"params": unrolled_p}, tokens)[0],
                             scanned.apply({"params": p}, tokens)[0], atol=1e-5)


def test_vit_output_shape_and_patch_embed_init_range():
  model = vit.VisionTransformer(patch_size=4, width=16, layers=1, heads=2, embed_dim=6)
  images = jnp.zeros((3, 16, 16, 3))
  params = model.init(jax.random.PRNGKey(0), images)["params"]
  assert model.apply({"params": params}, images).shape == (3, 6)
  kernel = params["patch_embed"]["kernel"]
  bound = 1 / np.sqrt(4 * 4 * 3)  # PyTorch default conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.9 * bound
  assert "bias" not in params["patch_embed"] and "proj" in params


def test_grouped_batchnorm_normalises_each_group_and_tracks_running_stats():
  rng = np.random.default_rng(0)
  x = rng.normal(loc=3.0, scale=2.0, size=(12, 5)).astype(np.float32)
  bn = heads.GroupedBatchNorm(group_size=4, momentum=0.9)
  variables = bn.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
  y, updated = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  groups = x.reshape(3, 4, 5)
  expected = (groups - groups.mean(1, keepdims=True)) / np.sqrt(groups.var(1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(y, expected.reshape(12, 5), atol=1e-5)
  stats = updated["batch_stats"]
  np.testing.assert_allclose(stats["mean"], 0.1 * groups.mean(1).mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * groups.var(1, ddof=1).mean(0), rtol=1e-5)
  # Group statistics depend only on the group: the first group's output ignores the other examples.
  y_first, _ = bn.apply(variables, jnp.asarray(x[:4]), train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(y_first, y[:4], atol=1e-6)


def test_declip_model_outputs(config):
  model = declip.build_model(config, eot_id=54)
  spec = sample_batch_spec(config, batch_size=8)
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in spec.items()}
  batch["text_mlm"] = batch["text_mlm"].at[:, 3].set(54)
  batch["text_eda"] = batch["text_mlm"]
  variables = model.init(jax.random.PRNGKey(0), batch, train=False)
  out, _ = model.apply(variables, batch, train=True, mutable=["batch_stats"])
  d, length, v = config.model.embed_dim, config.model.text.context_length, config.model.text.vocab_size
  for k in ("z_img1", "z_img2", "z_txt", "z_txt_eda"):
    assert out[k].shape == (8, d)
  assert out["mlm_logits"].shape == (8, length, v)
  assert out["p1"].shape == out["z2"].shape == (8, config.ssl.projector_dim)
  assert set(variables["params"]) == {"image_tower", "text_tower", "simsiam", "mlm_head", "logit_scale"}
