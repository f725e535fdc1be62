"""open_clip <-> declip_jax weights without torch: each reduced architecture's open_clip weights, imported,
give open_clip's own embeddings (recorded in tests/data/open_clip_parity.npz by tests/make_open_clip_fixture.py),
and exporting them gives those weights back. tests/test_interop.py checks the same live against open_clip."""

import numpy as np
import pytest

from declip_jax.interop import open_clip_weights as ow
from tests.conftest import REPO
from tests.open_clip_cases import ARCHITECTURES, abstract_variables, inputs, our_embeddings, reduced_config

FIXTURE = REPO / "tests" / "data" / "open_clip_parity.npz"


@pytest.fixture(scope="module")
def recorded():
  with np.load(FIXTURE) as data:
    return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_imported_open_clip_weights_give_open_clips_embeddings_and_export_back_unchanged(recorded, name):
  config = reduced_config(**ARCHITECTURES[name])
  prefix = f"{name}/state/"
  state_dict = {key[len(prefix):]: value for key, value in recorded.items() if key.startswith(prefix)}
  images, tokens, eot = inputs(config, seed=1)
  np.testing.assert_array_equal(images, recorded[f"{name}/images"])  # The inputs the fixture was made with.
  np.testing.assert_array_equal(tokens, recorded[f"{name}/tokens"])

  variables = ow.from_torch_state_dict(state_dict, config, abstract_variables(config, eot))
  got_image, got_text = our_embeddings(config, variables, images, tokens, eot)
  np.testing.assert_allclose(got_image, recorded[f"{name}/image_embedding"], rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_text, recorded[f"{name}/text_embedding"], rtol=1e-4, atol=1e-4)

  exported = ow.to_torch_state_dict(variables, config)
  assert sorted(exported) == sorted(state_dict)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(np.asarray(exported[key]).reshape(value.shape), value, err_msg=key)
    assert np.asarray(exported[key]).shape == value.shape, key
