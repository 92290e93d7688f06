"""Reading what `inspect` analyses: a checkpoint or workdir, and images.

A checkpoint is an official-layout `.npz` (the model name comes from the
caller) or a training workdir holding `model.npz` and `model.json`; both go
through `workdir.load_model`, as in `predict`. Images go through the
project's one image loader, `images.load_images`: the eval pipeline's
decode, bilinear resize and [-1, 1] normalisation, as in `predict`.
"""

import os
from typing import List

from vit_jax import errors
from vit_jax import images
from vit_jax import workdir as workdir_lib


class InspectError(errors.UserError):
  """A user-facing problem with the inputs (bad file, wrong model, ...)."""


LoadedModel = workdir_lib.LoadedModel
load_model = workdir_lib.load_model  # The project's one loader.
load_images = images.load_images  # Raises images.ImageError on bad files.


def list_images(spec: str) -> List[str]:
  """Files named in a comma-separated list of files and folders, in order."""
  paths = []
  for item in (s for s in spec.split(',') if s):
    if os.path.isdir(item):
      for root, _, names in sorted(os.walk(item)):
        paths += [os.path.join(root, n) for n in sorted(names)
                  if images.is_image_name(n)]
    elif os.path.isfile(item):
      paths.append(item)
    else:
      raise InspectError(f'image path {item} does not exist.')
  if not paths:
    raise InspectError(f'no images found in {spec!r} (extensions: '
                       f'{", ".join(images.EXTENSIONS)}).')
  return paths
