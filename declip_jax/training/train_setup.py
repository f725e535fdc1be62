"""What training, evaluation, benchmarks and AOT compiles share: mesh, model, optimizer, abstract state and its
shardings, and the jitted update. Imports no TensorFlow: the token ids come from the config (`token_ids`)."""

import functools
from typing import Optional

import jax
import ml_collections

from declip_jax import config as config_lib, parallel, token_ids as token_ids_lib
from declip_jax.training import optim, state as state_lib
from declip_jax.training import train_step
from declip_jax.models import declip, layers


class Setup:
  """Mesh, token ids, model, optimizer, abstract state and its shardings for a config.

  Attributes:
    mesh: the device mesh (`mesh.shape`).
    token_ids: vocabulary size and special ids (`token_ids.TokenIds`).
    model, tx: the DeCLIP module and the optax optimizer.
    abstract_state: ShapeDtypeStructs of the train state with their shardings.
    shardings: the train state's shardings.
  """

  def __init__(self, config: ml_collections.ConfigDict, devices: Optional[list] = None,
               compile_only: bool = False):
    """compile_only: the programs are compiled, never run (AOT memory checks on fake or topology devices)."""
    self.mesh = parallel.make_mesh(config.mesh.shape, devices)
    config_lib.validate_training(config, parallel.num_batch_shards(self.mesh))
    self.token_ids = self._token_ids(config)
    if self.token_ids.vocab_size > config.model.text.vocab_size:
      raise config_lib.ConfigError(
          f"model.text.vocab_size ({config.model.text.vocab_size}) is smaller than the tokenizer's "
          f"{self.token_ids.vocab_size} ids.")
    self.model = declip.build_model(config, self.token_ids.eot_id)
    self.tx = optim.build_optimizer(config)
    self.init_fn = functools.partial(state_lib.create_train_state, config, self.model, self.tx,
                                     state_lib.sample_batch_spec(config, batch_size=1))
    self.rng = jax.random.PRNGKey(config.train.seed)
    abstract = jax.eval_shape(self.init_fn, self.rng)
    self.shardings = state_lib.state_shardings(abstract, self.mesh, config.mesh.fsdp_min_size)
    if not compile_only:
      _refuse_cpu_deadlock(config, self.mesh, self.shardings)
    self.abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                       abstract, self.shardings)

  def _token_ids(self, config: ml_collections.ConfigDict) -> token_ids_lib.TokenIds:
    """The ids of the config's tokenizer, without building it (the input pipeline builds it:
    `declip_jax.data.tokenizers.build`; both take their ids from `token_ids`)."""
    return token_ids_lib.from_config(config)

  def init_state(self) -> state_lib.TrainState:
    """A fresh train state, created directly with its shardings."""
    return jax.jit(self.init_fn, out_shardings=self.shardings)(self.rng)

  def jit_train_step(self, config: ml_collections.ConfigDict):
    """The jitted update: state donated, batch split over the batch axes, metrics replicated."""
    return jax.jit(train_step.make_train_step(config, self.model, self.tx, self.mesh),
                   in_shardings=(self.shardings, parallel.batch_sharding(self.mesh)),
                   out_shardings=(self.shardings, parallel.replicated(self.mesh)), donate_argnums=0)


def _refuse_cpu_deadlock(config: ml_collections.ConfigDict, mesh, shardings: state_lib.TrainState) -> None:
  """Several CPU devices with FSDP-split parameters and the layers in a loop hang (XLA CPU runtime): refuse to start.

  XLA CPU executes independent operations of one program concurrently; a collective inside the scanned layers'
  while loop (the FSDP all-gather) then runs concurrently with, and on some devices before, one outside it (a
  gradient all-reduce), and the in-process rendezvous of each waits for devices that are in the other
  (measured: 5 of 6 runs of two steps on 8 virtual devices, mesh (1,8,1), hung in the second step; 0 of 12 with
  model.scan_layers=False, on meshes (1,8,1) and (2,4,1)). GPU and TPU order collectives identically on every device.
  """
  split = any(axis is not None for s in jax.tree.leaves(shardings.params) for axis in s.spec)
  towers = [config.model.text.layers] + ([config.model.image.layers] if config.model.image.arch == "vit" else [])
  looped = any(layers.in_a_loop(config.model.scan_layers, config.model.scan_unroll, n) for n in towers)
  if split and looped and mesh.size > 1 and mesh.devices.flat[0].platform == "cpu":
    raise config_lib.ConfigError(
        "On several CPU devices, FSDP-split parameters (mesh.fsdp > 1 and tensors of at least mesh.fsdp_min_size "
        "elements) with the layers in a loop (model.scan_layers=True and model.scan_unroll from 1 to below the "
        "layers) can deadlock in XLA's CPU runtime; set model.scan_layers=False or model.scan_unroll=0 (or raise "
        "mesh.fsdp_min_size) for CPU runs.")
