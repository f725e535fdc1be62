"""open_clip <-> declip_jax weights: random open_clip models imported give the same embeddings in declip_jax,
and exported back give them again in open_clip (needs the interop extra: torch, open_clip)."""

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from declip_jax.interop import open_clip_weights as ow  # noqa: E402
from tests.open_clip_cases import (ARCHITECTURES, abstract_variables, inputs, our_embeddings,  # noqa: E402
                                   reduced_config)
from tests.conftest import REPO  # noqa: E402
from tests.tiny_config import tiny_config  # noqa: E402

def _random_open_clip(config, seed):
  torch.manual_seed(seed)
  model = open_clip.model.CLIP(**ow.open_clip_model_config(config)).eval()
  with torch.no_grad():  # Norms and biases start at 1/0 (ResNet bn3 at 0): randomise them so a swap would show.
    for name, p in model.named_parameters():
      if name.endswith(("bias", "ln_pre.weight", "ln_post.weight", "ln_final.weight", "ln_1.weight", "ln_2.weight")):
        p.add_(0.1 * torch.randn_like(p))
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.running_mean.normal_(0.0, 0.2)
        module.running_var.uniform_(0.5, 1.5)
  return model


def _open_clip_embeddings(model, images, tokens):
  with torch.no_grad():
    image = model.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    text = model.encode_text(torch.from_numpy(tokens).long()).numpy()
  return image, text


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_import_then_export_matches_open_clip(name):
  config = reduced_config(**ARCHITECTURES[name])
  reference = _random_open_clip(config, seed=0)
  images, tokens, eot = inputs(config, seed=1)
  want_image, want_text = _open_clip_embeddings(reference, images, tokens)

  state_dict = {k: v.numpy() for k, v in reference.state_dict().items()}
  variables = ow.from_torch_state_dict(state_dict, config, abstract_variables(config, eot))
  got_image, got_text = our_embeddings(config, variables, images, tokens, eot)
  np.testing.assert_allclose(got_image, want_image, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_text, want_text, rtol=1e-4, atol=1e-4)

  exported = _random_open_clip(config, seed=5)  # Different weights, replaced by the export.
  exported.load_state_dict({k: torch.from_numpy(v) for k, v in ow.to_torch_state_dict(variables, config).items()})
  again_image, again_text = _open_clip_embeddings(exported, images, tokens)
  np.testing.assert_allclose(again_image, want_image, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(again_text, want_text, rtol=1e-5, atol=1e-6)


def test_mismatches_are_listed_by_name():
  config = reduced_config(**ARCHITECTURES["vit_b32"])
  state_dict = {k: v.numpy() for k, v in _random_open_clip(config, 0).state_dict().items()}
  state_dict["visual.extra.weight"] = np.zeros(3)
  del state_dict["ln_final.bias"]
  state_dict["visual.proj"] = np.zeros((48, 7), np.float32)
  with pytest.raises(ow.WeightMismatchError) as error:
    ow.from_torch_state_dict(state_dict, config, abstract_variables(config, 59))
  message = str(error.value)
  assert "unknown keys (1): visual.extra.weight" in message
  assert "missing keys (1): ln_final.bias" in message
  assert "visual.proj: (48, 7) does not give (48, 24)" in message


def test_safetensors_round_trip_without_torch(tmp_path):
  config = reduced_config(**ARCHITECTURES["vit_b16"])
  state_dict = {k: v.numpy() for k, v in _random_open_clip(config, 0).state_dict().items()}
  weights, model_config = ow.write_open_clip(tmp_path, state_dict, ow.open_clip_model_config(config))
  loaded = ow.read_state_dict(str(weights))
  assert loaded.keys() == state_dict.keys() and all(np.array_equal(loaded[k], state_dict[k]) for k in loaded)
  assert model_config.exists()


def test_trained_declip_model_exports_for_open_clip_and_its_stock_tokenizer(tmp_path):
  """A DeCLIP run (declip token layout, text projection with bias, QuickGELU, frozen patch embedding) trained
  2 steps -> export -> open_clip.create_model_and_transforms + open_clip's own tokenizer: same embeddings."""
  import declip_jax  # pylint: disable=g-import-not-at-top
  from declip_jax import train  # pylint: disable=g-import-not-at-top
  from declip_jax.interop import convert  # pylint: disable=g-import-not-at-top
  config = tiny_config()
  config.train.num_steps = 2
  config.data.tokenizer = "clip_bpe"
  config.data.vocab_path = open_clip.tokenizer.default_bpe()  # OpenAI's merges file, shipped with open_clip.
  config.model.text.vocab_size = 49_409
  config.evals = {}
  train.run(config, str(tmp_path / "run"))
  weights, model_config = convert.export_weights(str(tmp_path / "run"), str(tmp_path / "out"), "declip_tiny")
  open_clip.add_model_config(str(model_config))
  model, _, _ = open_clip.create_model_and_transforms("declip_tiny", pretrained=str(weights))
  model.eval()
  ours = declip_jax.load(str(tmp_path / "run"))
  captions = ["a red circle on the left", "A photo of a SMALL blue square!", "there is a green ring"]
  with torch.no_grad():
    theirs = model.encode_text(open_clip.get_tokenizer("declip_tiny")(captions)).numpy()
  np.testing.assert_allclose(ours.encode_text(captions), theirs, rtol=1e-4, atol=1e-5)
  images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = model.encode_image(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
  np.testing.assert_allclose(ours.encode_image(images), theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["vit_b32", "rn50"])
def test_import_command_starts_a_run_from_open_clip_weights(tmp_path, name):
  """The step-0 checkpoint holds the weights (a ResNet's BatchNorm statistics too): load() encodes as open_clip;
  training continues from it (ViT)."""
  import declip_jax  # pylint: disable=g-import-not-at-top
  from declip_jax import train  # pylint: disable=g-import-not-at-top
  from declip_jax.interop import convert  # pylint: disable=g-import-not-at-top
  config = reduced_config(**ARCHITECTURES[name])
  config.model.text.vocab_size = 58  # The built-in word vocabulary, so that the run can train on.
  reference = _random_open_clip(config, seed=3)
  weights, _ = ow.write_open_clip(tmp_path / "w", {k: v.numpy() for k, v in reference.state_dict().items()},
                                  ow.open_clip_model_config(config))
  assert convert.import_weights(config, str(weights), str(tmp_path / "run")) == len(reference.state_dict())
  images, tokens, eot = inputs(config, seed=1)
  want_image, _ = _open_clip_embeddings(reference, images, tokens)
  np.testing.assert_allclose(declip_jax.load(str(tmp_path / "run")).encode_image(images), want_image,
                             rtol=1e-4, atol=1e-4)
  if name == "vit_b32":  # Training on from an imported step 0 (the ResNet's is the same code path).
    config.train.num_steps = 1
    config.evals = {}
    assert train.run(config, str(tmp_path / "run"))["step"] == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B/32", "RN50"])
def test_full_size_import_matches_open_clip(name):
  from declip_jax import presets  # pylint: disable=g-import-not-at-top
  config = presets.set_architecture(tiny_config(), name)
  config.model.image.image_size, config.model.text.context_length = 224, 77
  config.model.text.vocab_size, config.model.text.projection_bias = 49_408, False
  reference = _random_open_clip(config, seed=0)
  images, tokens, eot = inputs(config, seed=1)
  want_image, want_text = _open_clip_embeddings(reference, images, tokens)
  variables = ow.from_torch_state_dict({k: v.numpy() for k, v in reference.state_dict().items()}, config,
                                       abstract_variables(config, eot))
  got_image, got_text = our_embeddings(config, variables, images, tokens, eot)
  np.testing.assert_allclose(got_image, want_image, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got_text, want_text, rtol=1e-4, atol=1e-4)


def test_released_weights_import_into_the_openai_token_layout(tmp_path):
  """OpenAI's 49,408 ids + the appended [MASK] row: imported text embeddings equal open_clip's with its tokenizer."""
  import declip_jax  # pylint: disable=g-import-not-at-top
  from declip_jax.interop import convert  # pylint: disable=g-import-not-at-top
  config = reduced_config(**ARCHITECTURES["vit_b16"], vocab=49_409)
  config.data.tokenizer, config.data.token_layout = "clip_bpe", "openai"
  config.data.vocab_path = open_clip.tokenizer.default_bpe()
  released = ow.open_clip_model_config(config)
  released["text_cfg"]["vocab_size"] = 49_408
  torch.manual_seed(0)
  reference = open_clip.model.CLIP(**released).eval()
  weights, _ = ow.write_open_clip(tmp_path / "w", {k: v.numpy() for k, v in reference.state_dict().items()},
                                  released)
  convert.import_weights(config, str(weights), str(tmp_path / "run"))
  captions = ["a photo of a dog", "two red circles"]
  with torch.no_grad():
    want = reference.encode_text(open_clip.tokenize(captions, context_length=16)).numpy()
  np.testing.assert_allclose(declip_jax.load(str(tmp_path / "run")).encode_text(captions), want, rtol=1e-4,
                             atol=1e-5)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_recorded_fixture_is_what_open_clip_gives_today(name):
  """tests/data/open_clip_parity.npz (the torch-free parity test's reference) holds this open_clip's weights and
  embeddings of the same models; rerun tests/make_open_clip_fixture.py when it does not."""
  config = reduced_config(**ARCHITECTURES[name])
  model = _random_open_clip(config, seed=0)
  images, tokens, _ = inputs(config, seed=1)
  want_image, want_text = _open_clip_embeddings(model, images, tokens)
  with np.load(REPO / "tests" / "data" / "open_clip_parity.npz") as recorded:
    for key, value in model.state_dict().items():
      np.testing.assert_array_equal(recorded[f"{name}/state/{key}"], value.numpy(), err_msg=key)
    np.testing.assert_allclose(recorded[f"{name}/image_embedding"], want_image, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recorded[f"{name}/text_embedding"], want_text, rtol=1e-5, atol=1e-6)
