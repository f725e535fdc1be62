"""BatchNorm over fixed-size groups of examples (the SimSiam heads and the ResNet image tower)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class GroupedBatchNorm(nn.Module):
  """BatchNorm whose training statistics are taken over fixed-size groups of consecutive examples.

  The official code normalises over each GPU's batch (SimSiam heads) or over SyncBN groups of GPUs (the ResNet
  tower); here the group is a number of examples, so the function computed does not depend on how many devices
  there are. Statistics are per feature (the last axis) over the group's examples and all positions between
  (e.g. [B, H, W, C]: over g x H x W values). They are formed from per-example [B, C] means, so only those small
  tensors cross devices when a group spans several. Running statistics (in `batch_stats`) move towards the mean
  over groups of each group's mean and unbiased variance, as PyTorch's BatchNorm does for one group.
  """

  group_size: int
  momentum: float = 0.9  # flax convention: new = momentum * old + (1 - momentum) * batch. PyTorch 0.1.
  epsilon: float = 1e-5
  use_scale_bias: bool = True
  scale_init: nn.initializers.Initializer = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [B, ..., F] -> the same shape; with train=True B must be a multiple of group_size."""
    features = x.shape[-1]
    mean_var = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    var_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    x32 = x.astype(jnp.float32)
    if train:
      g, b = self.group_size, x.shape[0]
      if b % g:
        raise ValueError(f"GroupedBatchNorm: batch {b} is not a multiple of the group size {g}.")
      positions = tuple(range(1, x.ndim - 1))
      broadcast = (b,) + (1,) * len(positions) + (features,)

      def group_mean(per_example):  # [B, F] -> [B, F], each row its group's mean.
        groups = per_example.reshape(b // g, g, features).mean(axis=1)
        return jnp.repeat(groups, g, axis=0)

      mean = group_mean(x32.mean(axis=positions) if positions else x32)
      centred = x32 - mean.reshape(broadcast)
      var = group_mean(jnp.square(centred).mean(axis=positions) if positions else jnp.square(centred))
      y = centred * jax.lax.rsqrt(var.reshape(broadcast) + self.epsilon)
      if not self.is_initializing():
        count = g * math.prod(x.shape[1:-1])
        m = self.momentum
        mean_var.value = m * mean_var.value + (1 - m) * mean.mean(axis=0)
        var_var.value = m * var_var.value + (1 - m) * var.mean(axis=0) * count / (count - 1)
    else:
      y = (x32 - mean_var.value) * jax.lax.rsqrt(var_var.value + self.epsilon)
    if self.use_scale_bias:
      y = y * self.param("scale", self.scale_init, (features,)) + self.param("bias", nn.initializers.zeros,
                                                                              (features,))
    return y.astype(x.dtype)
