"""The built-in dataset's words (docs/design.md §11): its attributes, caption templates, synonyms and zero-shot
prompts, and the vocabulary they make. Plain Python below both the data package (which renders the images and
captions: data/shapes.py) and the core (the model's vocabulary size: token_ids.py; prompt sets: templates.py).
"""

import re

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 230),
           "yellow": (235, 215, 40), "purple": (150, 60, 200), "cyan": (40, 210, 220)}
SIZES = {"small": 0.2, "large": 0.32}  # Object radius as a fraction of the image side.
POSITIONS = {"on the left": (0.5, 0.3), "on the right": (0.5, 0.7), "at the top": (0.3, 0.5),
             "at the bottom": (0.7, 0.5), "in the middle": (0.5, 0.5)}  # (row, col) centre fractions.
BACKGROUNDS = {"dark": 45, "light": 190}

CAPTION_TEMPLATES = (
    "a {size} {colour} {shape} {position}",
    "there is a {colour} {shape} {position} on a {background} background",
    "{position}, a {size} {shape} in {colour}",
    "this picture shows a {size} {colour} {shape}",
    "a {shape}, {size} and {colour}, sits {position}",
    "{colour} {shape} {position}",
    "a {background} image with a {size} {shape} that is {colour}",
    "the {shape} is {colour} and {size}",
)
# Words the captions may use instead of the attribute word (chosen at generation time) ...
CAPTION_SYNONYMS = {"large": ("big",), "small": ("little", "tiny"), "picture": ("photo", "image"),
                    "shows": ("contains", "depicts"), "middle": ("centre", "center")}
# ... and the table EDA's synonym replacement draws from (word -> alternatives).
SYNONYMS = {**CAPTION_SYNONYMS, "big": ("large",), "little": ("small", "tiny"), "tiny": ("small", "little"),
            "image": ("picture", "photo"), "photo": ("picture", "image"), "centre": ("middle", "center"),
            "center": ("middle", "centre"), "sits": ("is",), "dark": ("black",), "light": ("bright",)}

ATTRIBUTES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES), "position": tuple(POSITIONS),
              "background": tuple(BACKGROUNDS)}

# Zero-shot prompt templates per attribute ("{}" is the class name).
ZERO_SHOT_TEMPLATES = {
    "shape": ("a photo of a {}.", "a {}.", "a picture of a {}.", "there is a {} in the image.",
              "an image with a {} in it."),
    "colour": ("a photo of a {} shape.", "a {} object.", "a picture of something {}.", "the shape is {}."),
    "size": ("a photo of a {} shape.", "a {} object.", "the shape is {}."),
    "position": ("a shape {}.", "a photo of an object {}.", "there is something {}."),
    "background": ("a photo with a {} background.", "a {} image.", "a shape on a {} background."),
}


def vocabulary() -> list[str]:
  """Every word the captions, the synonym table and the zero-shot prompts can produce, sorted."""
  prompts = tuple(t for ts in ZERO_SHOT_TEMPLATES.values() for t in ts)
  templates = re.sub(r"\{[a-z]*\}", " ", " ".join(CAPTION_TEMPLATES + prompts))
  words = templates.split() + [w for phrase in list(SHAPES) + list(COLOURS) + list(SIZES) + list(POSITIONS)
                               + list(BACKGROUNDS) for w in phrase.split()]
  words += [w for k, v in SYNONYMS.items() for w in (k,) + v]
  return sorted({w.strip(",.") for w in words} - {""})
