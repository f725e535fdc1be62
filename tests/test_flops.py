"""The analytic FLOP count against published CLIP tower costs and the train-step convention."""

import pytest

from declip_jax import config as config_lib, presets
from declip_jax.aot import flops


def test_tower_forward_flops_match_published_clip_numbers():
  # open_clip's model table (fvcore, which counts multiply-adds): ViT-B/32 image tower 4.41 G, text tower 2.96 G.
  patch_embedding_macs = 49 * 32 * 32 * 3 * 768
  image_macs = (flops.transformer_forward(50, 768, 12) + 2 * 768 * 512) / 2 + patch_embedding_macs
  text_macs = (flops.transformer_forward(77, 512, 12) + 2 * 512 * 512) / 2
  assert image_macs / 1e9 == pytest.approx(4.41, rel=0.01)
  assert text_macs / 1e9 == pytest.approx(2.96, rel=0.02)


def test_train_step_counts_forward_three_times_except_frozen_and_gradient_free_parts():
  c = config_lib.base_config()
  c.train.batch_size = 8
  parts = flops.train_step(c)
  image = flops.transformer_forward(50, 768, 12) + 2 * 768 * 512
  assert parts["image_tower"] == 3 * 2 * 8 * image  # Two views, forward x 3.
  assert parts["patch_embedding"] == 2 * 8 * 2 * 49 * 32 * 32 * 3 * 768  # Frozen first layer: forward only.
  assert parts["nn_lookup"] == 2 * 8 * 2 * 65_536 * 512  # Two text passes against the own group's 65,536 slots.
  summaries = ("total", "accumulation_recompute", "executed")
  assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k not in summaries))
  assert parts["executed"] == parts["total"] and parts["accumulation_recompute"] == 0
  clip = flops.train_step(presets.use_clip_baseline(config_lib.base_config()))
  assert set(clip) == {"patch_embedding", "image_tower", "text_tower", "contrastive", *summaries}


def test_accumulation_adds_the_towers_second_forward_to_what_runs_not_to_model_flops():
  config = config_lib.base_config()
  plain = flops.train_step(config)
  config.train.accum_steps = 4
  accumulated = flops.train_step(config)
  assert accumulated["total"] == plain["total"]
  towers = plain["image_tower"] / 3 + plain["text_tower"] / 3 + plain["patch_embedding"]
  assert accumulated["executed"] == pytest.approx(plain["total"] + towers)


def test_resnet_forward_flops_match_the_compiled_convolutions():
  """RN50 at 224: the analytic count vs XLA's cost analysis of the tower's forward pass. XLA counts only the
  3x3 taps that touch the image and adds the BatchNorm/ReLU/pooling element-wise work (about 1% here)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from declip_jax.models import resnet  # pylint: disable=g-import-not-at-top
  tower = resnet.ModifiedResNet(stage_blocks=(3, 4, 6, 3), width=64, heads=32, embed_dim=1024, bn_group_size=2)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(tower.init, jax.random.PRNGKey(0), images)
  compiled = jax.jit(tower.apply).lower(variables, images).compile()
  cost = compiled.cost_analysis()
  executed = (cost[0] if isinstance(cost, list) else cost)["flops"]
  inside_image = flops.resnet_forward(224, 64, (3, 4, 6, 3), 1024, count_padding=False)
  assert inside_image / 1e9 == pytest.approx(executed / 1e9, rel=0.015) and inside_image < executed
  # The model-FLOPs convention counts every tap: 5.79 G multiply-adds.
  assert flops.resnet_forward(224, 64, (3, 4, 6, 3), 1024) / 2e9 == pytest.approx(5.79, rel=0.001)


def test_the_methods_terms_are_counted():
  """SLIP: three tower passes, one of them in the CLIP term, the SimCLR head on two; FILIP: no global term, its
  token-wise logits over every pair of the global batch are over a fifth of the step (ViT-B/32 at 4,096: 52 of
  232 TFLOP)."""
  slip = flops.train_step(presets.use_slip(config_lib.base_config()))
  b = 4096
  assert slip["image_tower"] == 3 * 3 * b * (flops.transformer_forward(50, 768, 12) + 2 * 768 * 512)
  assert slip["contrastive"] == 3 * 1 * 2.0 * b * b * 512  # One image view x the plain caption.
  assert slip["simclr_head"] == 3 * 2 * b * 2.0 * (768 * 4096 + 4096 * 4096 + 4096 * 256)
  assert slip["simclr_loss"] == 3 * 2.0 * (2 * b) ** 2 * 256
  filip = flops.train_step(presets.use_filip(config_lib.base_config()))
  assert "contrastive" not in filip and filip["filip_logits"] == 3 * 2.0 * b * b * (49 + 77) * 16 * 256
  assert 0.2 < filip["filip_logits"] / filip["total"] < 0.3
  defilip = flops.train_step(presets.use_defilip(config_lib.base_config()))
  declip = flops.train_step(config_lib.base_config())
  assert defilip["total"] - declip["total"] == pytest.approx(
      defilip["filip_mappings"] + defilip["filip_selection"] + defilip["filip_logits"])


def test_the_sigmoid_base_costs_what_the_softmax_one_does():
  """SigLIP scores the same [B, B] (image, text) pairs as InfoNCE: the counter gives the twins equal FLOPs."""
  from configs import (clip_vit_b32, declip_vit_b32, desiglip_vit_b32,  # pylint: disable=g-import-not-at-top
                       siglip_vit_b32)
  assert flops.train_step(siglip_vit_b32.get_config()) == flops.train_step(clip_vit_b32.get_config())
  assert flops.train_step(desiglip_vit_b32.get_config()) == flops.train_step(declip_vit_b32.get_config())


def test_patch_masking_shrinks_the_image_transformer_not_the_patch_embedding():
  config = config_lib.base_config()
  plain = flops.train_step(config)
  config.model.image.mask_ratio = 0.5  # 49 patches -> 24 kept, plus [CLS].
  masked = flops.train_step(config)
  assert masked["patch_embedding"] == plain["patch_embedding"] and masked["text_tower"] == plain["text_tower"]
  assert masked["image_tower"] == 3 * 2 * config.train.batch_size * (
      flops.transformer_forward(25, 768, 12) + 2 * 768 * 512)
