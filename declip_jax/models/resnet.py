"""CLIP's ModifiedResNet image tower (RN50, RN101): 3-conv stem, anti-aliased strides, attention pooling."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from declip_jax.models import layers
from declip_jax.models.batch_norm import GroupedBatchNorm


def _torch_bias_init(fan_in: int):
  """PyTorch's default Linear bias init, U(+-1/sqrt(fan_in))."""
  bound = fan_in**-0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _avg_pool(x: jax.Array, stride: int) -> jax.Array:
  """AvgPool2d(stride): non-overlapping stride x stride means, [B, H, W, C] -> [B, H/stride, W/stride, C]."""
  return nn.avg_pool(x, (stride, stride), strides=(stride, stride)) if stride > 1 else x


def _conv(features: int, kernel: int, dtype, name: str) -> nn.Conv:
  """A bias-free stride-1 convolution with 'same' padding and PyTorch's default init."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                 kernel_init=layers.torch_default_init(), name=name)


class Bottleneck(nn.Module):
  """1x1 -> 3x3 -> avg-pool(stride) -> 1x1 (x4 channels), BatchNorm + ReLU after each; the shortcut is
  avg-pool(stride) -> 1x1 conv -> BatchNorm where the shape changes. bn3 starts at scale 0 (CLIP's init)."""

  planes: int
  stride: int
  bn_group_size: int
  bn_momentum: float
  bn_epsilon: float
  dtype: layers.Dtype = jnp.float32

  def _bn(self, name: str, **kwargs) -> GroupedBatchNorm:
    return GroupedBatchNorm(self.bn_group_size, self.bn_momentum, self.bn_epsilon, name=name, **kwargs)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    """x: [B, H, W, C] -> [B, H/stride, W/stride, 4 x planes]."""
    out = nn.relu(self._bn("bn1")(_conv(self.planes, 1, self.dtype, "conv1")(x), train))
    out = nn.relu(self._bn("bn2")(_conv(self.planes, 3, self.dtype, "conv2")(out), train))
    out = _avg_pool(out, self.stride)
    out = self._bn("bn3", scale_init=nn.initializers.zeros)(
        _conv(self.planes * 4, 1, self.dtype, "conv3")(out), train)
    identity = x
    if self.stride > 1 or x.shape[-1] != self.planes * 4:
      identity = _conv(self.planes * 4, 1, self.dtype, "downsample_conv")(_avg_pool(x, self.stride))
      identity = self._bn("downsample_bn")(identity, train)
    return nn.relu(out + identity)


class AttentionPool(nn.Module):
  """One query, the mean of the feature map, attends over [mean; positions] with learned positions (CLIP).

  q/k/v/c projections are Dense layers named as CLIP's `q_proj`, `k_proj`, `v_proj`, `c_proj`; weights start
  at N(0, width^-1/2), biases at PyTorch's default.
  """

  heads: int
  output_dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: [B, H, W, C] -> [B, output_dim]."""
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    x = jnp.concatenate([x.mean(axis=1, keepdims=True), x], axis=1)
    pos = self.param("positional_embedding", nn.initializers.normal(c**-0.5), (h * w + 1, c))
    x = x + pos.astype(x.dtype)

    def dense(features, name):
      return nn.Dense(features, dtype=self.dtype, kernel_init=nn.initializers.normal(c**-0.5),
                      bias_init=_torch_bias_init(c), name=name)

    head_dim = c // self.heads
    q = dense(c, "q_proj")(x[:, :1]).reshape(b, 1, self.heads, head_dim)
    k = dense(c, "k_proj")(x).reshape(b, h * w + 1, self.heads, head_dim)
    v = dense(c, "v_proj")(x).reshape(b, h * w + 1, self.heads, head_dim)
    out = jax.nn.dot_product_attention(q, k, v).reshape(b, c)
    return dense(self.output_dim, "c_proj")(out)


class ModifiedResNet(nn.Module):
  """Stem (3x3/2 conv to width/2, 3x3 conv, 3x3 conv to width, BatchNorm + ReLU each, avg-pool 2), four stages
  of Bottlenecks (width, 2, 4, 8 x width planes; strides 1, 2, 2, 2), attention pooling to `embed_dim`.

  BatchNorm statistics are taken over groups of `bn_group_size` examples in training (official: SyncBN over
  32 GPUs x 128 images); inference uses the running statistics in `batch_stats`.
  """

  stage_blocks: Sequence[int]
  width: int
  heads: int
  embed_dim: int
  bn_group_size: int
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  remat: str = "none"  # config.REMAT_POLICIES, per Bottleneck.

  @nn.compact
  def __call__(self, images: jax.Array, project: bool = True, train: bool = False, tokens: bool = False):
    """images: [B, H, W, 3] normalised float, H and W multiples of 32 -> image embeddings [B, embed_dim], not
    normalised. The attention pool is the projection, so project=False returns the same embeddings (CLIP's
    linear probes read them for ResNets). tokens=True: (that, the last stage's feature map as tokens
    [B, H/32 x W/32, 32 x width]: FILIP's image tokens; their mean is SLIP's pre-projection feature)."""
    del project
    bn = dict(group_size=self.bn_group_size, momentum=self.bn_momentum, epsilon=self.bn_epsilon)
    x = images.astype(self.dtype)
    x = nn.Conv(self.width // 2, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                dtype=self.dtype, kernel_init=layers.torch_default_init(), name="conv1")(x)
    x = nn.relu(GroupedBatchNorm(**bn, name="bn1")(x, train))
    x = nn.relu(GroupedBatchNorm(**bn, name="bn2")(_conv(self.width // 2, 3, self.dtype, "conv2")(x), train))
    x = nn.relu(GroupedBatchNorm(**bn, name="bn3")(_conv(self.width, 3, self.dtype, "conv3")(x), train))
    x = _avg_pool(x, 2)
    block = Bottleneck
    if self.remat != "none":
      block = nn.remat(Bottleneck, static_argnums=(2,), policy=layers.remat_policy(self.remat))
    for stage, blocks in enumerate(self.stage_blocks):
      planes = self.width * 2**stage
      for i in range(blocks):
        stride = 2 if stage > 0 and i == 0 else 1
        x = block(planes, stride, self.bn_group_size, self.bn_momentum, self.bn_epsilon, self.dtype,
                  name=f"layer{stage + 1}_{i}")(x, train)
    pooled = AttentionPool(self.heads, self.embed_dim, self.dtype, name="attnpool")(x)
    return (pooled, x.reshape(x.shape[0], -1, x.shape[-1])) if tokens else pooled
