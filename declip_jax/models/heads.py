"""DeCLIP's self-supervision heads: SimSiam projector/predictor (grouped BatchNorm) and the MLM head."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from declip_jax.models import layers


class GroupedBatchNorm(nn.Module):
  """BatchNorm whose training statistics are taken over fixed-size groups of consecutive examples.

  The official code normalises over each GPU's batch; here the group is a number of examples
  (`ssl.bn_group_size`), so the function computed does not depend on how many devices there are. Implemented
  by reshaping [B, F] -> [B/g, g, F]. Running statistics (in `batch_stats`) move towards the mean over groups
  of each group's mean and unbiased variance, as PyTorch's BatchNorm does for one group.
  """

  group_size: int
  momentum: float = 0.9  # flax convention: new = momentum * old + (1 - momentum) * batch. PyTorch 0.1.
  epsilon: float = 1e-5
  use_scale_bias: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [B, F] -> [B, F]; with train=True B must be a multiple of group_size."""
    features = x.shape[-1]
    mean_var = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    var_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    x32 = x.astype(jnp.float32)
    if train:
      g = self.group_size
      if x.shape[0] % g:
        raise ValueError(f"GroupedBatchNorm: batch {x.shape[0]} is not a multiple of the group size {g}.")
      xg = x32.reshape(x.shape[0] // g, g, features)
      mean = xg.mean(axis=1, keepdims=True)
      var = jnp.mean(jnp.square(xg - mean), axis=1, keepdims=True)
      y = ((xg - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape)
      if not self.is_initializing():
        m = self.momentum
        mean_var.value = m * mean_var.value + (1 - m) * mean.mean(axis=(0, 1))
        var_var.value = m * var_var.value + (1 - m) * (var * g / (g - 1)).mean(axis=(0, 1))
    else:
      y = (x32 - mean_var.value) * jax.lax.rsqrt(var_var.value + self.epsilon)
    if self.use_scale_bias:
      y = y * self.param("scale", nn.initializers.ones, (features,)) + self.param("bias", nn.initializers.zeros,
                                                                                   (features,))
    return y.astype(x.dtype)


class SimSiamHead(nn.Module):
  """Projector Dense+BN+ReLU, Dense+BN+ReLU, Dense+BN; predictor Dense+BN+ReLU, Dense (DESIGN §2).

  Dense layers followed by BatchNorm have no bias: in training mode BatchNorm subtracts it again, so its true
  gradient is exactly zero, and AdamW would turn the float rounding noise in that gradient into full-size
  steps (a run's bias values would then depend on the device count). The function trained is unchanged.
  """

  projector_dim: int = 1024
  predictor_hidden_dim: int = 512
  bn_group_size: int = 128
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  def _dense(self, features: int, name: str, use_bias: bool = False) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, kernel_init=layers.torch_default_init(), name=name)

  def _bn(self, name: str) -> GroupedBatchNorm:
    return GroupedBatchNorm(self.bn_group_size, self.bn_momentum, self.bn_epsilon, name=name)

  @nn.compact
  def __call__(self, z_img: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """z_img: [B, D] image embeddings (before normalisation) -> (p [B, P] prediction, z [B, P] projection)."""
    h = z_img.astype(jnp.float32)
    for i in range(2):
      h = nn.relu(self._bn(f"projector_bn{i}")(self._dense(self.projector_dim, f"projector_dense{i}")(h), train))
    z = self._bn("projector_bn2")(self._dense(self.projector_dim, "projector_dense2")(h), train)
    h = nn.relu(self._bn("predictor_bn0")(self._dense(self.predictor_hidden_dim, "predictor_dense0")(z), train))
    p = self._dense(self.projector_dim, "predictor_dense1", use_bias=True)(h)
    return p, z


class MLMHead(nn.Module):
  """Dense(vocab) on the text tower's final-LayerNorm token states."""

  vocab_size: int

  @nn.compact
  def __call__(self, token_states: jax.Array) -> jax.Array:
    """token_states: [B, L, W] -> logits [B, L, vocab] float32."""
    logits = nn.Dense(self.vocab_size, kernel_init=layers.torch_default_init(), dtype=token_states.dtype,
                      name="dense")(token_states)
    return logits.astype(jnp.float32)
