"""Image views in TF ops with stateless randomness (docs/design.md §6).

Training: the MoCo-v2 recipe DeCLIP uses for both views — RandomResizedCrop, ColorJitter (random order, p=0.8),
grayscale (p=0.2), Gaussian blur (p=0.5), horizontal flip — or RandomResizedCrop alone (the CLIP baseline).
Evaluation: resize the shorter side to size / crop_fraction, centre crop. Images are float32 in [0, 1] until
`normalize`.
"""

import math

import ml_collections
import tensorflow as tf


def _uniform(seed, shape=(), minval=0.0, maxval=1.0):
  return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval)


def crop_window(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, scale=(0.08, 1.0),
                ratio=(3 / 4, 4 / 3), attempts: int = 10) -> tf.Tensor:
  """torchvision RandomResizedCrop's window: [top, left, h, w] int32.

  Up to `attempts` (area fraction ~ U(scale), log aspect ~ U(log ratio)) draws; the first that fits is used;
  otherwise the whole image, centre-cropped to the nearest allowed aspect ratio.
  """
  seeds = tf.random.experimental.stateless_split(seed, 4)
  h_f, w_f = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  area = _uniform(seeds[0], [attempts], scale[0], scale[1]) * h_f * w_f
  aspect = tf.exp(_uniform(seeds[1], [attempts], math.log(ratio[0]), math.log(ratio[1])))
  ws = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
  hs = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
  ok = (ws > 0) & (hs > 0) & (ws <= width) & (hs <= height)
  first = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)

  def sampled():
    h, w = hs[first], ws[first]
    top = tf.cast(tf.floor(_uniform(seeds[2]) * tf.cast(height - h + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(_uniform(seeds[3]) * tf.cast(width - w + 1, tf.float32)), tf.int32)
    return tf.stack([top, left, h, w])

  def fallback():
    in_ratio = w_f / h_f
    w = tf.where(in_ratio < ratio[0], w_f, tf.where(in_ratio > ratio[1], tf.round(h_f * ratio[1]), w_f))
    h = tf.where(in_ratio < ratio[0], tf.round(w_f / ratio[0]), h_f)
    h, w = tf.cast(h, tf.int32), tf.cast(w, tf.int32)
    return tf.stack([(height - h) // 2, (width - w) // 2, h, w])

  return tf.cond(tf.reduce_any(ok), sampled, fallback)


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, size: int, scale=(0.08, 1.0),
                        ratio=(3 / 4, 4 / 3)) -> tf.Tensor:
  """image [H, W, 3] float -> [size, size, 3]: a crop_window resized bilinearly."""
  shape = tf.shape(image)
  window = tf.cast(crop_window(seed, shape[0], shape[1], scale, ratio), tf.float32)
  top, left, h, w = tf.unstack(window)
  hmax, wmax = tf.cast(shape[0] - 1, tf.float32), tf.cast(shape[1] - 1, tf.float32)
  box = tf.stack([top / tf.maximum(hmax, 1), left / tf.maximum(wmax, 1),
                  (top + h - 1) / tf.maximum(hmax, 1), (left + w - 1) / tf.maximum(wmax, 1)])
  return tf.image.crop_and_resize(image[None], box[None], [0], [size, size], method="bilinear")[0]


def _grayscale(image: tf.Tensor) -> tf.Tensor:
  return tf.image.rgb_to_grayscale(image)  # ITU-R 601 weights, as PIL's "L" conversion.


def color_jitter(image: tf.Tensor, seed: tf.Tensor, brightness: float, contrast: float, saturation: float,
                 hue: float) -> tf.Tensor:
  """torchvision ColorJitter: the four adjustments in a random order, each with its factor drawn uniformly."""
  seeds = tf.random.experimental.stateless_split(seed, 5)
  b = _uniform(seeds[0], (), max(0.0, 1 - brightness), 1 + brightness)
  c = _uniform(seeds[1], (), max(0.0, 1 - contrast), 1 + contrast)
  s = _uniform(seeds[2], (), max(0.0, 1 - saturation), 1 + saturation)
  h = _uniform(seeds[3], (), -hue, hue)
  order = tf.argsort(_uniform(seeds[4], [4]))

  def blend(x, other, factor):
    return tf.clip_by_value(factor * x + (1 - factor) * other, 0.0, 1.0)

  def apply(x, op):
    return tf.switch_case(op, [
        lambda: tf.clip_by_value(x * b, 0.0, 1.0),
        lambda: blend(x, tf.reduce_mean(_grayscale(x)), c),
        lambda: blend(x, _grayscale(x), s),
        lambda: tf.image.adjust_hue(x, h),
    ])

  for i in range(4):
    image = apply(image, order[i])
  return image


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor, kernel_size: int) -> tf.Tensor:
  """Separable Gaussian blur with reflect padding; image [H, W, 3]."""
  radius = kernel_size // 2
  x = tf.cast(tf.range(-radius, radius + 1), tf.float32)
  k = tf.exp(-0.5 * tf.square(x / sigma))
  k = k / tf.reduce_sum(k)
  padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
  kh = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, 3, 1])
  kw = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, 3, 1])
  out = tf.nn.depthwise_conv2d(padded, kh, [1, 1, 1, 1], "VALID")
  return tf.nn.depthwise_conv2d(out, kw, [1, 1, 1, 1], "VALID")[0]


def blur_kernel_size(image_size: int, fraction: float) -> int:
  """Odd kernel size ~ fraction x image size (23 for 224 at 0.1), at least 3."""
  k = max(3, int(fraction * image_size))
  return k if k % 2 else k + 1


def train_view(image: tf.Tensor, seed: tf.Tensor, size: int, aug: ml_collections.ConfigDict) -> tf.Tensor:
  """image [H, W, 3] uint8 -> one augmented view [size, size, 3] float32 in [0, 1]."""
  seeds = tf.random.experimental.stateless_split(seed, 8)
  x = tf.image.convert_image_dtype(image, tf.float32)
  x = random_resized_crop(x, seeds[0], size, tuple(aug.crop_scale), tuple(aug.crop_ratio))
  if aug.recipe == "crop":
    return x
  jitter = lambda: color_jitter(x, seeds[2], aug.brightness, aug.contrast, aug.saturation, aug.hue)
  x = tf.cond(_uniform(seeds[1]) < aug.jitter_prob, jitter, lambda: x)
  x = tf.cond(_uniform(seeds[3]) < aug.grayscale_prob, lambda: tf.tile(_grayscale(x), [1, 1, 3]), lambda: x)
  sigma = _uniform(seeds[5], (), aug.blur_sigma[0], aug.blur_sigma[1]) * (size / aug.blur_reference_size)
  kernel = blur_kernel_size(size, aug.blur_kernel_fraction)
  x = tf.cond(_uniform(seeds[4]) < aug.blur_prob, lambda: gaussian_blur(x, sigma, kernel), lambda: x)
  x = tf.cond(_uniform(seeds[6]) < aug.flip_prob, lambda: tf.image.flip_left_right(x), lambda: x)
  return x


def eval_view(image: tf.Tensor, size: int, crop_fraction: float = 0.875) -> tf.Tensor:
  """image [H, W, 3] uint8 -> [size, size, 3] float32: the shorter side to size / crop_fraction (bicubic,
  antialiased), then the centre crop. Sizes and offsets follow torchvision's Resize and CenterCrop, which OpenAI's,
  open_clip's and CLIP_benchmark's preprocessing use: the longer side is truncated (300 x 200 to 224 gives 336 x
  224, 256 x 192 gives 298 x 224), the crop offset rounded half to even."""
  x = tf.image.convert_image_dtype(image, tf.float32)
  target = int(round(size / crop_fraction))
  hw = tf.shape(x)[:2]
  shorter = tf.reduce_min(hw)
  new = tf.where(hw == shorter, target, hw * target // shorter)
  x = tf.image.resize(x, new, method="bicubic", antialias=True)
  top, left = tf.unstack(tf.cast(tf.round(tf.cast(new - size, tf.float32) / 2), tf.int32))  # tf.round: half to even.
  return tf.clip_by_value(x[top: top + size, left: left + size], 0.0, 1.0)


def normalize(image: tf.Tensor, mean, std) -> tf.Tensor:
  """(image - mean) / std per channel."""
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
