"""Reading what `inspect` analyses: a checkpoint or workdir, and images.

A checkpoint is an official-layout `.npz` (the model name comes from the
caller) or a training workdir holding `model.npz` and `model.json`; both go
through `export.load_model`, as in `predict`. Images are decoded with PIL,
converted to RGB, resized to a square resolution and mapped to [-1, 1] with
(x - 127.5) / 127.5.
"""

import os
from typing import List, Sequence

import numpy as np
from PIL import Image

from vit_jax import export

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif',
                    '.tiff')


class InspectError(ValueError):
  """A user-facing problem with the inputs (bad file, wrong model, ...)."""


LoadedModel = export.LoadedModel
load_model = export.load_model  # The project's one loader, as in `predict`.


def list_images(spec: str) -> List[str]:
  """Files named in a comma-separated list of files and folders, in order."""
  paths = []
  for item in (s for s in spec.split(',') if s):
    if os.path.isdir(item):
      for root, _, names in sorted(os.walk(item)):
        paths += [os.path.join(root, n) for n in sorted(names)
                  if n.lower().endswith(IMAGE_EXTENSIONS)]
    elif os.path.isfile(item):
      paths.append(item)
    else:
      raise InspectError(f'image path {item} does not exist.')
  if not paths:
    raise InspectError(f'no images found in {spec!r} (extensions: '
                       f'{", ".join(IMAGE_EXTENSIONS)}).')
  return paths


def load_images(paths: Sequence[str], resolution: int) -> np.ndarray:
  """(B, R, R, 3) float32 in [-1, 1]; raises InspectError naming bad files."""
  out = np.empty((len(paths), resolution, resolution, 3), np.float32)
  for i, path in enumerate(paths):
    try:
      with Image.open(path) as img:
        img = img.convert('RGB').resize((resolution, resolution),
                                        Image.Resampling.BILINEAR)
        pixels = np.asarray(img, np.float32)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      raise InspectError(f'cannot decode image {path}: {e}') from e
    # The project's one normalisation (input_pipeline.normalize).
    out[i] = (pixels - 127.5) / 127.5
  return out
