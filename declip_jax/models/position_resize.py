"""Position embeddings carried to another image size or caption length (CLIPA's low-resolution, short-caption
pretraining, docs/design.md §18)."""

import math

import jax
import numpy as np


def resize_vit_positions(positions: np.ndarray, patches: int) -> np.ndarray:
  """[1 + g^2, W] position embeddings ([CLS] first, then a g x g patch grid row by row) -> [1 + patches, W] for
  a square grid of `patches`: the [CLS] row unchanged, the grid resized bicubically (as CLIPA, FLIP and open_clip
  do when the resolution changes). Returns the input when the sizes already agree.

  Raises:
    ValueError: when either grid is not square.
  """
  positions = np.asarray(positions)
  old, width = positions.shape[0] - 1, positions.shape[1]
  if old == patches:
    return positions
  g_old, g_new = math.isqrt(old), math.isqrt(patches)
  if g_old * g_old != old or g_new * g_new != patches:
    raise ValueError(f"position embeddings of {old} patches cannot become {patches}: both must be square grids.")
  grid = positions[1:].astype(np.float32).reshape(g_old, g_old, width)
  resized = jax.image.resize(grid, (g_new, g_new, width), method="bicubic", antialias=g_new < g_old)
  return np.concatenate([positions[:1], np.asarray(resized, positions.dtype).reshape(patches, width)], axis=0)


def carry_positions(tower: str, positions: np.ndarray, target: np.ndarray) -> np.ndarray:
  """Another model's position embeddings for this model's, whose initial values are `target`.

  tower "image": [1 + g^2, W] -> target's [1 + g'^2, W], the patch grid resized (`resize_vit_positions`).
  tower "text": [L, W] -> target's [L', W]: the first min(L, L') rows kept (a token's position means the same at
  any caption length); rows past L keep their initial values from `target` (a model pretrained on captions cut
  to L tokens, fine-tuned at full length, as CLIPA). Positions of another width, or of a grid that is not square,
  come back unchanged (as do shorter text positions when `target` is a ShapeDtypeStruct): the caller reports the
  shape mismatch.
  """
  positions = np.asarray(positions)
  if positions.shape[1:] != tuple(target.shape[1:]) or positions.shape[0] == target.shape[0]:
    return positions
  if tower == "image":
    try:
      return resize_vit_positions(positions, target.shape[0] - 1)
    except ValueError:
      return positions
  kept = positions[:target.shape[0]]
  if kept.shape[0] < target.shape[0] and isinstance(target, jax.ShapeDtypeStruct):
    return positions  # No initial values to extend with.
  return np.concatenate([kept, np.asarray(target[kept.shape[0]:], positions.dtype)], axis=0)
