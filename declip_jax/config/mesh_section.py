"""mesh.*: the device mesh ("data", "fsdp", "model") and which arrays FSDP splits; the global batch against
the mesh's batch shards and train.accum_steps' micro-batches."""

import ml_collections

from declip_jax.config.config_error import require


def defaults() -> ml_collections.ConfigDict:
  """mesh.*: the device mesh ("data", "fsdp", "model") and which arrays FSDP splits."""
  mesh = ml_collections.ConfigDict()
  mesh.shape = (-1, 1, 1)  # Sizes of axes ("data", "fsdp", "model"); -1 fills with the remaining devices.
  mesh.fsdp_min_size = 2**20  # Parameters/optimizer moments with this many elements are split over "fsdp".
  return mesh


def validate(c: ml_collections.ConfigDict, num_batch_shards: int) -> None:
  """The global batch against the mesh's batch shards (mesh "data" x "fsdp") and train.accum_steps."""
  b = c.train.batch_size
  require(b % num_batch_shards == 0,
          f"train.batch_size ({b}) must be divisible by the {num_batch_shards} batch shards of mesh.shape "
          f"{tuple(c.mesh.shape)}.")
  k = c.train.accum_steps
  require(isinstance(k, int) and k >= 1, f"train.accum_steps must be an integer >= 1, got {k!r}.")
  require(b % (num_batch_shards * k) == 0,
          f"train.batch_size ({b}) must be divisible by train.accum_steps ({k}) x the {num_batch_shards} batch "
          "shards: each device's rows split into equal micro-batches.")
  if k > 1 and c.model.image.arch == "resnet":
    g, micro = c.model.image.bn_group_size, b // (num_batch_shards * k)
    require(micro % g == 0,
            f"train.accum_steps ({k}) gives micro-batches of {micro} examples per device, which must hold whole "
            f"ResNet BatchNorm groups (model.image.bn_group_size {g}) for the accumulated update to equal the "
            "full batch's: lower train.accum_steps or model.image.bn_group_size.")
