"""The methods' heads: SimSiam projector/predictor (DeCLIP's ISS), SLIP's SimCLR projector (both with grouped
BatchNorm), the MLM head (TSS) and FILIP's token mappings."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from declip_jax.models import layers
from declip_jax.models.batch_norm import GroupedBatchNorm


class SimSiamHead(nn.Module):
  """Projector Dense+BN+ReLU, Dense+BN+ReLU, Dense+BN; predictor Dense+BN+ReLU, Dense (docs/design.md §2).

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


class SimCLRHead(nn.Module):
  """SLIP's `predictor_sim`: Dense+BN+ReLU, Dense+BN+ReLU, Dense (no BatchNorm at the output), on the image
  tower's pre-projection feature. Dense layers followed by BatchNorm have no bias (see SimSiamHead)."""

  hidden_dim: int = 4096
  out_dim: int = 256
  bn_group_size: int = 128
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5

  @nn.compact
  def __call__(self, features: jax.Array, train: bool) -> jax.Array:
    """features: [B, F] -> [B, out_dim] (not normalised)."""
    h = features.astype(jnp.float32)
    for i in range(2):
      h = nn.Dense(self.hidden_dim, use_bias=False, kernel_init=layers.torch_default_init(), name=f"dense{i}")(h)
      h = nn.relu(GroupedBatchNorm(self.bn_group_size, self.bn_momentum, self.bn_epsilon, name=f"bn{i}")(h, train))
    return nn.Dense(self.out_dim, kernel_init=layers.torch_default_init(), name="dense2")(h)


class TokenMapping(nn.Module):
  """FILIP's per-token mapping: Dense(dim) with bias on each token of a tower ([B, T, W] -> [B, T, dim] float32)."""

  dim: int = 256

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    return nn.Dense(self.dim, kernel_init=layers.torch_default_init(), dtype=tokens.dtype,
                    name="dense")(tokens).astype(jnp.float32)


class MLMHead(nn.Module):
  """Dense(vocab) on the text tower's final-LayerNorm token states: vocabulary logits at the positions it is
  given. The MLM loss (losses/mlm.py) gives it only the chosen positions where it can (a [B, L, vocab] tensor at
  the recipe's sizes is most of a step's memory)."""

  vocab_size: int

  @nn.compact
  def __call__(self, token_states: jax.Array) -> jax.Array:
    """token_states: [B, T, W] -> logits [B, T, vocab] float32."""
    return nn.Dense(self.vocab_size, kernel_init=layers.torch_default_init(), dtype=token_states.dtype,
                    name="dense")(token_states).astype(jnp.float32)
