"""Low-resolution pretraining (CLIPA, docs/design.md §18): a ViT's position embeddings resized to another patch
grid, and a run fine-tuned at full size from one pretrained at a lower resolution."""

import jax
import numpy as np
import pytest

from declip_jax import train
from declip_jax.interop import convert, open_clip_weights
from declip_jax.models import position_resize
from declip_jax.training import train_setup
from tests.tiny_config import tiny_config


def test_positions_resize_keeps_cls_and_smooth_grids():
  rng = np.random.default_rng(0)
  assert position_resize.resize_vit_positions(np.ones((17, 3)), 16).shape == (17, 3)
  grid = np.stack(np.meshgrid(np.arange(4.0), np.arange(4.0), indexing="ij"), axis=-1).reshape(16, 2)
  positions = np.concatenate([rng.normal(size=(1, 2)), grid + 5.0], axis=0).astype(np.float32)
  up = position_resize.resize_vit_positions(positions, 64)
  assert up.shape == (65, 2)
  np.testing.assert_array_equal(up[0], positions[0])  # [CLS] untouched.
  # A linear ramp stays a ramp: the 8 x 8 grid's rows and columns increase, within the old range.
  rows = up[1:, 0].reshape(8, 8)
  assert np.all(np.diff(rows[:, 0]) > 0) and rows.min() >= 5.0 - 0.3 and rows.max() <= 8.0 + 0.3
  constant = np.concatenate([np.zeros((1, 2)), np.full((49, 2), 3.0)]).astype(np.float32)
  np.testing.assert_allclose(position_resize.resize_vit_positions(constant, 16)[1:], 3.0, rtol=1e-5)
  with pytest.raises(ValueError, match="square grids"):
    position_resize.resize_vit_positions(positions, 20)


def test_a_run_pretrained_at_low_resolution_is_fine_tuned_at_full_size(tmp_path):
  """Two steps at 16 px (4 x 4 patches) on captions cut to 8 tokens, then its weights into a 32 px model (8 x 8)
  with 16 tokens: every variable carried over, the position grid resized, the text positions' first 8 rows kept
  and the rest as initialised, and the new run trains from that step-0 checkpoint."""
  low = tiny_config()
  low.train.num_steps, low.evals = 2, {}
  low.model.text.context_length = 8
  train.run(low, str(tmp_path / "low"))
  full = tiny_config()
  full.model.image.image_size = 32
  full.train.num_steps, full.evals = 1, {}
  count = convert.import_weights(full, str(tmp_path / "low"), str(tmp_path / "full"), "declip_jax")
  setup = train_setup.Setup(full)
  assert count == len(jax.tree.leaves(setup.init_state().params)) + len(jax.tree.leaves(setup.init_state().batch_stats))
  from declip_jax import loading  # pylint: disable=g-import-not-at-top
  source, imported = loading.load(str(tmp_path / "low")), loading.load(str(tmp_path / "full"))
  assert imported.step == 0
  before = np.asarray(source.variables["params"]["image_tower"]["positional_embedding"])
  after = np.asarray(imported.variables["params"]["image_tower"]["positional_embedding"])
  assert before.shape[0] == 17 and after.shape[0] == 65
  np.testing.assert_allclose(after, position_resize.resize_vit_positions(before, 64), rtol=1e-6)
  text_after = np.asarray(imported.variables["params"]["text_tower"]["positional_embedding"])
  assert text_after.shape[0] == 16
  np.testing.assert_array_equal(text_after[:8], source.variables["params"]["text_tower"]["positional_embedding"])
  np.testing.assert_array_equal(text_after[8:], setup.init_state().params["text_tower"]["positional_embedding"][8:])
  out = train.run(full, str(tmp_path / "full"))
  assert out["step"] == 1
  other = tiny_config()
  other.model.image.width = 48  # Another architecture: refused, naming the parameters.
  with pytest.raises(open_clip_weights.WeightMismatchError, match="image_tower/"):
    convert.import_weights(other, str(tmp_path / "low"), str(tmp_path / "other"), "declip_jax")


def test_open_clip_weights_at_another_resolution_import_with_resized_positions():
  """An open_clip state dict of a 16 px model (4 x 4 patches, 16 tokens) loads into a 32 px model (8 x 8) with
  captions cut to 8 tokens: the grid resized, the first 8 text positions kept."""
  from declip_jax.models import declip  # pylint: disable=g-import-not-at-top
  from declip_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from declip_jax import presets  # pylint: disable=g-import-not-at-top

  def variables(config):
    model = declip.build_model(config, eot_id=3)
    spec = state_lib.sample_batch_spec(config, batch_size=2)
    return model.init(jax.random.PRNGKey(0), {k: np.zeros(v.shape, v.dtype) for k, v in spec.items()}, train=False)

  low = presets.use_clip_baseline(tiny_config())
  high = presets.use_clip_baseline(tiny_config())
  high.model.image.image_size = 32
  high.model.text.context_length = 8
  low_variables = jax.tree.map(np.asarray, variables(low))
  state_dict = open_clip_weights.to_torch_state_dict(low_variables, low)
  imported = open_clip_weights.from_torch_state_dict(state_dict, high, jax.tree.map(np.asarray, variables(high)))
  positions = imported["params"]["image_tower"]["positional_embedding"]
  assert positions.shape[0] == 65
  np.testing.assert_allclose(
      positions, position_resize.resize_vit_positions(low_variables["params"]["image_tower"]["positional_embedding"],
                                                       64), rtol=1e-6)
  np.testing.assert_array_equal(imported["params"]["text_tower"]["positional_embedding"],
                                low_variables["params"]["text_tower"]["positional_embedding"][:8])


def test_text_positions_carry_to_another_caption_length():
  positions, init = np.arange(12.0).reshape(4, 3), -np.ones((6, 3))
  longer = position_resize.carry_positions("text", positions, init)
  np.testing.assert_array_equal(longer, np.concatenate([positions, init[4:]]))
  np.testing.assert_array_equal(position_resize.carry_positions("text", positions, init[:2]), positions[:2])
  abstract = jax.ShapeDtypeStruct((6, 3), np.float32)  # No initial values: unchanged, reported as a mismatch.
  assert position_resize.carry_positions("text", positions, abstract).shape == (4, 3)
  assert position_resize.carry_positions("text", positions, np.zeros((6, 5))).shape == (4, 3)
