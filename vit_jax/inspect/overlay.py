"""The authors' attention overlay for Fig. 6 / Fig. 14 (numpy + PIL).

Recipe from the authors (vision_transformer issue #27): scale the map to
[0, 255], resize it to the image size with LANCZOS, Gaussian-blur it with a
radius of one patch, min-max it to [0, 1] and use it as the alpha channel of
the image over a black background. The result is the image times the mask.
Non-square images are resized to (W, H) correctly (PIL takes width first).
"""

from typing import Sequence

import numpy as np
from PIL import Image
from PIL import ImageFilter


def overlay_mask(grid_map: np.ndarray, image_hw: Sequence[int],
                 patch_size: int) -> np.ndarray:
  """Smooth per-pixel mask from a patch-grid map.

  Args:
    grid_map: (gh, gw) non-negative map, e.g. a rollout map.
    image_hw: (H, W) of the image in pixels.
    patch_size: blur radius in pixels (the patch stride).

  Returns:
    (H, W) float32 in [0, 1]. A map that is constant after blurring keeps
    its level (all-ones shows the image, all-zeros is black) instead of 0/0.
  """
  m = np.asarray(grid_map, np.float64)
  if m.ndim != 2:
    raise ValueError(f'grid_map must be (gh, gw), got {m.shape}.')
  peak = m.max()
  m = m / peak if peak > 0 else np.zeros_like(m)
  h, w = (int(v) for v in image_hw)
  img = Image.fromarray(np.uint8(np.round(m * 255)))
  img = img.resize((w, h), resample=Image.Resampling.LANCZOS)
  img = img.filter(ImageFilter.GaussianBlur(radius=patch_size))
  mask = np.asarray(img, np.float32)
  lo, hi = mask.min(), mask.max()
  if hi > lo:
    return (mask - lo) / (hi - lo)
  return mask / 255.0


def attention_overlay(image: np.ndarray, grid_map: np.ndarray,
                      patch_size: int) -> np.ndarray:
  """Image as seen through the attention mask (alpha over black).

  Args:
    image: (H, W, 3) RGB in [0, 1].
    grid_map: (gh, gw) map.
    patch_size: blur radius in pixels.

  Returns:
    (H, W, 3) float32 in [0, 1]: image * mask.
  """
  image = np.asarray(image, np.float32)
  mask = overlay_mask(grid_map, image.shape[:2], patch_size)
  return image * mask[..., None]
