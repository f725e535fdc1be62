"""Every shipped config loads and validates; the ResNet recipes carry the official numbers."""

import importlib
import pathlib

import jax
import numpy as np
import pytest

from declip_jax import config as config_lib
from declip_jax.training import optim
from tests.conftest import REPO

CONFIGS = sorted(p.stem for p in (pathlib.Path(REPO) / "configs").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_validates(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  shards = 1 if "demo" in name else 32  # The big recipes: 32 accelerators, as the official runs.
  if config.data.source == "tfrecord":
    config.data.tfrecord.files = "gs://bucket/yfcc15m/*.tfrecord"  # The settings a user must give.
    config.data.vocab_path = "gs://bucket/bpe_simple_vocab_16e6.txt.gz"
  config_lib.validate(config, num_batch_shards=shards)


def test_resnet_recipes():
  from configs import clip_rn50, declip_rn50  # pylint: disable=g-import-not-at-top
  declip, clip = declip_rn50.get_config(), clip_rn50.get_config()
  for c in (declip, clip):
    assert c.model.image.arch == "resnet" and tuple(c.model.image.resnet_layers) == (3, 4, 6, 3)
    assert c.model.embed_dim == 1024 and c.model.image.width == 64 and c.model.image.heads == 32
    assert not c.model.image.freeze_patch_embed and c.optim.lr == 1e-3 and c.train.batch_size == 4096
  assert declip.model.image.bn_group_size == 4096 and clip.model.image.bn_group_size == 128
  assert dict(declip.loss.weights) == dict(config_lib.base_config().loss.weights)
  assert clip.loss.weights.iss == clip.loss.weights.tss == clip.loss.weights.nns == 0
  with pytest.raises(config_lib.ConfigError, match="model.image.bn_group_size"):
    declip.train.batch_size = 2048 + 128
    config_lib.validate(declip)


def test_resnet_batchnorm_parameters_are_not_weight_decayed():
  from declip_jax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from declip_jax.models import declip  # pylint: disable=g-import-not-at-top
  from tests.tiny_config import tiny_resnet_config  # pylint: disable=g-import-not-at-top
  config = tiny_resnet_config()
  model = declip.build_model(config, 54)
  batch = {k: np.zeros(v.shape, v.dtype) for k, v in state_lib.sample_batch_spec(config, 1).items()}
  params = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), batch, train=False))["params"]["image_tower"]
  mask = optim.weight_decay_mask({"image_tower": params})["image_tower"]
  assert not mask["bn1"]["scale"] and not mask["layer2_0"]["downsample_bn"]["bias"]
  assert not mask["attnpool"]["q_proj"]["bias"]
  assert mask["conv1"]["kernel"] and mask["layer3_0"]["conv2"]["kernel"] and mask["attnpool"]["c_proj"]["kernel"]
  assert mask["attnpool"]["positional_embedding"]  # Official: only norms, biases and the logit scale are exempt.


def test_remat_policy_names_are_checked():
  config = config_lib.base_config()
  config.model.text.remat = "everything"
  with pytest.raises(config_lib.ConfigError, match="model.text.remat must be one of none, full, save_dots"):
    config_lib.validate(config)
