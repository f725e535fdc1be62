"""Exact gradient accumulation for every method: the GradCache idea (Gao et al. 2021) (docs/design.md §17).

The towers are per-example; the loss stage is not (contrastive terms over the global batch, the heads' BatchNorm,
the NN queue). So the step runs in three stages:
1. the towers on each micro-batch in turn, keeping only their features (`DeCLIP.towers`), not their activations;
2. the loss stage once on the whole batch's features: heads, queue lookup, every term and gather, exactly as
   the unaccumulated step. It gives the loss, the gradient of the heads' parameters and the features' cotangents;
3. the towers again on each micro-batch, with a VJP against that micro-batch's cotangents; the parameter
   gradients are summed.
The update equals the full batch's up to float summation order; activation memory is one micro-batch's, and the
price is a second forward run of the towers.
"""

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from declip_jax import parallel

TOWER_INPUTS = ("img1", "img2", "img3", "text_mlm", "text_eda", "img1_patch_noise", "img2_patch_noise",
                "img3_patch_noise")
TOWER_MODULES = ("image_tower", "text_tower")  # Their BatchNorm statistics (a ResNet's) come from stage 1.


def split_micro(x: jax.Array, num_micro: int, shards: int) -> jax.Array:
  """[B, ...] -> [num_micro, B / num_micro, ...]. Micro-batch j is the j-th of `num_micro` equal runs of
  consecutive rows within each of the `shards` equal blocks of rows (one block per device of a batch-sharded x),
  so splitting moves no row to another device, and groups of consecutive rows stay together."""
  rows = x.shape[0] // (shards * num_micro)
  blocks = x.reshape((shards, num_micro, rows) + x.shape[1:])
  return jnp.swapaxes(blocks, 0, 1).reshape((num_micro, shards * rows) + x.shape[1:])


def join_micro(y: jax.Array, shards: int) -> jax.Array:
  """The inverse of `split_micro`: [num_micro, n, ...] -> [num_micro * n, ...] in the batch's row order."""
  num_micro, n = y.shape[:2]
  blocks = y.reshape((num_micro, shards, n // shards) + y.shape[2:])
  return jnp.swapaxes(blocks, 0, 1).reshape((num_micro * n,) + y.shape[2:])


def value_and_grad(model, params, batch_stats, batch: dict[str, jax.Array],
                   loss_stage: Callable, num_micro: int, mesh: Optional[Mesh]):
  """The loss, its auxiliaries and its parameter gradient for `batch`, the towers run `num_micro` rows at a time.

  Args:
    model: the DeCLIP module (`towers` and `heads`).
    params, batch_stats: the model's variables.
    batch: the global training batch; its tower inputs (`TOWER_INPUTS`) have B rows, B a multiple of
      num_micro x the mesh's batch shards.
    loss_stage: (params, features) -> (loss, aux); features as `DeCLIP.towers` returns them for the whole batch.
      aux may hold `batch_stats` (the heads' updated statistics).
    num_micro: the number of micro-batches.
    mesh: the mesh the batch is sharded over (None: one device).
  Returns:
    (loss, aux, grads): aux's `batch_stats` now also holds the towers' updated statistics (the mean over
    micro-batches of each one's update, which is the full batch's update when BatchNorm groups lie within
    micro-batches).
  """
  shards = parallel.num_batch_shards(mesh) if mesh is not None else 1

  def constrain(x, spec):
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec)) if mesh is not None else x

  def split(x):
    return constrain(split_micro(x, num_micro, shards), P(None, parallel.BATCH_AXES))

  micro = {k: split(batch[k]) for k in TOWER_INPUTS if k in batch}

  def towers(p, micro_batch):
    micro_batch = {k: constrain(v, P(parallel.BATCH_AXES)) for k, v in micro_batch.items()}
    return model.apply({"params": p, "batch_stats": batch_stats}, micro_batch, train=True, method="towers",
                       mutable=["batch_stats"])

  def forward(carry, micro_batch):
    features, mutated = towers(params, micro_batch)
    stats = {k: v for k, v in mutated.get("batch_stats", {}).items() if k in TOWER_MODULES}
    return carry, (features, stats)

  _, (features, stats) = jax.lax.scan(forward, None, micro)
  features = jax.tree.map(lambda y: constrain(join_micro(y, shards), P(parallel.BATCH_AXES)), features)
  tower_stats = jax.tree.map(lambda s: jnp.mean(s, axis=0), stats)

  (loss, aux), (head_grads, feature_grads) = jax.value_and_grad(loss_stage, argnums=(0, 1), has_aux=True)(
      params, features)
  cotangents = jax.tree.map(split, feature_grads)

  def backward(total, inputs):
    micro_batch, cotangent = inputs
    _, vjp = jax.vjp(lambda p: towers(p, micro_batch)[0], params)
    return jax.tree.map(jnp.add, total, vjp(cotangent)[0]), None

  tower_grads, _ = jax.lax.scan(backward, jax.tree.map(jnp.zeros_like, params), (micro, cotangents))
  grads = jax.tree.map(jnp.add, head_grads, tower_grads)
  if tower_stats:
    aux = {**aux, "batch_stats": {**aux.get("batch_stats", {}), **tower_stats}}
  return loss, aux, grads
