"""The device mesh, shardings, and host-local <-> global arrays (docs/design.md §5)."""

import math
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from declip_jax.config.config_error import ConfigError

AXIS_NAMES = ("data", "fsdp", "model")
BATCH_AXES = ("data", "fsdp")


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 in `shape` by what fills `num_devices`; checks the product.

  Raises:
    ConfigError: naming mesh.shape, when the sizes cannot match the device count.
  """
  shape = list(shape)
  if len(shape) != len(AXIS_NAMES):
    raise ConfigError(f"mesh.shape must have {len(AXIS_NAMES)} entries {AXIS_NAMES}, got {tuple(shape)}.")
  if shape.count(-1) > 1:
    raise ConfigError(f"mesh.shape may contain at most one -1, got {tuple(shape)}.")
  known = math.prod(s for s in shape if s != -1)
  if -1 in shape:
    if num_devices % known:
      raise ConfigError(f"mesh.shape {tuple(shape)} does not divide the {num_devices} devices.")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ConfigError(f"mesh.shape {tuple(shape)} needs {math.prod(shape)} devices, but there are {num_devices}.")
  return tuple(shape)


def make_mesh(shape: Sequence[int], devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A Mesh over `devices` (default: all) with axes ("data", "fsdp", "model")."""
  devices = list(jax.devices() if devices is None else devices)
  resolved = resolve_mesh_shape(shape, len(devices))
  return Mesh(np.asarray(devices).reshape(resolved), AXIS_NAMES)


def num_batch_shards(mesh: Mesh) -> int:
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (example) dimension split over the batch axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def fsdp_partition(shape: Sequence[int], fsdp_size: int, min_size: int) -> P:
  """Where a parameter-like tensor lives: its largest dimension divisible by the "fsdp" axis size is split over
  that axis when the tensor has at least `min_size` elements; otherwise (and for scalars) replicated."""
  if fsdp_size <= 1 or math.prod(shape) < min_size:
    return P()
  candidates = [d for d in range(len(shape)) if shape[d] % fsdp_size == 0]
  if not candidates:
    return P()
  dim = max(candidates, key=lambda d: (shape[d], -d))
  return P(*([None] * dim + ["fsdp"]))


def host_to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of a global batch -> global arrays sharded over the batch axes."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def sum_over_processes(values: np.ndarray) -> np.ndarray:
  """Element-wise sum of a small host array over all processes (itself with one process)."""
  if jax.process_count() == 1:
    return np.asarray(values)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(np.asarray(values))).sum(axis=0)


def gather_strings(text: str) -> list[str]:
  """Every process's `text`, in process order ([text] with one process)."""
  if jax.process_count() == 1:
    return [text]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  data = np.frombuffer(text.encode(), np.uint8)
  lengths = np.asarray(multihost_utils.process_allgather(np.array([len(data)], np.int64))).reshape(-1)
  padded = np.zeros(int(lengths.max()), np.uint8)
  padded[: len(data)] = data
  rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
  return [bytes(row[:n]).decode() for row, n in zip(rows, lengths)]
