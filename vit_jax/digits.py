"""The offline `digits` dataset: sklearn's handwritten digits as a folder.

sklearn ships 1,797 grayscale 8x8 digits (values 0..16, 10 classes) inside
the package, so nothing is downloaded. `ensure_digits()` writes them once as
an image folder that the input pipeline reads like any other folder:

  <root>/train/<digit>/<index>.png   1,438 images (80%, stratified)
  <root>/test/<digit>/<index>.png      359 images (20% of each class)

Images are 32x32 grayscale PNGs: each pixel is repeated 4x4 (nearest
neighbour) and 0..16 is mapped to 0..255. The split is fixed (seed 0), so
results are comparable between machines.
"""

import os
import shutil
import tempfile

from absl import logging
import numpy as np
from PIL import Image

SIZE = 32  # Side of the written images (pixels).
TEST_FRACTION = 0.2  # Per class, so the split is stratified.
_SPLIT_SEED = 0  # Fixed: the split is part of the dataset, not of a run.


def default_dir() -> str:
  """`$VIT_JAX_DATA_DIR/digits`, else `~/.cache/vit_jax/digits`."""
  root = os.environ.get('VIT_JAX_DATA_DIR')
  if root:
    return os.path.join(os.path.expanduser(root), 'digits')
  return os.path.join(os.path.expanduser('~'), '.cache', 'vit_jax', 'digits')


def split_indices(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic stratified split of example indices into (train, test).

  Args:
    labels: int (n,) class of every example.

  Returns:
    Sorted int arrays of train and test indices; per class,
    round(TEST_FRACTION * count) examples go to test.
  """
  rng = np.random.RandomState(_SPLIT_SEED)
  test = []
  for label in np.unique(labels):
    members = np.flatnonzero(labels == label)
    count = int(round(TEST_FRACTION * len(members)))
    test.extend(rng.permutation(members)[:count])
  test = np.sort(np.asarray(test, np.int64))
  train = np.setdiff1d(np.arange(len(labels)), test)
  return train, test


def to_uint8(image: np.ndarray) -> np.ndarray:
  """Maps one sklearn digit (8, 8) in 0..16 to uint8 (SIZE, SIZE) in 0..255."""
  pixels = np.round(np.asarray(image, np.float64) * 255.0 / 16.0)
  pixels = pixels.astype(np.uint8)
  scale = SIZE // pixels.shape[0]
  return np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)


def _write(root: str) -> None:
  """Writes the folder layout described in the module docstring to root."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top

  digits = datasets.load_digits()  # Bundled with sklearn: no network.
  train, test = split_indices(digits.target)
  for split, indices in (('train', train), ('test', test)):
    for index in indices:
      folder = os.path.join(root, split, str(digits.target[index]))
      os.makedirs(folder, exist_ok=True)
      image = Image.fromarray(to_uint8(digits.images[index]), 'L')
      image.save(os.path.join(folder, f'{index:04d}.png'))


def ensure_digits(root: str | None = None) -> str:
  """Returns the digits folder, writing it first if it does not exist.

  The folder is written into a temporary sibling and renamed into place, so
  a killed run never leaves half a dataset and concurrent writers are safe
  (the first rename wins, the others discard their copy).

  Args:
    root: where the folder goes; None means `default_dir()`.

  Returns:
    The path of the folder (with train/ and test/ inside).
  """
  root = os.path.abspath(root or default_dir())
  if os.path.isdir(root):
    logging.info('digits: using the image folder cached in %s', root)
    return root
  logging.info('digits: writing sklearn\'s digits as an image folder to %s '
               '(once; $VIT_JAX_DATA_DIR moves it)', root)
  parent = os.path.dirname(root)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.digits-partial-', dir=parent)
  try:
    _write(tmp)
    os.rename(tmp, root)
  except OSError:
    if not os.path.isdir(root):  # Not a lost race: a real failure.
      raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return root
