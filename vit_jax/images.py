"""Image files -> model inputs: the project's one decoder and eval resize.

The input pipeline (image folders, tfds bytes), `predict`, `inspect` and the
notebooks all decode, resize and normalise here, so a file gives the same
float32 pixels wherever it is read.

- Formats (`FORMATS`): JPEG (also the MPO variant that cameras write), PNG,
  GIF (first frame), BMP and WebP are decoded by `tf.io.decode_image`; TIFF,
  which TensorFlow cannot decode, by PIL on the host (inside tf.data as a
  `tf.numpy_function`). The format is read from the bytes, not the name.
  Grey, palette, alpha and CMYK images become RGB.
- Train preprocessing (the original's, `preprocess_for_train`): Inception
  crop, resize, random flip, with stateless seeds.
- Eval preprocessing (the original's): bilinear resize of the whole image to
  crop x crop (aspect ratio not kept), then [0, 255] -> [-1, 1] with
  `normalize`. `preprocess_for_eval` runs it in TensorFlow (the input
  pipeline), `eval_preprocess_jax` in jax.numpy with the same arithmetic
  (TF-free predict, serving exports with the preprocessing built in).
- `EXTENSIONS` decides which files of a folder are images (image-folder
  datasets, `inspect --images=FOLDER`).
TensorFlow is imported by the functions that use it, not by this module.
"""

import io
import os
import sys
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from vit_jax import errors

# PIL format name -> file extensions (compared lower-cased).
FORMATS = {
    'JPEG': ('.jpg', '.jpeg'),
    'MPO': (),  # Multi-picture JPEG from cameras, named .jpg.
    'PNG': ('.png',),
    'GIF': ('.gif',),
    'BMP': ('.bmp',),
    'WEBP': ('.webp',),
    'TIFF': ('.tif', '.tiff'),
}
EXTENSIONS = tuple(e for names in FORMATS.values() for e in names)
FORMAT_NAMES = 'JPEG, PNG, GIF, BMP, WebP or TIFF'  # For messages.
# Inception crop settings of the original (TF defaults, spelled out).
_ASPECT_RATIO_RANGE = (0.75, 1.33)
_MAX_ATTEMPTS = 100
_WHOLE_IMAGE = ((((0.0, 0.0, 1.0, 1.0),),))  # (1, 1, 4) ymin, xmin, ...
# TIFF (little/big endian, classic/BigTIFF): the one format TF cannot decode.
_TIFF_MAGIC = (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+')


class ImageError(errors.UserError):
  """An image file is missing or cannot be decoded; says what to do."""


def is_image_name(path: str) -> bool:
  """True if the file name has one of `EXTENSIONS` (any case)."""
  return path.lower().endswith(EXTENSIONS)


def normalize(image):
  """Maps pixel values [0, 255] to [-1, 1]: (x - 127.5) / 127.5, float32.

  Works on tf tensors, numpy and jax arrays of any shape.
  """
  # A tf tensor exists only once TensorFlow was imported: never import it.
  tf = sys.modules.get('tensorflow')
  if tf is not None and tf.is_tensor(image):
    image = tf.cast(image, tf.float32)
  elif hasattr(image, 'astype'):
    image = image.astype(np.float32)
  else:
    image = np.asarray(image, np.float32)
  return (image - 127.5) / 127.5


def preprocess_for_eval(image_uint8, crop: int):
  """Eval preprocessing: bilinear resize to crop x crop, then `normalize`.

  Args:
    image_uint8: uint8 (h, w, 3) or (batch, h, w, 3), values 0..255.
    crop: output side (pixels). The aspect ratio is not kept (original).

  Returns:
    float32 tf.Tensor (crop, crop, 3) (or batched) in [-1, 1].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return normalize(tf.image.resize(image_uint8, [crop, crop]))


def _bilinear_taps(in_size, out_size: int):
  """TF's half-pixel bilinear taps along one axis: (lower, upper, lerp).

  Output pixel i samples source coordinate (i + 0.5) * in/out - 0.5, read
  between rows floor and ceil (clamped to the image) with weight lerp =
  coordinate - floor, all in float32 as TensorFlow's ResizeBilinear kernel
  computes them. `in_size` may be a symbolic dimension (jax.export).
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  scale = jnp.asarray(in_size, jnp.float32) / jnp.float32(out_size)
  t = (jnp.arange(out_size, dtype=jnp.float32) + 0.5) * scale
  # The maximum (a no-op: t > 0) keeps XLA:CPU from contracting the multiply
  # and the subtraction into one fused multiply-add, whose single rounding
  # TensorFlow's kernel does not have: one ulp of the coordinate moved
  # pixels by up to 4e-3 levels (300 -> 224 rows).
  src = jnp.maximum(t, 0.0) - 0.5
  floor = jnp.floor(src)
  lower = jnp.maximum(floor, 0).astype(jnp.int32)
  upper = jnp.minimum(jnp.ceil(src).astype(jnp.int32),
                      jnp.asarray(in_size, jnp.int32) - 1)
  return lower, upper, src - floor


def eval_preprocess_jax(images_uint8, crop: int):
  """`preprocess_for_eval` in jax.numpy: the same pixels without TensorFlow.

  Bilinear resize with half-pixel centres and no antialiasing (what
  `tf.image.resize` does), evaluated in TensorFlow's order (left/right,
  then top/bottom), then `normalize`. Jittable; the height and width may be
  symbolic dimensions of `jax.export` (one artifact for any image size).

  Args:
    images_uint8: uint8 (batch, h, w, 3) or (h, w, 3), values 0..255.
    crop: output side (pixels).

  Returns:
    float32 (batch, crop, crop, 3) (or unbatched) in [-1, 1].
  """
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(images_uint8).astype(jnp.float32)
  h_axis = x.ndim - 3
  ly, uy, wy = _bilinear_taps(x.shape[h_axis], crop)
  lx, ux, wx = _bilinear_taps(x.shape[h_axis + 1], crop)
  rows = lambda i: jnp.take(x, i, axis=h_axis, mode='clip')  # pylint: disable=g-long-lambda
  cols = lambda r, i: jnp.take(r, i, axis=h_axis + 1, mode='clip')  # pylint: disable=g-long-lambda
  wx = wx[:, None]  # Broadcast over channels.
  wy = wy[:, None, None]

  def lerp_x(r):
    left = cols(r, lx)
    return left + (cols(r, ux) - left) * wx

  top, bottom = lerp_x(rows(ly)), lerp_x(rows(uy))
  return normalize(top + (bottom - top) * wy)


def decode_with_pil(data) -> np.ndarray:
  """Encoded bytes -> uint8 (h, w, 3) RGB by PIL, without TensorFlow (the
  TIFF decoder; JPEG may differ from `decode_image` by a few levels)."""
  if isinstance(data, np.ndarray):  # 0-d object array (eager mode).
    data = data.item()  # Not np.asarray: 'S' arrays drop trailing NULs.
  with Image.open(io.BytesIO(data)) as image:
    if image.mode.startswith('I;16'):  # 16-bit grey (scans, microscopy).
      # The top 8 bits, as tf.io.decode_image does for 16-bit PNGs.
      grey = (np.asarray(image).astype(np.uint16) >> 8).astype(np.uint8)
      return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(image.convert('RGB'), np.uint8)


def decode_image(data):
  """Encoded image bytes (any of `FORMATS`) -> uint8 (h, w, 3) tf.Tensor.

  Works eagerly and inside tf.data; TIFF goes through PIL (see the module
  docstring), everything else through `tf.io.decode_image`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = tf.convert_to_tensor(data, tf.string)
  head = tf.strings.substr(data, 0, 4)
  is_tiff = tf.reduce_any(tf.equal(head, _TIFF_MAGIC))

  def with_pil():
    image = tf.numpy_function(decode_with_pil, [data], tf.uint8,
                              stateful=False)
    return tf.ensure_shape(image, [None, None, 3])

  def with_tf():
    return tf.io.decode_image(data, channels=3, expand_animations=False)

  return tf.cond(is_tiff, with_pil, with_tf)


def image_problem(path: str) -> Optional[str]:
  """Why `path` is not a decodable image of `FORMATS`, or None if it is.

  Decodes the whole file with PIL (JPEG at 1/8 scale, which still reads all
  of its data), so truncated files are caught too.
  """
  try:
    with Image.open(path) as image:
      if image.format not in FORMATS:
        return f'{image.format} data, expected {FORMAT_NAMES}'
      image.draft('RGB', (1, 1))
      image.load()
  except Image.UnidentifiedImageError:
    return 'not an image file'
  except Exception as e:  # pylint: disable=broad-except
    return f'{type(e).__name__}: {e}'
  return None


def check_image(path: str) -> None:
  """Raises ImageError (what and what to do) unless `path` is an image."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ImageError(f'Image {path} does not exist.')
  problem = image_problem(path)  # Before TF, whose errors are op dumps.
  if problem:
    raise ImageError(f'Cannot decode image {path}: {problem}. Pass a '
                     f'{FORMAT_NAMES} image instead.')


def load_image(path: str, resolution: int) -> np.ndarray:
  """One image file -> float32 (resolution, resolution, 3) in [-1, 1].

  Exactly the eval pipeline's pixels: `decode_image`, then
  `preprocess_for_eval`.

  Raises:
    ImageError: the file is missing or not a decodable image.
  """
  check_image(path)
  with open(path, 'rb') as f:
    image = decode_image(f.read())
  return preprocess_for_eval(image, resolution).numpy()


def load_images(paths: Sequence[str], resolution: int) -> np.ndarray:
  """Image files -> float32 (len(paths), resolution, resolution, 3)."""
  out = np.empty((len(paths), resolution, resolution, 3), np.float32)
  for i, path in enumerate(paths):
    out[i] = load_image(path, resolution)
  return out


def preprocess_for_train(
    image_uint8, crop: int, seed, *, crop_area_min: float = 0.05,
    flip: bool = True):
  """Inception crop, bilinear resize to crop x crop, flip, `normalize`.

  Args:
    image_uint8: uint8 (h, w, 3).
    crop: output side (pixels).
    seed: int (2,) stateless seed; same seed, same augmentation.
    crop_area_min: smallest crop area as a fraction of the image.
    flip: random horizontal flip with probability 0.5.

  Returns:
    float32 tf.Tensor (crop, crop, 3) in [-1, 1].
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image_uint8), bounding_boxes=tf.constant(_WHOLE_IMAGE),
      seed=crop_seed, min_object_covered=0.0,
      aspect_ratio_range=_ASPECT_RATIO_RANGE,
      area_range=(crop_area_min, 1.0), max_attempts=_MAX_ATTEMPTS)
  image = tf.image.resize(tf.slice(image_uint8, begin, size), [crop, crop])
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalize(image)
