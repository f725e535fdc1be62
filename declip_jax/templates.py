"""Prompt template sets for zero-shot classification, by name (the name is stored with every result).

Each template has one "{}" for the class name. The `openai_*` and `cifar` sets are data from OpenAI's CLIP
repository (github.com/openai/CLIP: notebooks/Prompt_Engineering_for_ImageNet.ipynb and data/prompts.md),
Copyright (c) 2021 OpenAI, MIT licence; the `builtin_*` sets belong to the built-in demo dataset.
"""

from declip_jax import builtin_vocabulary

# The 80 templates OpenAI's CLIP uses for ImageNet zero-shot (their order).
OPENAI_IMAGENET_80 = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)

# The 7-template subset OpenAI selected from the 80 (same notebook).
OPENAI_IMAGENET_7 = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)

# CIFAR-10 and CIFAR-100 (data/prompts.md; the same 18 for both).
CIFAR = (
    "a photo of a {}.", "a blurry photo of a {}.", "a black and white photo of a {}.",
    "a low contrast photo of a {}.", "a high contrast photo of a {}.", "a bad photo of a {}.",
    "a good photo of a {}.", "a photo of a small {}.", "a photo of a big {}.", "a photo of the {}.",
    "a blurry photo of the {}.", "a black and white photo of the {}.", "a low contrast photo of the {}.",
    "a high contrast photo of the {}.", "a bad photo of the {}.", "a good photo of the {}.",
    "a photo of the small {}.", "a photo of the big {}.",
)

TEMPLATE_SETS = {
    **{f"builtin_{attribute}": templates for attribute, templates in builtin_vocabulary.ZERO_SHOT_TEMPLATES.items()},
    "class_name": ("{}",),
    "a_photo_of": ("a photo of a {}.",),
    "openai_imagenet_80": OPENAI_IMAGENET_80,
    "openai_imagenet_7": OPENAI_IMAGENET_7,
    "cifar10": CIFAR,
    "cifar100": CIFAR,
}


def get(name: str) -> tuple[str, ...]:
  """The templates of the set called `name`; ValueError listing the known names otherwise."""
  if name not in TEMPLATE_SETS:
    raise ValueError(f"unknown prompt template set {name!r}; known: {sorted(TEMPLATE_SETS)}.")
  return TEMPLATE_SETS[name]
