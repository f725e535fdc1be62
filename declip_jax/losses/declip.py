"""The objective of the five methods: DeCLIP's CLIP+MVS, ISS, TSS and NNS terms, SLIP's SimCLR term, FILIP's
token-wise term, and their weighted sum (docs/design.md §2, §14)."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import Mesh

from declip_jax.losses import contrastive, filip, mlm, sigmoid, simclr, simsiam


def normalized_views(outputs: dict[str, jax.Array], text_norm_eps: float) -> tuple[list, list]:
  """L2-normalised image views [img1, (img2)] and text views [text_mlm, (text_eda)], each [B, D].

  Text embeddings get `text_norm_eps` added to the norm, as in the official code.
  """
  images = [contrastive.l2_normalize(outputs[k]) for k in ("z_img1", "z_img2") if k in outputs]
  texts = [contrastive.l2_normalize(outputs[k], text_norm_eps) for k in ("z_txt", "z_txt_eda") if k in outputs]
  return images, texts


def loss_terms(outputs: dict[str, jax.Array], mlm_labels: Optional[jax.Array], nn_texts: Optional[list],
               logit_scale: jax.Array, config: ml_collections.ConfigDict, mesh: Optional[Mesh] = None,
               mlm_logits: Optional[Callable[[jax.Array], jax.Array]] = None,
               filip_scale: Optional[jax.Array] = None, logit_bias: Optional[jax.Array] = None) -> dict[str, jax.Array]:
  """Every enabled loss term, unweighted.

  Args:
    outputs: the model's outputs (see `DeCLIP.__call__`).
    mlm_labels: [B, L] labels for TSS (None when TSS is off).
    nn_texts: the queue neighbours of the normalised text views, same order, each [B, D] unit rows, stop-gradient
      (None when NNS is off).
    logit_scale: the capped scale, a scalar.
    config: the experiment config (`loss`, `mlm.max_predictions`).
    mesh: device mesh the batch is sharded over (None: unsharded).
    mlm_logits: the MLM head, token states [B, T, W] -> logits [B, T, V] (TSS from `mlm_states`).
    filip_scale: the token-wise term's logit scale, a scalar (FILIP).
    logit_bias: SigLIP's bias b, a scalar (loss.contrastive "sigmoid", where `logit_scale` is its temperature t).
  Returns:
    `clip_mvs` (official mode) or `clip` and `mvs` (paper mode) unless its weight is 0, and `iss`, `tss`, `nns`,
    `simclr`, `filip` when enabled.
  """
  w = config.loss.weights
  images, texts = normalized_views(outputs, config.loss.text_norm_eps)
  chunk = config.loss.contrastive_chunk_size or None
  if config.loss.contrastive == "sigmoid":
    # Every (image, text) term becomes SigLIP's: images x texts of the global batch, positives on the pairs. NNS's
    # image i has its own text's queue neighbour as the positive and the other images' neighbours as negatives,
    # the columns the softmax NNS term normalises over; sigmoid terms have no direction, so its "image to text
    # only" is kept by scoring images against neighbours alone.
    def pair_term(images, texts):
      return sigmoid.sigmoid_loss(images, texts, logit_scale, logit_bias, mesh,
                                  implementation=config.loss.sigmoid_implementation, chunk=chunk)
    image_to_text = pair_term
  else:
    def pair_term(images, texts):
      return contrastive.symmetric_info_nce(images, texts, logit_scale, mesh, chunk=chunk)

    def image_to_text(images, texts):
      return contrastive.one_way_info_nce(images, texts, logit_scale, mesh, chunk=chunk)
  terms = {}
  if w.clip_mvs > 0:
    pairs = [pair_term(i, t) for i in images for t in texts]
    if config.loss.mvs_mode == "official":
      terms["clip_mvs"] = jnp.mean(jnp.stack(pairs))
    else:
      terms["clip"] = pairs[0]
      if len(pairs) > 1:
        terms["mvs"] = jnp.mean(jnp.stack(pairs[1:]))
  if w.iss > 0:
    terms["iss"] = simsiam.simsiam_loss(outputs["p1"], outputs["z1"], outputs["p2"], outputs["z2"])
  if w.tss > 0:
    if "mlm_states" in outputs:  # Logits only where needed (mlm.max_predictions).
      # With gradient accumulation the loss stage sees the whole batch: its logits are scored a micro-batch of
      # rows at a time too.
      terms["tss"] = mlm.masked_lm_loss_from_states(outputs["mlm_states"], mlm_labels, mlm_logits,
                                                    config.mlm.max_predictions, row_blocks=config.train.accum_steps)
    else:
      terms["tss"] = mlm.masked_lm_loss(outputs["mlm_logits"], mlm_labels)
  if w.nns > 0:
    per_image = [jnp.mean(jnp.stack([image_to_text(i, jax.lax.stop_gradient(n)) for n in nn_texts])) for i in images]
    terms["nns"] = jnp.mean(jnp.stack(per_image))
  if w.simclr > 0:
    terms["simclr"] = simclr.nt_xent(outputs["s1"], outputs["s2"], config.loss.simclr_temperature, mesh, chunk=chunk)
  if w.filip > 0:
    f = config.model.filip
    terms["filip"] = filip.filip_loss(outputs["image_tokens"], outputs["text_tokens"], filip_scale, f.top_k, mesh,
                                      chunk=config.loss.filip_chunk_size or None,
                                      text_mask=outputs["text_token_mask"] if f.mask_padding else None)
  return terms


def weighted_total(terms: dict[str, jax.Array], config: ml_collections.ConfigDict) -> jax.Array:
  """sum_k weight_k * term_k; in paper mode `clip` takes weights.clip_mvs and `mvs` weights.mvs."""
  w = config.loss.weights
  weight_of = {"clip_mvs": w.clip_mvs, "clip": w.clip_mvs, "mvs": w.mvs, "iss": w.iss, "tss": w.tss, "nns": w.nns,
               "simclr": w.simclr, "filip": w.filip}
  return sum(weight_of[name] * value for name, value in terms.items())
