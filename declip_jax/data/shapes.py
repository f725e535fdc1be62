"""A procedurally generated image-caption dataset for the demo and the tests (no downloads).

Each image shows one object with four attributes (shape, colour, size, position) on a dark or light noisy
background; its caption names the attributes in one of several phrasings, with synonyms, so that EDA and MLM
have something to work on. Everything is a deterministic function of (seed, split). Zero-shot evaluations
classify one attribute each (`config.builtin_evals`).

Web-like noise (`data.builtin.noise`, off by default; training split only, the held-out split stays clean):
fractions of the captions that name only some attributes ("a red shape"), that name a wrong shape or colour,
or that are unrelated alt-text ("IMG_2041.jpg", "click to enlarge") or another image's caption. The noise has
its own random stream, so the images, attributes and clean captions are those of the noiseless data.
"""

import dataclasses
import functools

import numpy as np

from declip_jax.builtin_vocabulary import (ATTRIBUTES, BACKGROUNDS, CAPTION_SYNONYMS, CAPTION_TEMPLATES, COLOURS,
                                           POSITIONS, SHAPES, SIZES)

@dataclasses.dataclass(frozen=True)
class Split:
  """One split: images [N, S, S, 3] uint8, captions [N] str, and per attribute [N] int32 indices into
  ATTRIBUTES[name]."""

  images: np.ndarray
  captions: np.ndarray
  attributes: dict[str, np.ndarray]

  @property
  def labels(self) -> np.ndarray:
    """The shape of each object (the default zero-shot task)."""
    return self.attributes["shape"]


def _shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
  dy, dx = yy - cy, xx - cx
  if shape == "circle":
    return dy**2 + dx**2 <= r**2
  if shape == "ring":
    d2 = dy**2 + dx**2
    return (d2 <= r**2) & (d2 >= (0.55 * r) ** 2)
  if shape == "square":
    return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)
  if shape == "diamond":
    return np.abs(dy) + np.abs(dx) <= r
  if shape == "cross":
    arm = 0.33 * r
    return ((np.abs(dy) <= arm) & (np.abs(dx) <= r)) | ((np.abs(dx) <= arm) & (np.abs(dy) <= r))
  if shape == "triangle":  # Pointing up, base at cy + r/2.
    top = cy - r
    inside_rows = (yy >= top) & (yy <= cy + 0.6 * r)
    half_width = (yy - top) / (1.6 * r) * r
    return inside_rows & (np.abs(dx) <= half_width)
  raise ValueError(shape)


def _caption(rng: np.random.Generator, attrs: dict[str, str]) -> str:
  words = dict(attrs)
  text = CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(**words)
  out = []
  for word in text.split(" "):
    bare = word.rstrip(",")
    if bare in CAPTION_SYNONYMS and rng.random() < 0.4:
      alternatives = CAPTION_SYNONYMS[bare]
      word = word.replace(bare, alternatives[rng.integers(len(alternatives))])
    out.append(word)
  return " ".join(out)


ALT_TEXTS = ("IMG_{n}.jpg", "DSC{n}.JPG", "click to enlarge", "image", "untitled", "photo {n}", "stock photo",
             "thumbnail", "{n}.png", "see more")
PARTIAL_TEMPLATES = {("shape",): "a {shape}", ("colour",): "something {colour}", ("position",): "an object {position}",
                     ("colour", "shape"): "a {colour} {shape}", ("shape", "size"): "a {size} {shape}",
                     ("colour", "position"): "a {colour} object {position}"}


@dataclasses.dataclass(frozen=True)
class CaptionNoise:
  """Fractions of training captions made noisy, each caption at most one kind (they sum to at most 1)."""

  partial: float = 0.0  # Names only one or two attributes.
  wrong: float = 0.0  # Names a wrong shape or colour.
  unrelated: float = 0.0  # Alt-text unrelated to the image, or (half of them) another image's caption.

  @property
  def any(self) -> bool:
    return self.partial + self.wrong + self.unrelated > 0


def noisy_captions(captions: list[str], attributes: list[dict[str, str]], noise: CaptionNoise,
                   seed: int) -> tuple[list[str], np.ndarray]:
  """The captions with `noise` applied, and per caption its kind: 0 clean, 1 partial, 2 wrong, 3 unrelated."""
  rng = np.random.default_rng([seed, 2])
  kinds = np.zeros(len(captions), np.int32)
  out = list(captions)
  for i, attrs in enumerate(attributes):
    u = rng.random()
    if u < noise.partial:
      names = list(PARTIAL_TEMPLATES)[rng.integers(len(PARTIAL_TEMPLATES))]
      out[i], kinds[i] = PARTIAL_TEMPLATES[names].format(**attrs), 1
    elif u < noise.partial + noise.wrong:
      name = ("shape", "colour")[rng.integers(2)]
      others = [v for v in ATTRIBUTES[name] if v != attrs[name]]
      out[i], kinds[i] = _caption(rng, {**attrs, name: others[rng.integers(len(others))]}), 2
    elif u < noise.partial + noise.wrong + noise.unrelated:
      if rng.random() < 0.5:
        out[i] = captions[(i + 1 + rng.integers(len(captions) - 1)) % len(captions)] if len(captions) > 1 else ""
      else:
        out[i] = ALT_TEXTS[rng.integers(len(ALT_TEXTS))].format(n=rng.integers(100, 10_000))
      kinds[i] = 3
  return out, kinds


@functools.lru_cache(maxsize=8)
def generate(num_examples: int, image_size: int, seed: int, split: str,
             noise: CaptionNoise = CaptionNoise()) -> Split:
  """Renders `num_examples` examples; the same arguments always give the same arrays.

  Args:
    num_examples: N.
    image_size: S, the side of the square images.
    seed: the dataset seed.
    split: "train" or "test" (different random streams from the same seed).
    noise: caption noise (see `noisy_captions`); applied to the "train" split only.
  """
  rng = np.random.default_rng([seed, {"train": 0, "test": 1}[split]])
  supersample = 2  # Render at 2S and average 2x2 blocks: smooth edges.
  n = image_size * supersample
  yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
  images = np.empty((num_examples, image_size, image_size, 3), np.uint8)
  captions, labels, all_attrs = [], {name: [] for name in ATTRIBUTES}, []
  position_names = list(POSITIONS)
  for i in range(num_examples):
    attrs = {"shape": SHAPES[rng.integers(len(SHAPES))],
             "colour": list(COLOURS)[rng.integers(len(COLOURS))],
             "size": list(SIZES)[rng.integers(len(SIZES))],
             "position": position_names[rng.integers(len(position_names))],
             "background": list(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))]}
    cy, cx = POSITIONS[attrs["position"]]
    jitter = rng.uniform(-0.04, 0.04, size=2)
    r = SIZES[attrs["size"]] * n * rng.uniform(0.9, 1.1)
    mask = _shape_mask(attrs["shape"], yy, xx, (cy + jitter[0]) * n, (cx + jitter[1]) * n, r)
    canvas = BACKGROUNDS[attrs["background"]] + rng.normal(0, 10, size=(n, n, 1)).astype(np.float32)
    canvas = np.repeat(canvas, 3, axis=2)
    colour = np.asarray(COLOURS[attrs["colour"]], np.float32) + rng.normal(0, 12, size=3)
    canvas[mask] = colour
    canvas = canvas.reshape(image_size, supersample, image_size, supersample, 3).mean(axis=(1, 3))
    images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    captions.append(_caption(rng, attrs))
    all_attrs.append(attrs)
    for name, values in ATTRIBUTES.items():
      labels[name].append(values.index(attrs[name]))
  if split == "train" and noise.any:
    captions, _ = noisy_captions(captions, all_attrs, noise, seed)
  return Split(images, np.asarray(captions, dtype=object),
               {name: np.asarray(v, np.int32) for name, v in labels.items()})


def load_split(config, split: str) -> Split:
  """The examples of `split` ("train" or "test") as the experiment config (`data.builtin`, the image size) says."""
  b = config.data.builtin
  n = b.num_train if split == "train" else b.num_test
  return generate(n, config.model.image.image_size, b.seed, split, CaptionNoise(**b.noise))
