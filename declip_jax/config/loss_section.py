"""loss.*: every term's weight (official DeCLIP: 0.4 / 0.2 / 0.2 / 0.2), how the terms are computed, and the
image views, BatchNorm groups and FILIP sizes the terms need."""

import ml_collections

from declip_jax.config.config_error import require
from declip_jax.models.patches import image_tokens

LOSS_TERMS = ("clip_mvs", "iss", "tss", "nns", "simclr", "filip")


def defaults() -> ml_collections.ConfigDict:
  """loss.*: every term's weight (official DeCLIP: 0.4 / 0.2 / 0.2 / 0.2) and how the terms are computed."""
  loss = ml_collections.ConfigDict()
  loss.weights = ml_collections.ConfigDict()
  loss.weights.clip_mvs = 0.4
  loss.weights.iss = 0.2
  loss.weights.tss = 0.2
  loss.weights.nns = 0.2
  loss.weights.mvs = 0.2  # Only read when mvs_mode == "paper".
  loss.weights.simclr = 0.0  # SLIP: 1.0 (with clip_mvs 1.0).
  loss.weights.filip = 0.0  # FILIP: 1.0 (clip_mvs 0); DeFILIP: 0.2.
  # "official": clip_mvs = mean of InfoNCE over all (image view, text view) pairs.
  # "paper": weights.clip_mvs * InfoNCE(img1, text_mlm) + weights.mvs * mean(the other pairs).
  loss.mvs_mode = "official"
  # The image-text terms' form (clip_mvs and nns): "softmax", InfoNCE over the global batch (CLIP, DeCLIP), or
  # "sigmoid", SigLIP's independent binary term per (image, text) pair (losses/sigmoid.py; docs/design.md §19),
  # computed around a ring of devices ("ring") or on gathered texts ("gathered", chunked by contrastive_chunk_size).
  loss.contrastive = "softmax"
  loss.sigmoid_implementation = "ring"
  loss.text_norm_eps = 1e-10  # Official: text embeddings are normalised with +1e-10 in the norm.
  # InfoNCE scores this many gathered columns at a time (0: all B_global at once). Same value and gradient;
  # per-device logits memory B_local x chunk instead of B_local x B_global (e.g. for B_global = 32k).
  loss.contrastive_chunk_size = 0
  loss.simclr_temperature = 0.1  # Official SLIP: fixed.
  # FILIP: gathered pairs scored per block (0: all at once). Memory per device b x tokens x chunk x top_k.
  loss.filip_chunk_size = 256
  return loss


def validate(c: ml_collections.ConfigDict) -> None:
  """loss.*, the image views the terms need, and the BatchNorm groups and FILIP sizes they use."""
  b, w = c.train.batch_size, c.loss.weights
  for term in LOSS_TERMS + ("mvs",):
    require(w[term] >= 0, f"loss.weights.{term} must be >= 0, got {w[term]}.")
  require(w.clip_mvs > 0 or w.filip > 0, "loss.weights.clip_mvs or loss.weights.filip must be > 0: every method "
          "trains an image-text term.")
  require(c.loss.mvs_mode in ("official", "paper"),
          f"loss.mvs_mode must be 'official' or 'paper', got {c.loss.mvs_mode!r}.")
  require(c.loss.contrastive in ("softmax", "sigmoid"),
          f"loss.contrastive must be 'softmax' or 'sigmoid', got {c.loss.contrastive!r}.")
  require(c.loss.sigmoid_implementation in ("ring", "gathered"),
          f"loss.sigmoid_implementation must be 'ring' or 'gathered', got {c.loss.sigmoid_implementation!r}.")
  views = c.data.num_image_views
  require(views in (1, 2, 3), f"data.num_image_views must be 1, 2 or 3, got {views}.")
  require((views == 3) == (w.simclr > 0), "data.num_image_views = 3 goes with loss.weights.simclr > 0 (SLIP: a "
          "view for the CLIP term and two for SimCLR), and SimCLR needs those 3 views.")
  if w.iss > 0:
    require(views == 2, "loss.weights.iss > 0 needs data.num_image_views = 2 (SimSiam compares two views).")
  if w.iss > 0 or w.simclr > 0:
    g = c.ssl.bn_group_size
    require(g > 1 and b % g == 0,
            f"train.batch_size ({b}) must be divisible by ssl.bn_group_size ({g}, > 1): BatchNorm statistics "
            "are taken over groups of that many examples.")
  require(c.loss.simclr_temperature > 0, "loss.simclr_temperature must be > 0.")
  if w.filip > 0:
    f = c.model.filip
    tokens = image_tokens(c.model.image)  # With masking, FILIP selects among the visible tokens.
    require(0 < f.top_k <= min(tokens, c.model.text.context_length),
            f"model.filip.top_k ({f.top_k}) must be in [1, {min(tokens, c.model.text.context_length)}] (the image "
            f"tower's {tokens} tokens and model.text.context_length).")
    require(f.logit_scale.min <= f.logit_scale.max, "model.filip.logit_scale.min must be <= its max.")
    require(c.loss.filip_chunk_size >= 0, "loss.filip_chunk_size must be >= 0.")
