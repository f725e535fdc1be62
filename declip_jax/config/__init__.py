"""The full DeCLIP recipe as a ConfigDict, one module per section, and its validation (docs/design.md §11).

`base_config()` holds every key with the official default (Sense-GVT/DeCLIP, YFCC-15M, ViT-B/32; see
docs/design.md). Files in `configs/` start from it and change what their experiment changes. Each section's
module (`<section>_section.py`: train, checkpoint, evals, mesh, distributed, model, loss, ssl, mlm, nns, optim,
data) holds its keys' defaults and their checks together. `validate()` checks every section; `validate_training()`
only those the training core reads, so that the core never imports the data section (which imports the data
sources' registry: each source declares its own keys).
"""

import ml_collections

from declip_jax.config import (checkpoint_section, distributed_section, evals_section, loss_section, mesh_section,
                               mlm_section, model_section, nns_section, optim_section, ssl_section, train_section)
from declip_jax.config.config_error import ConfigError, require
from declip_jax.config.evals_section import EVAL_KINDS, builtin_evals, eval_spec, imagenet_zero_shot, token_wise_evals
from declip_jax.config.loss_section import LOSS_TERMS
from declip_jax.config.model_section import REMAT_POLICIES
from declip_jax.config.nns_section import text_views

# Checked before the JAX runtime starts (main.py), so before the rest can be.
validate_distributed = distributed_section.validate

__all__ = ["ConfigError", "EVAL_KINDS", "LOSS_TERMS", "REMAT_POLICIES", "base_config", "builtin_evals", "eval_spec",
           "imagenet_zero_shot", "require", "text_views", "token_wise_evals", "validate", "validate_distributed",
           "validate_inputs", "validate_training"]


def base_config() -> ml_collections.ConfigDict:
  """Returns the official DeCLIP ViT-B/32 recipe with every key the code reads."""
  # The data sources declare the data section's keys.
  from declip_jax.config import data_section  # pylint: disable=g-import-not-at-top
  c = ml_collections.ConfigDict()
  c.train = train_section.defaults()
  c.checkpoint = checkpoint_section.defaults()
  c.eval = evals_section.defaults()
  # Named evaluations (see eval_spec), run every evals.<name>.every_steps, at the end of training, and all of
  # them with --mode=eval; results in TensorBoard (eval/<name>/<metric>) and <workdir>/eval_results.json.
  c.evals = ml_collections.ConfigDict({"retrieval": eval_spec("retrieval", "heldout")})
  c.mesh = mesh_section.defaults()
  # Several processes (TPU pod slices, multi-node GPU): see declip_jax/distributed.py.
  c.distributed = distributed_section.defaults()
  c.model = model_section.defaults()
  c.loss = loss_section.defaults()
  c.ssl = ssl_section.defaults()
  c.mlm = mlm_section.defaults()
  c.nns = nns_section.defaults()
  c.optim = optim_section.defaults()
  c.data = data_section.defaults()
  return c


def validate_training(c: ml_collections.ConfigDict, num_batch_shards: int = 1) -> None:
  """Raises ConfigError naming the keys when a section the training core reads is inconsistent: train,
  checkpoint, distributed, loss (with ssl and FILIP's sizes), the batch against the mesh, nns, mlm, model.

  Args:
    c: the experiment config.
    num_batch_shards: devices the global batch is split over (mesh "data" x "fsdp").
  """
  train_section.validate(c)
  checkpoint_section.validate(c)
  distributed_section.validate(c)
  loss_section.validate(c)
  nns_section.validate(c, num_batch_shards)
  mesh_section.validate(c, num_batch_shards)
  mlm_section.validate(c)
  model_section.validate(c)


def validate_inputs(c: ml_collections.ConfigDict) -> None:
  """Raises ConfigError naming the keys when the data section (source, tokenizer, augmentation) or an evaluation
  is inconsistent: what the training loop and the evaluations read, beyond the training core."""
  from declip_jax.config import data_section  # pylint: disable=g-import-not-at-top  (the sources check their keys)
  data_section.validate(c)
  evals_section.validate(c)


def validate(c: ml_collections.ConfigDict, num_batch_shards: int = 1) -> None:
  """Every section: `validate_training`, then `validate_inputs`."""
  validate_training(c, num_batch_shards)
  validate_inputs(c)
