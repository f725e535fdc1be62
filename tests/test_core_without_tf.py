"""The training core without TensorFlow: token ids from the config, synthetic batches, a train step and a
checkpoint round trip. Every test here imports no TensorFlow or clu, so CI also runs this file in the
newest-JAX environment that has neither (requirements-newest-core.txt)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from declip_jax import builtin_vocabulary, parallel, synthetic, token_ids
from declip_jax.training import checkpointing, state as state_lib, train_setup
from declip_jax.losses import mlm
from tests.conftest import REPO
from tests.tiny_config import tiny_config


def test_training_core_runs_with_tensorflow_and_clu_unimportable():
  """A process whose import hook raises on tensorflow*, tensorflow_datasets and clu builds the demo config's
  state and runs 2 train steps on synthetic batches."""
  out = subprocess.run([sys.executable, "tests/core_without_tf_check.py"], cwd=REPO, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.splitlines()
  losses = [json.loads(l.split("=", 1)[1]) for l in lines if l.startswith("losses=")]
  assert len(losses) == 2 and {"loss", "loss_clip_mvs", "loss_iss", "loss_tss", "loss_nns"} <= set(losses[0])
  assert all(np.isfinite(v) for step in losses for v in step.values())
  assert "step=2" in lines and "imported=[]" in lines


def test_token_ids_of_the_recipe_need_no_file():
  """clip_bpe with CLIP's 48,894 merges: the official layouts' ids by arithmetic (docs/design.md §4)."""
  config = tiny_config()
  config.data.tokenizer, config.data.vocab_path, config.data.bpe_num_merges = "clip_bpe", "", 48_894
  declip = token_ids.from_config(config)
  assert (declip.vocab_size, declip.mask_id, declip.sot_id, declip.eot_id, declip.pad_id) == (49409, 49406, 49407,
                                                                                             49408, 0)
  config.data.token_layout = "openai"
  openai = token_ids.from_config(config)
  assert (openai.sot_id, openai.eot_id, openai.mask_id) == (49406, 49407, 49408)
  config.data.tokenizer = "word"
  words = token_ids.from_config(config)
  n = len(builtin_vocabulary.vocabulary())
  assert (words.pad_id, words.unk_id, words.mask_id, words.sot_id, words.eot_id, words.vocab_size) == (
      0, 1, n + 2, n + 3, n + 4, n + 5)


def test_synthetic_batch_has_the_spec_shapes_valid_values_and_the_recipe_masking_rate():
  config = tiny_config()
  ids = token_ids.from_config(config)
  batch = synthetic.batch(config, ids, batch_size=512, seed=3)
  spec = state_lib.sample_batch_spec(config, 512)
  assert set(batch) == set(spec) == {"img1", "img2", "text_mlm", "mlm_labels", "text_eda"}
  for key, s in spec.items():
    assert batch[key].shape == s.shape and batch[key].dtype == s.dtype, key
  mean, std = np.asarray(config.data.mean), np.asarray(config.data.std)
  pixels = batch["img1"] * std + mean
  assert pixels.min() >= 0 and pixels.max() <= 1 and not np.allclose(batch["img1"], batch["img2"])
  labels, masked, eda = batch["mlm_labels"], batch["text_mlm"], batch["text_eda"]
  original = np.where(labels != mlm.IGNORE_LABEL, labels, masked)
  for tokens in (original, eda):
    assert (tokens[:, 0] == ids.sot_id).all() and (tokens >= 0).all() and (tokens < ids.vocab_size).all()
    eot = np.argmax(tokens == ids.eot_id, axis=1)
    assert (tokens[np.arange(len(tokens)), eot] == ids.eot_id).all() and (eot >= 5).all()
    after = np.arange(tokens.shape[1])[None] > eot[:, None]
    assert (tokens[after] == ids.pad_id).all()
    words = (np.arange(tokens.shape[1])[None] < eot[:, None]) & (np.arange(tokens.shape[1])[None] > 0)
    assert not np.isin(tokens[words], ids.special_ids).any()
  chosen = labels != mlm.IGNORE_LABEL
  eligible = ~np.isin(original, ids.special_ids)
  assert not (chosen & ~eligible).any()
  rate = chosen.sum() / eligible.sum()  # ~3,500 eligible tokens: 15% +- 2% is 3.3 standard deviations.
  assert 0.13 < rate < 0.17, rate
  assert 0.75 < np.mean(masked[chosen] == ids.mask_id) < 0.85
  assert (masked[~chosen] == original[~chosen]).all()
  again = synthetic.batch(config, ids, batch_size=512, seed=3)
  assert all(np.array_equal(batch[k], again[k]) for k in batch)
  assert not np.array_equal(synthetic.batch(config, ids, 512, seed=4)["text_eda"], eda)


def test_checkpoint_round_trip_resumes_to_the_same_state(tmp_path):
  """Save after one step, restore into the abstract state: the same arrays, and the next step from either
  copy gives bitwise the same state."""
  config = tiny_config()
  setup = train_setup.Setup(config)
  step = setup.jit_train_step(config)
  first, second = [parallel.host_to_global(b, setup.mesh) for _, b in
                   zip(range(2), synthetic.batches(config, setup.token_ids))]
  state, _ = step(setup.init_state(), first)
  ckpt = checkpointing.Checkpointer(str(tmp_path), keep=2, async_save=False)
  ckpt.save(1, state, {"step": 1})
  ckpt.wait()
  restored, meta = ckpt.restore(1, setup.abstract_state)
  ckpt.close()
  assert meta["step"] == 1
  for a, b in zip(jax.tree.leaves(jax.device_get(restored)), jax.tree.leaves(jax.device_get(state))):
    np.testing.assert_array_equal(a, b)
  expected, _ = step(state, second)
  resumed, _ = step(restored, second)
  for a, b in zip(jax.tree.leaves(jax.device_get(resumed)), jax.tree.leaves(jax.device_get(expected))):
    np.testing.assert_array_equal(a, b)


def test_a_relative_workdir_saves_and_restores(tmp_path, monkeypatch):
  """`--workdir=runs/x` (relative, as the study runner passes) checkpoints like an absolute path: Orbax itself
  refuses relative paths at the first save."""
  monkeypatch.chdir(tmp_path)
  config = tiny_config()
  setup = train_setup.Setup(config)
  state = setup.init_state()
  ckpt = checkpointing.Checkpointer("runs/x", keep=1, async_save=False)
  ckpt.save(0, state, {"step": 0})
  ckpt.wait()
  restored, _ = ckpt.restore(0, setup.abstract_state)
  ckpt.close()
  assert (tmp_path / "runs" / "x" / "checkpoints" / "0").is_dir()
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(restored)),
                                                  jax.tree.leaves(jax.device_get(state))))
