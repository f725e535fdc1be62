"""Weight-decay exclusions by name, frozen parameters, the LR schedule and the logit-scale clamp."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from declip_jax.training import optim
from declip_jax.models import declip
from declip_jax.training.state import sample_batch_spec


def _params(config):
  model = declip.build_model(config, eot_id=54)
  spec = sample_batch_spec(config, batch_size=8)
  return model.init(jax.random.PRNGKey(0), {k: jnp.zeros(v.shape, v.dtype) for k, v in spec.items()},
                    train=False)["params"]


def _flat(tree):
  return {optim.path_name(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_weight_decay_mask_follows_official_names(config):
  mask = _flat(optim.weight_decay_mask(_params(config)))
  decayed = {k for k, v in mask.items() if v}
  excluded = {k for k, v in mask.items() if not v}
  for name in ("image_tower/transformer/blocks/attn/in_proj_bias", "image_tower/transformer/blocks/attn/in_proj_kernel",
               "image_tower/class_embedding", "image_tower/positional_embedding", "image_tower/proj",
               "text_tower/token_embedding/embedding", "text_tower/positional_embedding",
               "text_tower/projection/kernel", "image_tower/patch_embed/kernel"):
    assert name in decayed, name
  for name in ("logit_scale", "image_tower/ln_pre/scale", "image_tower/ln_post/bias",
               "text_tower/transformer/blocks/ln_1/scale", "text_tower/transformer/blocks/c_fc/bias",
               "text_tower/projection/bias", "simsiam/projector_bn0/scale",
               "mlm_head/dense/bias"):
    assert name in excluded, name


def test_frozen_patch_embed_gets_no_update_not_even_weight_decay(config):
  params = _params(config)
  tx = optim.build_optimizer(config)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  new = params
  for _ in range(3):
    updates, opt_state = tx.update(grads, opt_state, new)
    new = optax.apply_updates(new, updates)
  np.testing.assert_array_equal(new["image_tower"]["patch_embed"]["kernel"],
                                params["image_tower"]["patch_embed"]["kernel"])
  assert not np.allclose(new["image_tower"]["proj"], params["image_tower"]["proj"])
  config.model.image.freeze_patch_embed = False
  tx = optim.build_optimizer(config)
  updates, _ = tx.update(grads, tx.init(params), params)
  assert np.any(updates["image_tower"]["patch_embed"]["kernel"] != 0)


def test_learning_rate_schedule_warmup_then_cosine(config):
  o = config.optim
  o.lr, o.warmup_init_lr, o.warmup_steps, o.schedule_steps = 1e-3, 1e-4, 2500, 128_001
  schedule = optim.learning_rate_schedule(o)
  np.testing.assert_allclose(schedule(0), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(schedule(1250), 5.5e-4, rtol=1e-5)
  np.testing.assert_allclose(schedule(2500), 1e-3, rtol=1e-6)
  mid = 2500 + (128_001 - 2500) // 2
  np.testing.assert_allclose(schedule(mid), 5e-4, rtol=1e-3)
  assert float(schedule(128_001)) < 1e-9


def test_logit_scale_clamp(config):
  for value, expected in ((2.659, 3.0), (4.0, 4.0), (7.0, 6.0)):
    assert float(optim.clamp_logit_scale({"logit_scale": jnp.float32(value)}, config)["logit_scale"]) == \
        np.float32(expected)
