"""The train state: everything that changes during training, and so everything a checkpoint holds."""

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from declip_jax import parallel
from declip_jax.training import nn_queue, recovery


@flax.struct.dataclass
class TrainState:
  """All mutable training state (a pytree).

  Attributes:
    step: batches consumed, int32 scalar (the data position is step x train.batch_size).
    params: model parameters.
    batch_stats: BatchNorm running statistics ({} without BatchNorm).
    opt_state: optax state.
    nn_queue: [nns.groups, nns.group_size, D] unit text embeddings ([1, 1, D] zeros when NNS is off).
    nn_queue_ptr: [nns.groups] int32 next write slot of each buffer.
    rng: PRNG key data (uint32 [2]) for model-side randomness.
    health: the recovery record (loss window, non-finite counts, learning-rate scale, rollbacks).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  nn_queue: jax.Array
  nn_queue_ptr: jax.Array
  rng: jax.Array
  health: recovery.Health


def model_variables(state: TrainState) -> dict[str, Any]:
  """The variables `model.apply` needs for inference: {"params", "batch_stats"}."""
  return {"params": state.params, "batch_stats": state.batch_stats}


def create_train_state(config: ml_collections.ConfigDict, model, tx: optax.GradientTransformation,
                       sample_batch: dict[str, Any], rng: jax.Array) -> TrainState:
  """Initialises parameters, optimizer state and the NN queue from `rng` (a pure function: use in jit).

  Args:
    sample_batch: ShapeDtypeStructs with the keys and per-example shapes of a training batch (the batch size
      does not matter: initialisation runs BatchNorm in inference mode).
  """
  init_rng, queue_rng, state_rng = jax.random.split(rng, 3)
  dummy = {k: jnp.zeros(v.shape, v.dtype) for k, v in sample_batch.items()}
  variables = model.init(init_rng, dummy, train=False)
  params = variables["params"]
  if config.loss.weights.nns > 0:
    queue, ptr = nn_queue.init_queue(queue_rng, config.nns.groups, config.nns.group_size, config.model.embed_dim)
  else:
    queue, ptr = jnp.zeros((1, 1, config.model.embed_dim), jnp.float32), jnp.zeros((1,), jnp.int32)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(params), nn_queue=queue, nn_queue_ptr=ptr, rng=state_rng,
                    health=recovery.init_health(config.train.recovery.spike_window))


def sample_batch_spec(config: ml_collections.ConfigDict, batch_size: Optional[int] = None) -> dict[str, Any]:
  """ShapeDtypeStructs of a training batch of `batch_size` (default train.batch_size) examples."""
  b = batch_size or config.train.batch_size
  s, length = config.model.image.image_size, config.model.text.context_length
  spec = {"img1": jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32),
          "text_mlm": jax.ShapeDtypeStruct((b, length), jnp.int32)}
  for view in range(2, config.data.num_image_views + 1):
    spec[f"img{view}"] = spec["img1"]
  if config.loss.weights.tss > 0:
    spec["mlm_labels"] = spec["text_mlm"]
  if config.data.eda:
    spec["text_eda"] = spec["text_mlm"]
  return spec


def state_shardings(abstract_state: TrainState, mesh: Mesh, fsdp_min_size: int = 2**20) -> TrainState:
  """Where each part of the state lives: parameters and optimizer moments with >= fsdp_min_size elements split
  over the "fsdp" axis on their largest divisible dimension (`parallel.fsdp_partition`; XLA gathers them where
  a layer needs them), the NN queue and its pointers split over the batch axes on the groups dimension (when
  the group count allows it), everything else replicated."""
  replicated = parallel.replicated(mesh)
  shardings = jax.tree.map(lambda _: replicated, abstract_state)
  by_rule = lambda x: NamedSharding(mesh, parallel.fsdp_partition(x.shape, mesh.shape["fsdp"], fsdp_min_size))
  shardings = shardings.replace(params=jax.tree.map(by_rule, abstract_state.params),
                                opt_state=jax.tree.map(by_rule, abstract_state.opt_state))
  groups = abstract_state.nn_queue.shape[0]
  if groups % parallel.num_batch_shards(mesh) == 0:
    by_group = NamedSharding(mesh, P(parallel.BATCH_AXES))
    shardings = shardings.replace(nn_queue=by_group, nn_queue_ptr=by_group)
  return shardings
