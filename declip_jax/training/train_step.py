"""One jitted DeCLIP update: (state, batch) -> (state, metrics) (docs/design.md §1)."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from declip_jax.training import accumulation, nn_queue, optim, recovery
from declip_jax.losses import contrastive, declip as declip_loss
from declip_jax.training.state import TrainState


def spread(x: jax.Array) -> jax.Array:
  """SimSiam's collapse gauge: the per-dimension standard deviation over the batch of the L2-normalised rows of
  x [B, D], averaged over dimensions. About 1/sqrt(D) for rows spread over the sphere, 0 for collapsed ones."""
  return jnp.mean(jnp.std(jax.lax.stop_gradient(contrastive.l2_normalize(x)), axis=0))


IMAGE_VIEWS = ("img1", "img2", "img3")


def patch_noise(config: ml_collections.ConfigDict, batch: dict[str, jax.Array], rng: jax.Array,
                step: jax.Array) -> dict[str, jax.Array]:
  """FLIP's masking noise for the batch's image views (model.image.mask_ratio > 0; else {}):
  `<view>_patch_noise` [B, patches] uniform floats, a function of (the state's rng, step, view) only, so that
  every device count and both passes of gradient accumulation draw the same masks. The tower keeps each
  image's patches of lowest noise."""
  img = config.model.image
  if img.arch != "vit" or img.mask_ratio <= 0:
    return {}
  patches = (img.image_size // img.patch_size) ** 2
  key = jax.random.fold_in(rng, step)  # rng: the state's raw key data, uint32 [2].
  return {f"{view}_patch_noise": jax.random.uniform(jax.random.fold_in(key, i), (batch[view].shape[0], patches))
          for i, view in enumerate(IMAGE_VIEWS) if view in batch}


def masked_steps(config: ml_collections.ConfigDict) -> int:
  """How many of the first train.num_steps steps mask patches: all but the final model.image.unmasked_final_fraction
  (FLIP's unmasked tuning) when model.image.mask_ratio > 0; 0 when nothing is masked."""
  img, n = config.model.image, config.train.num_steps
  if img.arch != "vit" or img.mask_ratio <= 0:
    return 0
  return n - round(n * img.unmasked_final_fraction)


def make_train_step(config: ml_collections.ConfigDict, model, tx: optax.GradientTransformation,
                    mesh: Optional[Mesh]) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """Builds the (not yet jitted) train step.

  The step: clamp the logit scale; forward both towers and the heads (with train.accum_steps > 1 the towers run
  per micro-batch and the gradient is accumulated exactly, `accumulation`); look up each text view's nearest
  neighbour in the queue as it was before this step; compute the weighted DeCLIP loss and its gradients;
  AdamW update scaled by `health.lr_scale`; clamp the logit scale again; enqueue text_eda then text_mlm
  embeddings; record the loss in `health`. If the loss or the gradient norm is not finite, nothing but `step`
  and the `health` counters changes.

  Metrics: `loss`, `loss_<term>` for every enabled term, `logit_scale` (the capped scale used), `grad_norm`,
  `learning_rate`, `nn_similarity` (mean cosine of a text to its queue neighbour; NNS only), `filip_logit_scale`
  (FILIP's token-wise scale), `logit_bias` (SigLIP's b; loss.contrastive "sigmoid"), `update_skipped`,
  `recent_loss_mean`, `image_mask_ratio` (ViT: the share of patches this step drops), the collapse gauges
  `image_embedding_std`, `text_embedding_std` and (ISS only) `iss_projection_std` / `simclr_projection_std`
  (`spread`), and `rollback_cause` (a `recovery` code, read by the loop; not averaged in logs).
  """

  def train_step(state: TrainState, batch: dict[str, jax.Array]) -> tuple[TrainState, dict]:
    params = optim.clamp_logit_scale(state.params, config)
    batch = {**batch, **patch_noise(config, batch, state.rng, state.step)}
    loss, aux, grads = _loss_and_grads(config, model, mesh, state, params, batch)
    new_state, grad_norm, finite, rollback_cause = _update(config, tx, state, params, grads, loss, aux)
    return new_state, _metrics(config, state, loss, aux, grad_norm, finite, rollback_cause)

  return train_step


def _loss_and_grads(config: ml_collections.ConfigDict, model, mesh: Optional[Mesh], state: TrainState, params,
                    batch: dict[str, jax.Array]) -> tuple[jax.Array, dict, dict]:
  """The weighted loss, its auxiliaries (`_loss_of_outputs`'s, with every module's updated BatchNorm statistics)
  and the parameter gradient: the whole model in one pass, or with train.accum_steps > 1 the towers one
  micro-batch at a time and the loss stage (heads and terms) once on their features (`accumulation`)."""
  variables = {"params": params, "batch_stats": state.batch_stats}

  def loss_stage(params, *features):
    """The loss of the model on `batch`; given the towers' features, of the heads on them."""
    outputs, mutated = model.apply({**variables, "params": params}, *features, batch, train=True,
                                   method="heads" if features else None, mutable=["batch_stats"])
    loss, aux = _loss_of_outputs(config, model, mesh, state, params, batch, outputs)
    return loss, {**aux, "batch_stats": mutated.get("batch_stats", {})}

  if config.train.accum_steps == 1:
    (loss, aux), grads = jax.value_and_grad(loss_stage, has_aux=True)(params)
    return loss, aux, grads
  return accumulation.value_and_grad(model, params, state.batch_stats, batch, loss_stage, config.train.accum_steps,
                                     mesh)


def _loss_of_outputs(config: ml_collections.ConfigDict, model, mesh: Optional[Mesh], state: TrainState, params,
                     batch: dict[str, jax.Array], outputs: dict) -> tuple[jax.Array, dict]:
  """The weighted loss of the model's outputs on `batch`, and what the update and the metrics read: the text
  embeddings to enqueue, the capped logit scale, the terms, the collapse gauges, and the NN similarity, FILIP
  scale and SigLIP bias where those exist."""
  weights = config.loss.weights
  scale = contrastive.capped_logit_scale(params["logit_scale"], config.model.logit_scale.cap)
  images, texts = declip_loss.normalized_views(outputs, config.loss.text_norm_eps)
  aux = {"texts": [jax.lax.stop_gradient(t) for t in texts], "scale": scale,
         "spread": {"image_embedding_std": spread(images[0]), "text_embedding_std": spread(texts[0])}}
  if weights.iss > 0:
    aux["spread"]["iss_projection_std"] = spread(outputs["z1"])
  if weights.simclr > 0:
    aux["spread"]["simclr_projection_std"] = spread(outputs["s1"])
  nn_texts = None
  if weights.nns > 0:  # Each text view's nearest neighbour in the queue as it was before this step.
    found = [nn_queue.lookup(state.nn_queue, t, config.nns.search, config.nns.chunk_size, mesh) for t in texts]
    nn_texts = [n for n, _ in found]
    aux["nn_similarity"] = jnp.mean(jnp.stack([s for _, s in found]))

  def mlm_head(token_states):
    return model.apply({"params": params}, token_states, method="mlm_logits")

  filip_scale = jnp.exp(params["logit_scale_dense"]) if "logit_scale_dense" in params else None
  terms = declip_loss.loss_terms(outputs, batch.get("mlm_labels"), nn_texts, scale, config, mesh, mlm_head,
                                 filip_scale, params.get("logit_bias"))
  if "logit_bias" in params:
    aux["logit_bias"] = params["logit_bias"]
  if filip_scale is not None:
    aux["filip_logit_scale"] = filip_scale
  aux["terms"] = terms
  return declip_loss.weighted_total(terms, config), aux


def _update(config: ml_collections.ConfigDict, tx: optax.GradientTransformation, state: TrainState, params,
            grads, loss: jax.Array, aux: dict) -> tuple[TrainState, jax.Array, jax.Array, jax.Array]:
  """The next state: AdamW's update scaled by `health.lr_scale`, the logit scale clamped again, text_eda then
  text_mlm enqueued, the loss recorded in `health`; where the loss or the gradient norm is not finite, nothing
  but `step` and the `health` counters changes. Returns (state, gradient norm, finite, rollback cause)."""
  grad_norm = optax.global_norm(grads)
  updates, opt_state = tx.update(grads, state.opt_state, params)
  updates = jax.tree.map(lambda u: state.health.lr_scale * u, updates)
  new_params = optim.clamp_logit_scale(optax.apply_updates(params, updates), config)
  queue, ptr = state.nn_queue, state.nn_queue_ptr
  if config.loss.weights.nns > 0:
    queue, ptr = nn_queue.enqueue(queue, ptr, aux["texts"][::-1])  # text_eda first, then text (official).

  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  health, rollback_cause = recovery.observe(state.health, loss, finite, config.train.recovery)

  def keep_if_finite(new, old):
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

  new_state = state.replace(
      step=state.step + 1,
      params=keep_if_finite(new_params, state.params),
      batch_stats=keep_if_finite(aux["batch_stats"], state.batch_stats),
      opt_state=keep_if_finite(opt_state, state.opt_state),
      nn_queue=keep_if_finite(queue, state.nn_queue),
      nn_queue_ptr=keep_if_finite(ptr, state.nn_queue_ptr),
      health=health)
  return new_state, grad_norm, finite, rollback_cause


def _metrics(config: ml_collections.ConfigDict, state: TrainState, loss: jax.Array, aux: dict,
             grad_norm: jax.Array, finite: jax.Array, rollback_cause: jax.Array) -> dict[str, jax.Array]:
  """The step's metrics (`make_train_step` lists them), from the state before the step."""
  schedule = optim.learning_rate_schedule(config.optim)
  metrics = {"loss": loss, "logit_scale": aux["scale"], "grad_norm": grad_norm,
             "learning_rate": state.health.lr_scale * schedule(state.step - state.health.nonfinite_steps),
             "update_skipped": (~finite).astype(jnp.float32),
             "recent_loss_mean": recovery.window_mean(state.health), "rollback_cause": rollback_cause}
  metrics.update({f"loss_{name}": value for name, value in aux["terms"].items()})
  for name in ("nn_similarity", "filip_logit_scale", "logit_bias"):
    if name in aux:
      metrics[name] = aux[name]
  metrics.update(aux["spread"])
  if config.model.image.arch == "vit":
    metrics["image_mask_ratio"] = jnp.float32(config.model.image.mask_ratio)
  return metrics
