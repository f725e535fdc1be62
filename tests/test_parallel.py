"""Mesh shapes from config."""

import pytest

from declip_jax import parallel
from declip_jax.config import ConfigError


def test_minus_one_fills_the_remaining_devices():
  assert parallel.resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert parallel.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)


@pytest.mark.parametrize("shape", [(3, 1, 1), (-1, -1, 1), (8, 1), (3, -1, 1)])
def test_impossible_shapes_name_mesh_shape(shape):
  with pytest.raises(ConfigError, match="mesh.shape"):
    parallel.resolve_mesh_shape(shape, 8)


def test_single_device_mesh_has_one_batch_shard():
  mesh = parallel.make_mesh((-1, 1, 1))
  assert parallel.num_batch_shards(mesh) == mesh.size and mesh.axis_names == parallel.AXIS_NAMES


def test_fsdp_partition_splits_the_largest_divisible_dimension_of_large_tensors():
  from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
  assert parallel.fsdp_partition((768, 3072), 8, 1000) == P(None, "fsdp")
  assert parallel.fsdp_partition((3072, 768), 8, 1000) == P("fsdp")
  assert parallel.fsdp_partition((49409, 512), 8, 1000) == P(None, "fsdp")  # 49,409 is not divisible by 8.
  assert parallel.fsdp_partition((12, 10), 8, 1000) == P()  # Too small.
  assert parallel.fsdp_partition((7, 9, 1000), 1, 10) == P()  # No fsdp axis.
  assert parallel.fsdp_partition((), 8, 0) == P()
