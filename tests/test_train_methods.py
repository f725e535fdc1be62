"""The official benchmark's other methods train: SLIP, FILIP and DeFILIP (and the RN50 variants) on the tiny
config, their demo and recipe configs validate, FILIP's zero-weighted global head stays frozen, and a FILIP run
evaluates with the token-wise zero-shot classifier."""

import importlib
import re

import jax
import numpy as np
import pytest

from declip_jax import config as config_lib, presets, parallel, synthetic
from declip_jax.training import optim, train_setup
from tests.tiny_config import tiny_config, tiny_resnet_config

METHODS = {"slip": presets.use_slip, "filip": presets.use_filip, "defilip": presets.use_defilip}
TERMS = {"slip": {"loss_clip_mvs", "loss_simclr"}, "filip": {"loss_filip"},
         "defilip": {"loss_clip_mvs", "loss_iss", "loss_tss", "loss_nns", "loss_filip"}}


def _two_steps(config):
  setup = train_setup.Setup(config)
  state = setup.init_state()
  initial = jax.tree.map(np.array, jax.device_get(state))  # Copies: the step donates (reuses) the state's buffers.
  step = setup.jit_train_step(config)
  for batch, _ in zip(synthetic.batches(config, setup.token_ids), range(2)):
    state, metrics = step(state, parallel.host_to_global(batch, setup.mesh))
  return initial, jax.device_get(state), jax.device_get(metrics)


@pytest.mark.parametrize("method,resnet", [("slip", False), ("filip", False), ("defilip", False), ("slip", True),
                                           ("filip", True)])
def test_each_method_trains_its_terms(method, resnet):
  config = METHODS[method]((tiny_resnet_config if resnet else tiny_config)())
  initial, state, metrics = _two_steps(config)
  assert {k for k in metrics if k.startswith("loss_")} == TERMS[method]
  assert all(np.isfinite(v) for k, v in metrics.items() if k.startswith("loss")) and metrics["update_skipped"] == 0
  changed = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), initial.params, state.params)
  if method == "slip":
    assert all(jax.tree.leaves(changed["simclr"])) and metrics["simclr_projection_std"] > 0
  if method in ("filip", "defilip"):
    assert changed["filip_image_mapping"]["dense"]["kernel"] and changed["filip_text_mapping"]["dense"]["kernel"]
    assert 3.0 <= state.params["logit_scale_dense"] <= 6.0 and metrics["filip_logit_scale"] > 0
  if method == "filip":  # The global CLIP head: no gradient, and frozen instead of decayed.
    flat = {optim.path_name(path): v for path, v in jax.tree_util.tree_flatten_with_path(changed)[0]}
    head = [name for name in flat if any(re.search(p, name) for p in optim.GLOBAL_CLIP_HEAD)]
    assert "logit_scale" in head and "text_tower/projection/kernel" in head and len(head) >= 4, head
    assert not any(flat[name] for name in head if name != "logit_scale"), head
    assert state.params["logit_scale"] == 3.0  # Unchanged but for the official clamp to [3, 6] (init 2.66).
    assert any(v for name, v in flat.items() if name.startswith("image_tower/transformer" if not resnet
                                                                   else "image_tower/layer4"))


@pytest.mark.parametrize("module", ["slip_vit_b32", "slip_rn50", "filip_vit_b32", "filip_rn50", "defilip_vit_b32",
                                    "slip_demo", "filip_demo", "defilip_demo"])
def test_method_configs_validate_with_the_official_numbers(module):
  config = importlib.import_module(f"configs.{module}").get_config()
  if not module.endswith("demo"):
    config.data.tfrecord.files, config.data.vocab_path = "/data/*.tfrecord", "bpe_simple_vocab_16e6.txt.gz"
  config_lib.validate(config, num_batch_shards=32 if not module.endswith("demo") else 1)
  w = config.loss.weights
  if module.startswith("slip"):
    assert (w.clip_mvs, w.simclr, config.data.num_image_views, config.data.augment.first_view) == (1.0, 1.0, 3, "crop")
  if module.startswith("filip"):
    assert (w.clip_mvs, w.filip, config.data.num_image_views, config.data.mask_captions) == (0.0, 1.0, 1, True)
    assert all(e.token_wise for e in config.evals.values() if e.kind == "zero_shot")
  if module.startswith("defilip"):
    assert (w.clip_mvs, w.iss, w.tss, w.nns, w.filip) == (0.4, 0.2, 0.2, 0.2, 0.2)
  if not module.endswith("demo") and not module.startswith("defilip"):
    assert (config.optim.lr, config.optim.weight_decay) == (5e-4, 0.5)
  assert config.model.filip.top_k == 16 and config.model.simclr.hidden_dim == 4096


def test_a_filip_run_evaluates_with_the_token_wise_classifier(tmp_path):
  from declip_jax import train  # pylint: disable=g-import-not-at-top  (TensorFlow)
  config = presets.use_filip(tiny_config())
  config.evals = config_lib.token_wise_evals(config.evals)
  config.train.num_steps = 2
  out = train.run(config, str(tmp_path))
  assert set(out["eval"]) == {"zero_shot_colour", "zero_shot_shape"}  # No retrieval on untrained global heads.
  for result in out["eval"].values():
    assert result["token_wise"] and 0 <= result["metrics"]["zero_shot_top1"] <= 1 and result["num_examples"] == 40


@pytest.mark.parametrize("method", ["slip", "filip", "defilip"])
def test_the_aot_check_compiles_each_method(method):
  from declip_jax.aot import ladder  # pylint: disable=g-import-not-at-top
  attempt = ladder.try_compile(METHODS[method](tiny_config()), jax.devices()[:1], "as configured", {})
  assert attempt.fits and attempt.needed_gib > 0 and attempt.cost["flops"] > 0
