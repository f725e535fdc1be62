"""The rules that carry a config's recipe to another device count, dataset size and length of training
(docs/design.md §22): each planned key with its value, the config's value and the rule with its source. Pure
Python on the config's values; no JAX, no data. `declip_jax/plan/cli.py` adds what needs the devices or the data
(the AOT check, whether an evaluation's data is there)."""

import dataclasses
import math
from typing import Any, Optional

import ml_collections

LR_RULES = ("sqrt", "linear", "none")
# A queue buffer holds the last group_size / text views pairs of its group's stream; a lookup then finds the pair's
# own caption from an earlier epoch with probability 1 - exp(-held / examples) (training/nn_queue.py,
# own_pair_fraction). The plan keeps that under 1% (our choice; the recipe on YFCC-15M: 0.2%).
MAX_OWN_PAIR_FRACTION = 0.01


class PlanError(ValueError):
  """A request the rules cannot carry out (e.g. a batch the devices cannot split), with what to do instead."""


@dataclasses.dataclass(frozen=True)
class Request:
  """What the plan is for.

  Attributes:
    devices: accelerators in all (every host's).
    examples: image-text pairs in the training data.
    epochs: passes over them.
    batch_size: the global batch; 0 keeps the config's (the recipe's 4,096).
    lr_rule: how the learning rate follows a changed global batch: "sqrt" (Adam's square-root rule), "linear" or
      "none".
    max_per_device_batch: examples one device may take at once; a larger per-device batch is split into
      micro-batches (exact accumulation). 0: no limit here (the AOT check adds accumulation where memory needs it).
  """

  devices: int
  examples: int
  epochs: float
  batch_size: int = 0
  lr_rule: str = "sqrt"
  max_per_device_batch: int = 0


@dataclasses.dataclass(frozen=True)
class Choice:
  """One planned key: `value` (what the plan sets), `was` (the config's) and the rule that gave it, with its source."""

  key: str
  value: Any
  was: Any
  rule: str

  @property
  def changed(self) -> bool:
    return self.value != self.was


def value_of(config: ml_collections.ConfigDict, key: str):
  """The value at a dotted key ("optim.lr")."""
  node = config
  for part in key.split("."):
    node = node[part]
  return node


def _divisors(n: int) -> list[int]:
  small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
  return sorted(set(small + [n // d for d in small]))


def batch_shards(config: ml_collections.ConfigDict, devices: int) -> int:
  """The devices the global batch is split over: mesh "data" x "fsdp", i.e. all devices but the "model" axis."""
  model_axis = config.mesh.shape[2] if len(config.mesh.shape) > 2 and config.mesh.shape[2] > 0 else 1
  if devices % model_axis:
    raise PlanError(f"mesh.shape {tuple(config.mesh.shape)}: its model axis ({model_axis}) does not divide the "
                    f"{devices} devices.")
  return devices // model_axis


def _lr_factor(rule: str, new_batch: int, old_batch: int) -> tuple[float, str]:
  ratio = new_batch / old_batch
  if rule == "sqrt":
    return math.sqrt(ratio), ("x sqrt(batch ratio): the square-root rule for Adam (Malladi et al. 2022, 'On the "
                              "SDEs and scaling rules for adaptive gradient algorithms'; our choice: the official "
                              "code trains at one batch and has no rule)")
  if rule == "linear":
    return ratio, "x batch ratio: the linear rule (Goyal et al. 2017; chosen with --lr_rule=linear)"
  return 1.0, "kept although the batch changed (--lr_rule=none)"


def _nns_groups(batch: int, per_group: float, shards: int) -> int:
  """The divisor of `batch` nearest (in ratio) to batch / per_group that the batch shards can hold: the groups and
  the shards divide one another."""
  target = batch / per_group
  candidates = [g for g in _divisors(batch) if g % shards == 0 or shards % g == 0]
  return min(candidates, key=lambda g: (abs(math.log(g / target)), g))


def plan(config: ml_collections.ConfigDict, request: Request,
         unavailable_evals: Optional[dict[str, str]] = None) -> list[Choice]:
  """The planned keys for `request`, in the order they are decided.

  Args:
    config: the experiment's config, as given (its values are the recipe the plan carries over).
    request: devices, data and length (`Request`).
    unavailable_evals: {evaluation name: why its data is not there}; those evaluations are switched off.
  Raises:
    PlanError: the request cannot be planned (a batch the devices cannot split, no examples, ...).
  """
  r = request
  if r.devices < 1 or r.examples < 1 or r.epochs <= 0:
    raise PlanError(f"devices ({r.devices}), examples ({r.examples}) and epochs ({r.epochs}) must be positive.")
  if r.lr_rule not in LR_RULES:
    raise PlanError(f"--lr_rule must be one of {', '.join(LR_RULES)}, got {r.lr_rule!r}.")
  choices = []

  def choose(key: str, value, rule: str) -> None:
    choices.append(Choice(key, value, value_of(config, key), rule))

  # The global batch and how each device takes its share.
  old_batch = config.train.batch_size
  batch = r.batch_size or old_batch
  shards = batch_shards(config, r.devices)
  if batch % shards:
    fitting = [b for b in (batch - batch % shards, batch - batch % shards + shards) if b > 0]
    raise PlanError(f"a global batch of {batch} does not split over {shards} devices; use --batch_size="
                    f"{' or '.join(str(b) for b in fitting)}.")
  choose("train.batch_size", batch, "--batch_size" if r.batch_size else
         "kept: the config's global batch (the recipe's 4,096 = 128 per GPU x 32 GPUs, official)")
  per_device = batch // shards
  accum = config.train.accum_steps if per_device % config.train.accum_steps == 0 else 1
  if r.max_per_device_batch and per_device // accum > r.max_per_device_batch:
    accum = min(k for k in _divisors(per_device) if per_device // k <= r.max_per_device_batch)
    choose("train.accum_steps", accum, f"{per_device} examples per device in {accum} micro-batches of "
           f"{per_device // accum} (--max_per_device_batch={r.max_per_device_batch}); exact accumulation: the same "
           "update as the whole batch (docs/design.md §17)")
  else:
    choose("train.accum_steps", accum, f"{per_device} examples per device at once" if accum == 1 else
           f"{per_device} examples per device in {accum} micro-batches (the config's)")

  # The learning rate follows the batch.
  factor, why = _lr_factor(r.lr_rule, batch, old_batch) if batch != old_batch else (1.0, "kept: the batch is the "
                                                                                     "config's")
  choose("optim.lr", config.optim.lr * factor, why)
  choose("optim.warmup_init_lr", config.optim.warmup_init_lr * factor, why)

  # The length of training from the data, and what scales with it.
  steps = math.ceil(r.examples * r.epochs / batch)
  old_steps = config.train.num_steps
  choose("train.num_steps", steps, f"{r.examples:,} examples x {r.epochs:g} epochs / batch {batch}, rounded up")
  share = steps / old_steps
  choose("optim.schedule_steps", max(1, round(config.optim.schedule_steps * share)),
         "the cosine ends where the config's does, as a share of the run (the recipe's: at its last step, official)")
  choose("optim.warmup_steps", max(1, round(config.optim.warmup_steps * share)),
         f"the config's share of the run ({config.optim.warmup_steps:,} of {old_steps:,} steps, "
         f"{100 * config.optim.warmup_steps / old_steps:.3g}%; the recipe's 2,500 of 128,001 is official); keeping "
         "the share is our choice")
  every, epoch = config.eval.every_steps, math.ceil(r.examples / batch)
  choose("eval.every_steps", max(epoch, round(every * share)),
         f"the config's share of the run ({every:,} of {old_steps:,} steps: {old_steps / every:.3g} evaluations a "
         f"run), at most once an epoch ({epoch:,} steps); our choice")
  for name, spec in config.evals.items():
    if spec.every_steps:
      choose(f"evals.{name}.every_steps", max(epoch, round(spec.every_steps * share)),
             "the config's share of the run, at most once an epoch")

  # Groupings whose statistics must not depend on the device count.
  views = 1 + int(config.data.eda)
  if config.loss.weights.nns > 0:
    per_group = old_batch / config.nns.groups
    groups = _nns_groups(batch, per_group, shards)
    choose("nns.groups", groups, f"one queue per {batch // groups} examples of the batch as the config's one per "
           f"{per_group:g} (the recipe's: one per GPU of 128, official), whatever the device count")
    enqueued = (batch // groups) * views
    held = math.floor(-math.log1p(-MAX_OWN_PAIR_FRACTION) * r.examples) * views
    size = min(config.nns.group_size, held)
    if size < config.nns.group_size:  # Whole lookup chunks (a size with few divisors scans in tiny chunks).
      unit = config.nns.chunk_size if size >= config.nns.chunk_size else enqueued
      size = max(enqueued, size - size % unit)
    fraction = 1 - math.exp(-(size / views) / r.examples)
    if size == config.nns.group_size:
      rule = (f"kept: {100 * fraction:.2g}% of lookups find the pair's own caption from an earlier epoch "
              "(training/nn_queue.py)")
    else:
      rule = (f"cut so that at most {100 * MAX_OWN_PAIR_FRACTION:g}% of lookups find the pair's own caption from an "
              f"earlier epoch ({100 * fraction:.2g}% here; our choice, the recipe's is 0.2%); at least one step's "
              f"{enqueued} enqueued embeddings")
    choose("nns.group_size", size, rule)
  if config.loss.weights.iss > 0:
    g = config.ssl.bn_group_size
    if batch % g:
      g = max(d for d in _divisors(batch) if d <= config.ssl.bn_group_size)
    choose("ssl.bn_group_size", g, "kept: SimSiam's BatchNorm over the config's groups whatever the device count "
           "(the recipe's: the per-GPU batch of 128, official)" if g == config.ssl.bn_group_size else
           f"the largest divisor of the batch up to the config's {config.ssl.bn_group_size}")
  if config.model.image.arch == "resnet":
    g = config.model.image.bn_group_size
    if g == old_batch:
      g, rule = batch, "the whole global batch, as the config's (the recipe's SyncBN over all 32 GPUs, official)"
    else:
      rule = "kept: the config's group"
    micro = batch // (shards * accum)
    if accum > 1 and micro % g:
      g = max(d for d in _divisors(micro) if d <= g)
      rule = (f"{g}: a group must lie within one device's micro-batch for the accumulated update to be exact; "
              "the recipe's SyncBN takes the whole batch (a deviation; avoid it with fewer micro-batches)")
    choose("model.image.bn_group_size", g, rule)

  for name, why in sorted((unavailable_evals or {}).items()):
    choose(f"evals.{name}.enabled", False, f"off: {why}")
  return choices


def merged(choices: list[Choice]) -> list[Choice]:
  """One choice per key: a key chosen again (e.g. accumulation raised by the AOT check) keeps its first place and
  takes its last value and rule."""
  last = {c.key: c for c in choices}
  out, seen = [], set()
  for c in choices:
    if c.key not in seen:
      seen.add(c.key)
      out.append(dataclasses.replace(last[c.key], was=c.was))
  return out


def overrides(choices: list[Choice]) -> dict[str, Any]:
  """{key: planned value} of every choice (the last choice of a key wins)."""
  return {c.key: c.value for c in choices}
