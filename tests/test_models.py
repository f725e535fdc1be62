"""Towers and heads: shapes, EOT pooling, causality, grouped BatchNorm, scan/no-scan equivalence, ResNet tower."""

import jax
import jax.numpy as jnp
import numpy as np

from declip_jax.models import batch_norm, declip, heads, resnet, text, vit
from declip_jax.training.state import sample_batch_spec


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


def test_scan_unroll_keeps_the_parameters_and_the_function():
  """model.scan_unroll: 2 blocks per loop iteration (3 layers: one left over) or no loop at all (0, >= layers):
  the same stacked parameters, the same outputs and gradients as one block per iteration."""
  tokens = jnp.asarray([[18, 3, 4, 19, 0, 0, 0, 0], [18, 5, 19, 0, 0, 0, 0, 0]])

  def tower(unroll):
    return text.TextTransformer(vocab_size=20, context_length=8, width=16, layers=3, heads=2, embed_dim=6,
                                eot_id=19, scan_unroll=unroll)

  params = tower(1).init(jax.random.PRNGKey(0), tokens)["params"]

  def value_and_grads(unroll):
    return jax.value_and_grad(lambda p: jnp.sum(tower(unroll).apply({"params": p}, tokens)[0] ** 2))(params)

  reference = value_and_grads(1)
  for unroll in (2, 3, 12, 0):
    assert jax.tree.structure(tower(unroll).init(jax.random.PRNGKey(0), tokens)["params"]) == jax.tree.structure(params)
    value, grads = value_and_grads(unroll)
    np.testing.assert_allclose(value, reference[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference[1])):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(b))))


def test_remat_outside_a_loop_keeps_its_recomputation_apart():
  """Remat without a loop (scan_unroll=0, or unscanned) must keep XLA from merging the recomputation with the
  forward pass (remat's prevent_cse; without it a fully rematerialised ViT-L/14 step
  planned 126.5 GiB per H100 instead of remat's saving); inside a loop the loop does that."""
  tokens = jnp.asarray([[18, 3, 4, 19, 0, 0, 0, 0]])

  def backward_jaxpr(**kwargs):
    tower = text.TextTransformer(vocab_size=20, context_length=8, width=16, layers=3, heads=2, embed_dim=6,
                                 eot_id=19, remat="full", **kwargs)
    p = tower.init(jax.random.PRNGKey(0), tokens)["params"]
    return str(jax.make_jaxpr(jax.grad(lambda p: jnp.sum(tower.apply({"params": p}, tokens)[0])))(p))

  assert "prevent_cse=True" in backward_jaxpr(scan_unroll=0)
  assert "prevent_cse=True" in backward_jaxpr(scan=False)
  assert "prevent_cse=False" in backward_jaxpr(scan_unroll=1)


def test_remat_policies_compute_the_same_gradients():
  """model.*.remat "full" and "save_dots" (scanned and unrolled layers) change memory, not the gradients."""
  tokens = jnp.asarray([[18, 3, 4, 19, 0, 0, 0, 0], [18, 5, 19, 0, 0, 0, 0, 0]])
  params = _text_tower().init(jax.random.PRNGKey(0), tokens)["params"]

  def grads(remat, scan=True):
    tower = text.TextTransformer(vocab_size=20, context_length=8, width=16, layers=2, heads=2, embed_dim=6,
                                 eot_id=19, scan=scan, remat=remat)
    p = params if scan else {**params, "transformer": {
        f"block_{i}": jax.tree.map(lambda x: x[i], params["transformer"]["blocks"]) for i in range(2)}}
    return jax.grad(lambda p: jnp.sum(tower.apply({"params": p}, tokens)[0] ** 2))(p)

  for scan in (True, False):
    reference = grads("none", scan)
    for remat in ("full", "save_dots"):
      for a, b in zip(jax.tree.leaves(grads(remat, scan)), jax.tree.leaves(reference)):
        # Recomputation may sum in another order: float32 rounding of the tensor's largest terms (seen: 1.4e-7
        # of the largest gradient on jax 0.12), so the absolute bound scales with them.
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.max(np.abs(b))))


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
  bn = batch_norm.GroupedBatchNorm(group_size=4, momentum=0.9)
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


def test_grouped_batchnorm_on_feature_maps_matches_numpy():
  """[B, H, W, C]: statistics per channel over each group's examples and positions (as PyTorch's BatchNorm2d
  over one group); running variance unbiased over g x H x W values."""
  rng = np.random.default_rng(1)
  x = rng.normal(loc=-2.0, scale=3.0, size=(8, 5, 3, 4)).astype(np.float32)
  bn = batch_norm.GroupedBatchNorm(group_size=4, momentum=0.9)
  variables = bn.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
  y, updated = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
  groups = x.reshape(2, 4 * 5 * 3, 4)
  expected = (groups - groups.mean(1, keepdims=True)) / np.sqrt(groups.var(1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(y, expected.reshape(x.shape), atol=1e-5)
  np.testing.assert_allclose(updated["batch_stats"]["mean"], 0.1 * groups.mean(1).mean(0), rtol=1e-5)
  np.testing.assert_allclose(updated["batch_stats"]["var"], 0.9 + 0.1 * groups.var(1, ddof=1).mean(0), rtol=1e-5)
  inference = bn.apply({**variables, "batch_stats": updated["batch_stats"]}, jnp.asarray(x), train=False)
  stats = updated["batch_stats"]
  np.testing.assert_allclose(inference, (x - stats["mean"]) / np.sqrt(stats["var"] + 1e-5), atol=1e-5)


def _resnet(group_size=4):
  return resnet.ModifiedResNet(stage_blocks=(1, 2, 1, 1), width=8, heads=2, embed_dim=6, bn_group_size=group_size)


def test_resnet_tower_shapes_init_and_batchnorm_modes():
  images = jnp.asarray(np.random.default_rng(0).normal(size=(8, 32, 32, 3)), jnp.float32)
  tower = _resnet()
  variables = tower.init(jax.random.PRNGKey(0), images)
  params = variables["params"]
  assert tower.apply(variables, images).shape == (8, 6)
  assert params["attnpool"]["positional_embedding"].shape == (1 + 1, 8 * 32)  # 32 / 32: one position + the mean.
  assert params["conv1"]["kernel"].shape == (3, 3, 3, 4) and params["layer2_0"]["conv3"]["kernel"].shape[-1] == 64
  for block in ("layer1_0", "layer2_0", "layer2_1", "layer4_0"):  # CLIP's init: each residual branch starts at 0.
    assert not np.any(params[block]["bn3"]["scale"]) and np.all(params[block]["bn1"]["scale"] == 1)
  assert "downsample_conv" in params["layer1_0"] and "downsample_conv" not in params["layer2_1"]
  train_out, updated = tower.apply(variables, images, train=True, mutable=["batch_stats"])
  assert not np.allclose(train_out, tower.apply(variables, images))  # Group vs running statistics.
  assert not np.allclose(updated["batch_stats"]["bn1"]["mean"], 0)
  # Group statistics: the first group's embeddings do not depend on the other examples.
  first, _ = tower.apply(variables, images[:4], train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(first, train_out[:4], rtol=1e-5, atol=1e-6)
  # Rematerialised Bottlenecks compute the same function.
  remat = resnet.ModifiedResNet(stage_blocks=(1, 2, 1, 1), width=8, heads=2, embed_dim=6, bn_group_size=4,
                                remat="save_dots")
  np.testing.assert_allclose(remat.apply(variables, images, train=True, mutable=["batch_stats"])[0], train_out,
                             rtol=1e-6, atol=1e-6)


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
  w = config.model.text.width
  assert out["mlm_states"].shape == (8, length, w)  # Given mlm_labels: token states for the MLM loss (losses/).
  without_labels = {k: x for k, x in batch.items() if k != "mlm_labels"}
  out_logits, _ = model.apply(variables, without_labels, train=True, mutable=["batch_stats"])
  assert out_logits["mlm_logits"].shape == (8, length, v)
  assert out["p1"].shape == out["z2"].shape == (8, config.ssl.projector_dim)
  assert set(variables["params"]) == {"image_tower", "text_tower", "simsiam", "mlm_head", "logit_scale"}


def test_mlm_head_scores_only_the_chosen_positions_and_computes_the_same_loss():
  """With max_predictions=3 the MLM loss has the head compute [B, 3, V] logits; the loss and its gradients equal
  the every-position path; a batch with a row of 5 chosen positions takes the fallback (blocks of 3 positions)
  and gets the same."""
  from declip_jax.losses import mlm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  states = jnp.asarray(rng.normal(size=(4, 9, 8)), jnp.float32)
  labels = np.full((4, 9), mlm.IGNORE_LABEL)
  for row, chosen in enumerate(([], [2, 7], [0, 4, 8], [1, 3])):
    labels[row, chosen] = rng.integers(0, 11, len(chosen))
  head = heads.MLMHead(11)
  params = head.init(jax.random.PRNGKey(0), states)["params"]

  def loss(params, states, labels, max_predictions, row_blocks=1):
    logits_fn = lambda s: head.apply({"params": params}, s)
    return mlm.masked_lm_loss_from_states(states, labels, logits_fn, max_predictions, row_blocks)

  for batch_labels in (labels, np.where(np.arange(9) < 5, 1, labels)):  # Second: row counts 5 > 3 (fallback).
    batch_labels = jnp.asarray(batch_labels)
    want = loss(params, states, batch_labels, 0)
    got = loss(params, states, batch_labels, 3)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(want, mlm.masked_lm_loss(head.apply({"params": params}, states), batch_labels),
                               rtol=1e-6)
    want_grads = jax.grad(loss, argnums=(0, 1))(params, states, batch_labels, 0)
    got_grads = jax.grad(loss, argnums=(0, 1))(params, states, batch_labels, 3)
    for g, w in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
    # Rows scored two at a time (gradient accumulation's loss stage): the same loss and gradients.
    np.testing.assert_allclose(loss(params, states, batch_labels, 3, 2), want, rtol=1e-6)
    blocked_grads = jax.grad(loss, argnums=(0, 1))(params, states, batch_labels, 3, 2)
    for g, w in zip(jax.tree.leaves(blocked_grads), jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-7)
  jaxpr = str(jax.make_jaxpr(lambda s: loss(params, s, jnp.asarray(labels), 3))(states))
  # Chosen-only logits; the fallback scores blocks of 3 positions (9 = 3 x 3), never all 9 at once.
  assert "f32[4,3,11]" in jaxpr and "f32[4,9,11]" not in jaxpr


def test_batched_view_calls_compute_the_same_outputs(config):
  """model.batch_views runs both image views and both text views as one tower call each: same outputs."""
  spec = sample_batch_spec(config, batch_size=8)
  rng = np.random.default_rng(3)
  batch = {k: jnp.asarray(rng.normal(size=v.shape), v.dtype) if v.dtype == jnp.float32
           else jnp.asarray(rng.integers(1, 50, v.shape), v.dtype) for k, v in spec.items()}
  batch["mlm_labels"] = jnp.where(batch["mlm_labels"] % 5 == 0, batch["mlm_labels"], -100)
  outputs = []
  for batched in (True, False):
    config.model.batch_views = batched
    model = declip.build_model(config, eot_id=54)
    variables = model.init(jax.random.PRNGKey(0), batch, train=False)
    outputs.append(model.apply(variables, batch, train=True, mutable=["batch_stats"]))
  (together, stats_together), (apart, stats_apart) = outputs
  assert set(together) == set(apart) >= {"z_img1", "z_img2", "z_txt", "z_txt_eda", "mlm_states", "p2"}
  for key in together:
    np.testing.assert_allclose(together[key], apart[key], rtol=1e-5, atol=1e-6, err_msg=key)
  for a, b in zip(jax.tree.leaves(stats_together), jax.tree.leaves(stats_apart)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_patch_masking_keeps_each_images_lowest_noise_patches_and_evaluation_is_unmasked():
  """FLIP masking: with mask_ratio 0.75 a 16-patch image keeps 4 patches (+ [CLS]); which 4 follows each row's
  noise (same noise, same output; another noise, another output); no noise is the unmasked tower exactly."""
  masked = vit.VisionTransformer(patch_size=4, width=16, layers=1, heads=2, embed_dim=8, mask_ratio=0.75)
  plain = vit.VisionTransformer(patch_size=4, width=16, layers=1, heads=2, embed_dim=8)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(3, 16, 16, 3)), jnp.float32)
  images = images.at[1].set(images[0]).at[2].set(images[0])
  params = plain.init(jax.random.PRNGKey(0), images)
  assert vit.kept_patches(16, 0.75) == 4 and vit.kept_patches(49, 0.5) == 24 and vit.kept_patches(4, 0.99) == 1
  np.testing.assert_array_equal(masked.apply(params, images), plain.apply(params, images))
  noise = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 16)), jnp.float32)
  noise = noise.at[1].set(noise[0])  # Row 1: row 0's image and noise; row 2: row 0's image, other noise.
  out, tokens = masked.apply(params, images, tokens=True, patch_noise=noise)
  assert out.shape == (3, 8) and tokens.shape == (3, 4, 16)
  np.testing.assert_allclose(out[1], out[0], rtol=1e-6)
  assert np.max(np.abs(out[2] - out[0])) > 1e-4 and np.max(np.abs(out[0] - plain.apply(params, images)[0])) > 1e-4
  # The kept patches are the 4 of lowest noise: noise that orders the same patches first gives the same output.
  reordered = noise.at[0].set(jnp.where(noise[0] <= jnp.sort(noise[0])[3], noise[0] / 10, noise[0]))
  np.testing.assert_allclose(masked.apply(params, images, patch_noise=reordered)[0], out[0], rtol=1e-6)
