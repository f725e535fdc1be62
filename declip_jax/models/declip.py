"""The two-tower model of the five methods (CLIP, DeCLIP, SLIP, FILIP, DeFILIP): image tower, text tower, the
heads the enabled losses need, and the logit scales."""

from typing import Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from declip_jax.models import heads, resnet, text, vit


class DeCLIP(nn.Module):
  """Image and text towers plus the heads the enabled losses need.

  Parameter tree: `image_tower`, `text_tower`, `simsiam` (ISS), `mlm_head` (TSS), `simclr` (SLIP),
  `filip_image_mapping`, `filip_text_mapping` and the scalar `logit_scale_dense` (FILIP's token-wise term), and
  the scalar `logit_scale` (the log of the contrastive temperature's inverse), and with a sigmoid loss the scalar
  `logit_bias` (SigLIP's b).
  """

  image_tower: Union[vit.VisionTransformer, resnet.ModifiedResNet]
  text_tower: text.TextTransformer
  simsiam: Optional[heads.SimSiamHead]
  mlm_head: Optional[heads.MLMHead]
  logit_scale_init: float
  batch_views: bool = True
  simclr: Optional[heads.SimCLRHead] = None
  filip_image_mapping: Optional[heads.TokenMapping] = None
  filip_text_mapping: Optional[heads.TokenMapping] = None
  filip_logit_scale_init: float = 0.0
  logit_bias_init: Optional[float] = None  # None: no `logit_bias` parameter.

  def setup(self):
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(self.logit_scale_init), ())
    if self.filip_image_mapping is not None:
      self.logit_scale_dense = self.param("logit_scale_dense", nn.initializers.constant(self.filip_logit_scale_init),
                                          ())
    if self.logit_bias_init is not None:
      self.logit_bias = self.param("logit_bias", nn.initializers.constant(self.logit_bias_init), ())

  def _resnet(self) -> bool:
    return isinstance(self.image_tower, resnet.ModifiedResNet)

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

  def mlm_logits(self, token_states: jax.Array) -> jax.Array:
    """token_states: [B, T, W] (positions of `mlm_states`) -> vocabulary logits [B, T, V] float32."""
    return self.mlm_head(token_states)

  def encode_image_tokens(self, images: jax.Array) -> jax.Array:
    """FILIP: images [B, H, W, 3] -> mapped image tokens [B, P, dim] float32, not normalised."""
    return self.filip_image_mapping(self.image_tower(images, tokens=True)[1])

  def encode_text_tokens(self, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """FILIP: tokens [B, L] -> (mapped text tokens [B, L, dim] float32 not normalised, [B, L] bool: True up to
    and including the end-of-text token, False on the padding after it)."""
    states = self.text_tower(tokens)[1]
    return self.filip_text_mapping(states), self._text_mask(tokens)

  def _text_mask(self, tokens: jax.Array) -> jax.Array:
    eot = text.eot_positions(tokens, self.text_tower.eot_id)
    return jnp.arange(tokens.shape[1])[None, :] <= eot[:, None]

  def _ssl_features(self, view: tuple, train: bool) -> jax.Array:
    """The pre-projection feature SLIP's SimCLR head reads from view = (images, patch noise or None): a ViT's
    ln_post([CLS]); a ResNet's last feature map averaged over positions (the official code's RN50 path cannot
    run; this is SimCLR's choice)."""
    images, noise = view
    if self._resnet():
      return jnp.mean(self.image_tower(images, train=train, tokens=True)[1], axis=1).astype(jnp.float32)
    noise = {} if noise is None else {"patch_noise": noise}
    return self.image_tower(images, project=False, train=train, **noise).astype(jnp.float32)

  def _per_view(self, fn, first: jax.Array, second: jax.Array):
    """fn on two views: one call on both (rows interleaved) when batch_views and the tower has no BatchNorm,
    else one call each (each view gets its own BatchNorm statistics and running-statistics update,
    docs/design.md §2)."""
    if self.batch_views and not self._resnet():
      return _two_views(fn, first, second)
    return fn(first), fn(second)

  def __call__(self, batch: dict[str, jax.Array], train: bool = True) -> dict[str, jax.Array]:
    """Runs the towers and heads on a training batch: `heads(towers(batch), batch)`.

    Args:
      batch: `img1` [B, H, W, 3]; optional `img2` (same shape): DeCLIP's second view, or with a SimCLR head
        SLIP's first SimCLR view, then `img3` its second; `text_mlm` [B, L] (the caption the CLIP term uses,
        MLM-masked when TSS is on or data.mask_captions); optional `text_eda` [B, L]; optional `mlm_labels`.
      train: BatchNorm (SimSiam and SimCLR heads, ResNet tower) uses group statistics and updates its running
        statistics when True.
    Returns:
      `z_img1`, `z_img2`, `z_txt`, `z_txt_eda` [B, D] float32 (each only when its input is present; with a
      SimCLR head `img2` has no `z_img2`), with an MLM head: `mlm_states` [B, L, W], the token states of
      `text_mlm` that the MLM loss scores with `mlm_logits` (given `mlm_labels`: the loss picks the positions),
      or else `mlm_logits` [B, L, V]; `p1`, `z1`, `p2`, `z2` [B, P] (with a SimSiam head and two views);
      `s1`, `s2` [B, S] (SimCLR projections of `img2`, `img3`); `image_tokens` [B, P, d] (of `img1`),
      `text_tokens` [B, L, d] (of `text_mlm`) and `text_token_mask` [B, L] (FILIP).
    """
    return self.heads(self.towers(batch, train), batch, train)

  def towers(self, batch: dict[str, jax.Array], train: bool = True) -> dict[str, jax.Array]:
    """The two towers on a training batch: the per-example, costly part of the step, whose outputs (the
    features) are all that `heads` and the losses read from the images and captions. Gradient accumulation
    (training/accumulation.py) runs it per micro-batch.

    Returns float features: `z_img1`, `z_img2`, `z_txt`, `z_txt_eda` [B, D] float32 as in `__call__`;
    `image_token_states` [B, P, W] (FILIP: the tower's patch tokens of `img1`); `ssl_img2`, `ssl_img3` [B, F]
    (SLIP: the features the SimCLR head reads); `text_states` [B, L, W] (the token states of `text_mlm`, with an
    MLM head or FILIP).
    """
    f = {}
    filip = self.filip_image_mapping is not None

    def image(view):  # view: (images, patch noise or None)
      noise = {} if view[1] is None else {"patch_noise": view[1]}
      return self.image_tower(view[0], train=train, tokens=filip, **noise)

    def view(name):
      return batch[name], batch.get(f"{name}_patch_noise")

    if "img2" in batch and self.simclr is None:
      first, second = self._per_view(image, view("img1"), view("img2"))
      f["z_img2"] = (second[0] if filip else second).astype(jnp.float32)
    else:
      first = image(view("img1"))
    if filip:
      first, f["image_token_states"] = first
    f["z_img1"] = first.astype(jnp.float32)
    if self.simclr is not None:
      f["ssl_img2"], f["ssl_img3"] = self._per_view(lambda v: self._ssl_features(v, train), view("img2"),
                                                    view("img3"))
    if "text_eda" in batch and self.batch_views:
      (z_txt, states), (z_eda, _) = _two_views(self.text_tower, batch["text_mlm"], batch["text_eda"])
      f["z_txt_eda"] = z_eda.astype(jnp.float32)
    else:
      z_txt, states = self.text_tower(batch["text_mlm"])
      if "text_eda" in batch:
        f["z_txt_eda"] = self.encode_text(batch["text_eda"])
    f["z_txt"] = z_txt.astype(jnp.float32)
    if filip or self.mlm_head is not None:
      f["text_states"] = states
    return f

  def heads(self, features: dict[str, jax.Array], batch: dict[str, jax.Array],
            train: bool = True) -> dict[str, jax.Array]:
    """The heads on the towers' `features` (see `towers`) of `batch`: the outputs of `__call__`. The SimSiam and
    SimCLR heads' BatchNorm takes its statistics here, over the whole batch given."""
    out = {k: features[k] for k in ("z_img1", "z_img2", "z_txt", "z_txt_eda") if k in features}
    if self.filip_image_mapping is not None:
      out["image_tokens"] = self.filip_image_mapping(features["image_token_states"])
    if self.simclr is not None:
      out["s1"], out["s2"] = self.simclr(features["ssl_img2"], train), self.simclr(features["ssl_img3"], train)
    states = features.get("text_states")
    if self.filip_image_mapping is not None:
      out["text_tokens"] = self.filip_text_mapping(states)
      out["text_token_mask"] = self._text_mask(batch["text_mlm"])
    if self.mlm_head is not None and "mlm_labels" in batch:
      out["mlm_states"] = states
      if self.is_initializing():  # The loss calls the head (`mlm_logits`) later: create its parameters now.
        self.mlm_head(states[:, :1])
    elif self.mlm_head is not None:
      out["mlm_logits"] = self.mlm_head(states)
    if self.simsiam is not None and "z_img2" in out:
      out["p1"], out["z1"] = self.simsiam(out["z_img1"], train)
      out["p2"], out["z2"] = self.simsiam(out["z_img2"], train)
    return out


def _two_views(tower, first, second):
  """One tower call on both views (arrays, or matching trees of arrays with leading dimension B): rows
  interleaved ([B, 2, ...] -> [2B, ...]), so that each device's rows of a batch-sharded input stay on it; every
  output leaf [2B, ...] is split back into the two views' [B, ...]."""
  rows = jax.tree.leaves(first)[0].shape[0]
  both = jax.tree.map(lambda a, b: jnp.stack([a, b], axis=1).reshape((-1,) + a.shape[1:]), first, second)
  out = tower(both)
  split = jax.tree.map(lambda y: y.reshape((rows, 2) + y.shape[1:]), out)
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
        embed_dim=m.embed_dim, dtype=dtype, scan=m.scan_layers, scan_unroll=m.scan_unroll, remat=m.image.remat,
        attention=m.attention_implementation or None, mask_ratio=m.image.mask_ratio)
  text_tower = text.TextTransformer(
      vocab_size=m.text.vocab_size, context_length=m.text.context_length, width=m.text.width,
      layers=m.text.layers, heads=m.text.heads, embed_dim=m.embed_dim, eot_id=eot_id,
      projection_bias=m.text.projection_bias, dtype=dtype, scan=m.scan_layers, scan_unroll=m.scan_unroll,
      remat=m.text.remat, attention=m.attention_implementation or None)
  simsiam = None
  if config.loss.weights.iss > 0:
    simsiam = heads.SimSiamHead(config.ssl.projector_dim, config.ssl.predictor_hidden_dim,
                                config.ssl.bn_group_size, config.ssl.bn_momentum, config.ssl.bn_epsilon)
  mlm_head = heads.MLMHead(m.text.vocab_size) if config.loss.weights.tss > 0 else None
  simclr = None
  if config.loss.weights.simclr > 0:
    simclr = heads.SimCLRHead(m.simclr.hidden_dim, m.simclr.out_dim, config.ssl.bn_group_size,
                              config.ssl.bn_momentum, config.ssl.bn_epsilon)
  filip = config.loss.weights.filip > 0
  return DeCLIP(image_tower, text_tower, simsiam, mlm_head, m.logit_scale.init, m.batch_views, simclr,
                heads.TokenMapping(m.filip.dim) if filip else None, heads.TokenMapping(m.filip.dim) if filip else None,
                m.filip.logit_scale.init, m.logit_bias_init if config.loss.contrastive == "sigmoid" else None)
