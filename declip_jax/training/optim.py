"""AdamW with DeCLIP's weight-decay exclusions, frozen parameters, the LR schedule and the logit-scale clamp."""

import re

import jax
import jax.numpy as jnp
import ml_collections
import optax

# Official exclusions, by parameter name (docs/design.md §8): norm scales and biases, dense/conv biases, the logit
# scale (and SigLIP's logit bias, a scalar like it).
# The attention input-projection bias (`in_proj_bias`), class/positional/token embeddings and the ViT `proj`
# do not match and so ARE decayed.
NO_WEIGHT_DECAY = (r"(^|/)bias$", r"(^|/)scale$", r"^logit_scale$", r"^logit_scale_dense$", r"^logit_bias$")
FROZEN_PATCH_EMBED = r"^image_tower/patch_embed/"
# The global image and text projections (ViT `proj`, a ResNet's attention pool, the text projection) and the
# logit scale: what only the global CLIP term trains. FILIP gives that term weight 0 (official config): they get
# no gradient, and are frozen so that weight decay does not shrink them (the official code decays them).
GLOBAL_CLIP_HEAD = (r"^image_tower/proj$", r"^image_tower/attnpool/", r"^text_tower/projection/", r"^logit_scale$")


def path_name(path) -> str:
  """'image_tower/transformer/blocks/attn/in_proj_bias' for a jax tree path."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def weight_decay_mask(params):
  """Tree of bools, True where AdamW's decoupled weight decay applies."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: not any(re.search(p, path_name(path)) for p in NO_WEIGHT_DECAY), params)


def frozen_patterns(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The parameter-name patterns that get no update: the ViT patch embedding (official), and the global CLIP
  head when the CLIP term's weight is 0 (FILIP)."""
  frozen = (FROZEN_PATCH_EMBED,) if config.model.image.freeze_patch_embed else ()
  return frozen + (GLOBAL_CLIP_HEAD if config.loss.weights.clip_mvs == 0 else ())


def parameter_labels(params, frozen: tuple[str, ...]):
  """Tree of 'frozen' / 'trained' labels for `optax.multi_transform`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if any(re.search(p, path_name(path)) for p in frozen) else "trained", params)


def learning_rate_schedule(optim: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup warmup_init_lr -> lr over warmup_steps, then cosine to 0 at schedule_steps."""
  warmup = optax.linear_schedule(optim.warmup_init_lr, optim.lr, optim.warmup_steps)
  cosine = optax.cosine_decay_schedule(optim.lr, max(optim.schedule_steps - optim.warmup_steps, 1))
  return optax.join_schedules([warmup, cosine], [optim.warmup_steps])


def build_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW (b1, b2, eps, decoupled weight decay with the name mask); frozen parameters get exactly zero update.

  Frozen parameters go through `set_to_zero` in `multi_transform`, so neither the gradient step nor the weight
  decay ever touches them, and no Adam moments are kept for them.
  """
  o = config.optim
  adamw = optax.adamw(learning_rate_schedule(o), b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                      mask=weight_decay_mask)
  trained = optax.chain(optax.clip_by_global_norm(o.grad_clip_norm), adamw) if o.grad_clip_norm > 0 else adamw
  frozen = frozen_patterns(config)
  return optax.multi_transform({"trained": trained, "frozen": optax.set_to_zero()},
                               lambda params: parameter_labels(params, frozen))


def clamp_logit_scale(params: dict, config: ml_collections.ConfigDict) -> dict:
  """Clamps params['logit_scale'] to [model.logit_scale.min, model.logit_scale.max], and FILIP's
  params['logit_scale_dense'] to [model.filip.logit_scale.min, max]."""
  ls, dense = config.model.logit_scale, config.model.filip.logit_scale
  out = {**params, "logit_scale": jnp.clip(params["logit_scale"], ls.min, ls.max)}
  if "logit_scale_dense" in params:
    out["logit_scale_dense"] = jnp.clip(params["logit_scale_dense"], dense.min, dense.max)
  return out
