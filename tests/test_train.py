"""The train step and loop: updates, non-finite skipping, frozen params, queue, exact resume, eval output."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from declip_jax import parallel, train
from declip_jax.training import checkpointing, train_setup, train_step
from declip_jax.data import pipeline, tokenizers
from declip_jax.models import declip
from tests.tiny_config import tiny_config, tiny_resnet_config


@pytest.fixture(scope="module")
def setup_and_batches():
  config = tiny_config()
  setup = train_setup.Setup(config)
  batches = pipeline.numpy_batches(pipeline.train_dataset(config, tokenizers.build(config)))
  return config, setup, [next(batches) for _ in range(3)]


def _host(tree):
  return jax.tree.map(np.asarray, jax.device_get(tree))


def test_train_step_learns_and_keeps_the_recipe_invariants(setup_and_batches):
  config, setup, batches = setup_and_batches
  step = setup.jit_train_step(config)
  state = setup.init_state()
  initial = _host(state)
  batch = parallel.host_to_global(batches[0], setup.mesh)
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  for key in ("loss_clip_mvs", "loss_iss", "loss_tss", "loss_nns", "logit_scale", "grad_norm", "learning_rate",
              "nn_similarity", "image_embedding_std", "text_embedding_std", "iss_projection_std"):
    assert np.isfinite(float(metrics[key])), key
  assert 0 < float(metrics["image_embedding_std"]) <= 1 / np.sqrt(config.model.embed_dim) + 1e-6
  final = _host(state)
  np.testing.assert_array_equal(final.params["image_tower"]["patch_embed"]["kernel"],
                                initial.params["image_tower"]["patch_embed"]["kernel"])
  assert 3.0 <= float(final.params["logit_scale"]) <= 6.0
  assert int(final.step) == 8 and int(final.health.nonfinite_steps) == 0
  per_step = 2 * config.train.batch_size // config.nns.groups
  np.testing.assert_array_equal(final.nn_queue_ptr, [(8 * per_step) % config.nns.group_size] * config.nns.groups)
  assert not np.allclose(final.batch_stats["simsiam"]["projector_bn0"]["mean"],
                         initial.batch_stats["simsiam"]["projector_bn0"]["mean"])


def test_non_finite_loss_skips_the_update(setup_and_batches):
  config, setup, batches = setup_and_batches
  step = setup.jit_train_step(config)
  state = setup.init_state()
  before = _host(state)
  bad = dict(batches[0])
  bad["img1"] = bad["img1"].copy()
  bad["img1"][0, 0, 0, 0] = np.nan
  state, metrics = step(state, parallel.host_to_global(bad, setup.mesh))
  after = _host(state)
  assert float(metrics["update_skipped"]) == 1.0
  assert int(after.step) == 1 and int(after.health.nonfinite_steps) == 1
  for field in ("params", "opt_state", "batch_stats", "nn_queue", "nn_queue_ptr"):
    jax.tree.map(np.testing.assert_array_equal, getattr(after, field), getattr(before, field))
  state, metrics = step(state, parallel.host_to_global(batches[1], setup.mesh))
  assert float(metrics["update_skipped"]) == 0.0


def test_clip_baseline_step_runs_infonce_only():
  config = tiny_config(clip_baseline=True)
  setup = train_setup.Setup(config)
  batch = next(pipeline.numpy_batches(pipeline.train_dataset(config, tokenizers.build(config))))
  assert set(batch) == {"img1", "text_mlm"}
  state, metrics = setup.jit_train_step(config)(setup.init_state(), parallel.host_to_global(batch, setup.mesh))
  assert {k for k in metrics if k.startswith("loss_")} == {"loss_clip_mvs"}
  assert set(state.params) == {"image_tower", "text_tower", "logit_scale"}


def _leaves_equal(a, b):
  for x, y in zip(jax.tree.leaves(_host(a)), jax.tree.leaves(_host(b))):
    np.testing.assert_array_equal(x, y)


def test_resumed_run_matches_uninterrupted_run_exactly(tmp_path):
  config = tiny_config()
  straight = train.run(config, str(tmp_path / "straight"))
  config.train.num_steps = 3
  train.run(config, str(tmp_path / "resumed"))
  config.train.num_steps = 6
  resumed = train.run(config, str(tmp_path / "resumed"))
  setup = train_setup.Setup(config)
  states = []
  for name in ("straight", "resumed"):
    ckpt = checkpointing.Checkpointer(str(tmp_path / name), keep=3, async_save=False)
    assert ckpt.latest_step() == 6
    states.append(ckpt.restore(6, setup.abstract_state)[0])
    ckpt.close()
  _leaves_equal(states[0], states[1])
  assert straight["eval"] == resumed["eval"]
  results = json.loads((tmp_path / "resumed" / "eval_results.json").read_text())
  assert results["zero_shot_shape"]["step"] == results["zero_shot_colour"]["step"] == 6
  assert set(results["zero_shot_colour"]["metrics"]) >= {"zero_shot_top1", "zero_shot_top5"}
  assert set(results["retrieval"]["metrics"]) >= {"i2t_recall@1", "t2i_recall@10"}


def test_evaluate_restores_the_latest_checkpoint(tmp_path):
  config = tiny_config()
  config.train.num_steps = 3
  trained = train.run(config, str(tmp_path))
  (tmp_path / "eval_results.json").unlink()
  results = train.evaluate(config, str(tmp_path))
  assert results == trained["eval"]
  assert json.loads((tmp_path / "eval_results.json").read_text()) == results


def test_resnet_tower_trains_with_batchnorm_in_the_state_and_evaluates_with_its_running_statistics(tmp_path):
  """The ResNet's BatchNorm statistics move in training, are checkpointed, and are what evaluation and load()
  use (evaluation results equal a re-evaluation from the checkpoint; load's embeddings = the model applied to
  the checkpoint's params and statistics)."""
  import declip_jax  # pylint: disable=g-import-not-at-top
  from declip_jax.models import declip  # pylint: disable=g-import-not-at-top
  config = tiny_resnet_config()
  config.train.num_steps = config.checkpoint.every_steps = config.eval.every_steps = 2
  trained = train.run(config, str(tmp_path))
  assert trained["step"] == 2 and np.isfinite(trained["loss_summary"]["loss"]["final"])
  assert train.evaluate(config, str(tmp_path)) == trained["eval"]
  loaded = declip_jax.load(str(tmp_path))
  stats = loaded.variables["batch_stats"]["image_tower"]
  assert not np.allclose(stats["bn1"]["mean"], 0) and not np.allclose(stats["layer2_0"]["bn2"]["var"], 1)
  images = np.random.default_rng(0).normal(size=(5, 32, 32, 3)).astype(np.float32)
  direct = loaded.module.apply(loaded.variables, images, method=declip.DeCLIP.encode_image)
  np.testing.assert_allclose(loaded.encode_image(images), direct, rtol=1e-5, atol=1e-6)
  without_stats = loaded.module.apply({**loaded.variables, "batch_stats": jax.tree.map(
      lambda x: jnp.ones_like(x) if x.ndim else x, loaded.variables["batch_stats"])}, images,
      method=declip.DeCLIP.encode_image)
  assert not np.allclose(direct, without_stats, atol=1e-3)


def test_evaluate_without_checkpoint_says_so(tmp_path):
  with pytest.raises(FileNotFoundError, match="No checkpoint"):
    train.evaluate(tiny_config(), str(tmp_path))


def _tear(step_dir):
  """Truncates every data file of a saved checkpoint, as a crash in the middle of writing would."""
  for f in step_dir.rglob("*"):
    if f.is_file() and "d" in f.relative_to(step_dir).parts:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])


def test_torn_latest_checkpoint_falls_back_to_the_previous_one(tmp_path):
  config = tiny_config()
  train.run(config, str(tmp_path))
  setup = train_setup.Setup(config)
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3, async_save=False)
  good = _host(ckpt.restore(6, setup.abstract_state)[0])
  ckpt.close()
  _tear(tmp_path / "checkpoints" / "6")
  out = train.run(config, str(tmp_path))  # Resumes from step 3 and trains steps 4-6 again.
  assert out["step"] == 6 and (tmp_path / "checkpoints" / "6.unreadable").exists()
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=3, async_save=False)
  assert ckpt.latest_step() == 6
  _leaves_equal(ckpt.restore(6, setup.abstract_state)[0], good)
  ckpt.close()


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
  config = tiny_config()
  config.train.num_steps = 3
  train.run(config, str(tmp_path))
  _tear(tmp_path / "checkpoints" / "3")
  with pytest.raises(checkpointing.UnreadableCheckpointsError, match="None of the checkpoints"):
    train.run(config, str(tmp_path))


def test_spread_is_one_over_sqrt_dim_for_spread_rows_and_zero_for_collapsed_ones():
  rows = jax.random.normal(jax.random.key(0), (4096, 16))
  np.testing.assert_allclose(float(train_step.spread(rows)), 1 / 4, rtol=0.02)
  np.testing.assert_allclose(float(train_step.spread(jnp.tile(rows[:1], (64, 1)) * 3)), 0.0, atol=1e-6)


def test_a_queue_holding_most_of_the_data_is_warned_about(caplog):
  config = tiny_config()  # 2 x 40 slots, 2 text views: 20 of the 96 pairs per buffer (19%).
  with caplog.at_level("WARNING"):
    train._warn_if_the_queue_outgrows_the_data(config)
  assert "19% of the lookups will find the pair's own caption" in caplog.text
  assert "set nns.group_size below 19" in caplog.text
  caplog.clear()
  config.data.builtin.num_train = 2000
  with caplog.at_level("WARNING"):
    train._warn_if_the_queue_outgrows_the_data(config)
  assert "NNS" not in caplog.text


def test_patch_masking_draws_from_the_step_and_ends_with_unmasked_tuning(tmp_path, setup_and_batches):
  """model.image.mask_ratio 0.5: the masked step's loss differs from the unmasked one's on the same state and
  batch, and is the same when repeated (the masks are a function of the state's rng and step); a 4-step run with
  unmasked_final_fraction 0.5 masks steps 1-2 and trains steps 3-4 unmasked."""
  from declip_jax import logs  # pylint: disable=g-import-not-at-top
  config, setup, batches = setup_and_batches
  masked = config.copy_and_resolve_references()
  masked.model.image.mask_ratio = 0.5
  batch = parallel.host_to_global(batches[0], setup.mesh)
  losses = {}
  masked_model = declip.build_model(masked, setup.token_ids.eot_id)
  for name, c, model in (("plain", config, setup.model), ("masked", masked, masked_model),
                         ("again", masked, masked_model)):
    step = jax.jit(train_step.make_train_step(c, model, setup.tx, setup.mesh))
    _, metrics = step(setup.init_state(), batch)
    losses[name] = float(metrics["loss"])
    assert float(metrics["image_mask_ratio"]) == c.model.image.mask_ratio
  assert losses["masked"] == losses["again"] and abs(losses["masked"] - losses["plain"]) > 1e-4, losses
  masked.train.num_steps, masked.train.log_every_steps = 4, 1
  masked.model.image.unmasked_final_fraction = 0.5
  masked.evals = {}
  train.run(masked, str(tmp_path))
  ratios = logs.read_scalars(str(tmp_path), ("train/image_mask_ratio",))["train/image_mask_ratio"]
  assert [(s, v) for s, v in ratios] == [(1, 0.5), (2, 0.5), (3, 0.0), (4, 0.0)]
