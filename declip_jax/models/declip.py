"""The DeCLIP two-tower model: image tower, text tower, SimSiam and MLM heads and the logit scale."""

from typing import Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from declip_jax.models import heads, resnet, text, vit


class DeCLIP(nn.Module):
  """Image and text towers plus the heads the enabled losses need.

  Parameter tree: `image_tower`, `text_tower`, `simsiam` (when ISS is on), `mlm_head` (when TSS is on), and the
  scalar `logit_scale` (the log of the contrastive temperature's inverse).
  """

  image_tower: Union[vit.VisionTransformer, resnet.ModifiedResNet]
  text_tower: text.TextTransformer
  simsiam: Optional[heads.SimSiamHead]
  mlm_head: Optional[heads.MLMHead]
  logit_scale_init: float
  batch_views: bool = True

  def setup(self):
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), ())

  def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
    """images: [B, H, W, 3] normalised -> [B, D] embeddings, not normalised. train: a ResNet tower's BatchNorm
    uses group statistics (and updates `batch_stats`) instead of its running statistics."""
    return self.image_tower(images, train=train).astype(jnp.float32)

  def image_features(self, images: jax.Array) -> jax.Array:
    """images: [B, H, W, 3] normalised -> [B, F] the features linear probes read: a ViT's before the
    projection ([B, width]); a ResNet's attention-pool output ([B, D], CLIP's choice)."""
    return self.image_tower(images, project=False).astype(jnp.float32)

  def encode_text(self, tokens: jax.Array) -> jax.Array:
    """tokens: [B, L] int -> [B, D] embeddings, not normalised."""
    return self.text_tower(tokens)[0].astype(jnp.float32)

  def __call__(self, batch: dict[str, jax.Array], train: bool = True) -> dict[str, jax.Array]:
    """Runs the towers and heads on a training batch.

    Args:
      batch: `img1` [B, H, W, 3]; optional `img2` (same shape); `text_mlm` [B, L] (the caption the CLIP term
        uses, MLM-masked when TSS is on); optional `text_eda` [B, L]; optional `mlm_labels` [B, L].
      train: BatchNorm (SimSiam heads, ResNet tower) uses group statistics and updates its running statistics
        when True.
    Returns:
      `z_img1`, `z_img2`, `z_txt`, `z_txt_eda` [B, D] float32 (each only when its input is present),
      with an MLM head: `mlm_ce_sums`, `mlm_counts` [B] (given `mlm_labels`: `heads.MLMHead`) or else
      `mlm_logits` [B, L, V]; `p1`, `z1`, `p2`, `z2` [B, P] (with a SimSiam head and two views).
    """
    out = {}
    tower_has_batch_norm = isinstance(self.image_tower, resnet.ModifiedResNet)
    if "img2" in batch and self.batch_views and not tower_has_batch_norm:
      out["z_img1"], out["z_img2"] = _two_views(lambda x: self.encode_image(x, train), batch["img1"],
                                                batch["img2"])
    else:  # Separate calls: each view gets its own BatchNorm statistics and running-statistics update (DESIGN §2).
      out["z_img1"] = self.encode_image(batch["img1"], train)
      if "img2" in batch:
        out["z_img2"] = self.encode_image(batch["img2"], train)
    if "text_eda" in batch and self.batch_views:
      (z_txt, states), (z_eda, _) = _two_views(self.text_tower, batch["text_mlm"], batch["text_eda"])
      out["z_txt_eda"] = z_eda.astype(jnp.float32)
    else:
      z_txt, states = self.text_tower(batch["text_mlm"])
      if "text_eda" in batch:
        out["z_txt_eda"] = self.encode_text(batch["text_eda"])
    out["z_txt"] = z_txt.astype(jnp.float32)
    if self.mlm_head is not None and "mlm_labels" in batch:
      out["mlm_ce_sums"], out["mlm_counts"] = self.mlm_head(states, batch["mlm_labels"])
    elif self.mlm_head is not None:
      out["mlm_logits"] = self.mlm_head(states)
    if self.simsiam is not None and "img2" in batch:
      out["p1"], out["z1"] = self.simsiam(out["z_img1"], train)
      out["p2"], out["z2"] = self.simsiam(out["z_img2"], train)
    return out


def _two_views(tower, first: jax.Array, second: jax.Array):
  """One tower call on both views: rows interleaved ([B, 2, ...] -> [2B, ...]), so that each device's rows of
  a batch-sharded input stay on it; every output leaf [2B, ...] is split back into the two views' [B, ...]."""
  both = jnp.stack([first, second], axis=1)
  out = tower(both.reshape((-1,) + first.shape[1:]))
  split = jax.tree.map(lambda y: y.reshape((first.shape[0], 2) + y.shape[1:]), out)
  return jax.tree.map(lambda y: y[:, 0], split), jax.tree.map(lambda y: y[:, 1], split)


def build_model(config: ml_collections.ConfigDict, eot_id: int) -> DeCLIP:
  """Builds the model a config describes.

  Args:
    config: the experiment config (reads `model`, `ssl`, `loss.weights`).
    eot_id: the tokenizer's end-of-text id, where the text tower pools.
  """
  m = config.model
  dtype = jnp.dtype(m.dtype)
  if m.image.arch == "resnet":
    image_tower = resnet.ModifiedResNet(
        stage_blocks=tuple(m.image.resnet_layers), width=m.image.width, heads=m.image.heads,
        embed_dim=m.embed_dim, bn_group_size=m.image.bn_group_size, bn_momentum=m.image.bn_momentum,
        bn_epsilon=m.image.bn_epsilon, dtype=dtype, remat=m.image.remat)
  else:
    image_tower = vit.VisionTransformer(
        patch_size=m.image.patch_size, width=m.image.width, layers=m.image.layers, heads=m.image.heads,
        embed_dim=m.embed_dim, dtype=dtype, scan=m.scan_layers, remat=m.image.remat,
        attention=m.attention_implementation or None)
  text_tower = text.TextTransformer(
      vocab_size=m.text.vocab_size, context_length=m.text.context_length, width=m.text.width,
      layers=m.text.layers, heads=m.text.heads, embed_dim=m.embed_dim, eot_id=eot_id,
      projection_bias=m.text.projection_bias, dtype=dtype, scan=m.scan_layers, remat=m.text.remat,
      attention=m.attention_implementation or None)
  simsiam = None
  if config.loss.weights.iss > 0:
    simsiam = heads.SimSiamHead(config.ssl.projector_dim, config.ssl.predictor_hidden_dim,
                                config.ssl.bn_group_size, config.ssl.bn_momentum, config.ssl.bn_epsilon)
  mlm_head = heads.MLMHead(m.text.vocab_size, config.mlm.max_predictions) if config.loss.weights.tss > 0 else None
  return DeCLIP(image_tower, text_tower, simsiam, mlm_head, m.logit_scale.init, m.batch_views)
