"""DeCLIP's self-supervision heads: SimSiam projector/predictor (grouped BatchNorm) and the MLM head."""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from declip_jax.losses import mlm
from declip_jax.models import layers
from declip_jax.models.batch_norm import GroupedBatchNorm


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
  """Dense(vocab) on the text tower's final-LayerNorm token states.

  Called with labels, it returns the per-row cross-entropy at the chosen positions instead of logits, computing
  logits only at the first `max_predictions` chosen positions of each row (about a third of the positions at
  the recipe's 15% masking of 77 tokens). A batch where some row has more chosen positions takes the every-
  position path, so the result is the same function either way. That path scores `max_predictions` positions
  at a time, each block rematerialised: under autodiff a `cond` keeps the residuals of both branches, and
  [B, L, vocab] float32 log-probabilities kept for a branch that almost never runs more than doubled the ViT-B/32
  step's temporaries (libtpu, v5e, 128 per chip, bf16, remat full: 11.4 GiB with them, 4.1 GiB without).
  """

  vocab_size: int
  max_predictions: int = 0  # 0: logits at every position.

  def _logits(self, token_states: jax.Array) -> jax.Array:
    return nn.Dense(self.vocab_size, kernel_init=layers.torch_default_init(), dtype=token_states.dtype,
                    name="dense")(token_states).astype(jnp.float32)

  @nn.compact
  def __call__(self, token_states: jax.Array, labels: Optional[jax.Array] = None):
    """token_states: [B, L, W] -> logits [B, L, vocab] float32; with labels [B, L] (mlm.IGNORE_LABEL where not
    chosen): ([B] cross-entropy sums, [B] chosen counts), see `mlm.cross_entropy_sums`."""
    if labels is None:
      return self._logits(token_states)

    def every_position(module, states, labels):
      return mlm.cross_entropy_sums(module._logits(states), labels)

    if not self.max_predictions or self.max_predictions >= labels.shape[1]:
      return every_position(self, token_states, labels)

    positions, picked_labels, overflow = mlm.chosen_positions(labels, self.max_predictions)
    counts = jnp.sum(labels != mlm.IGNORE_LABEL, axis=-1).astype(jnp.float32)

    def every_position_in_blocks(module, states, labels):
      block = nn.checkpoint(every_position)
      k = self.max_predictions
      return sum(block(module, states[:, i:i + k], labels[:, i:i + k])[0]
                 for i in range(0, labels.shape[1], k)), counts

    def chosen_only(module, states, labels):
      del labels  # The chosen positions' labels are picked_labels.
      picked = jnp.take_along_axis(states, positions[..., None], axis=1)
      return mlm.cross_entropy_sums(module._logits(picked), picked_labels)[0], counts

    return nn.cond(overflow, every_position_in_blocks, chosen_only, self, token_states, labels)
