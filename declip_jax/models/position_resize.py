"""A ViT's position embeddings at another image size (CLIPA's low-resolution pretraining, docs/design.md §18)."""

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
