"""Tests for vit_jax.images: formats, the one loader, the folder summary."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image
import tensorflow as tf

from vit_jax import images
from vit_jax import input_pipeline
from vit_jax.configs import common

CROP = 8
# (PIL format, file name, save options, max |decoded - PIL RGB|).
_FORMATS = (
    ('PNG', 'a.png', {}, 0),
    # TF's and PIL's JPEG decoders upsample chroma differently on noise.
    ('JPEG', 'a.jpg', {'quality': 95}, 8),
    ('GIF', 'a.gif', {}, 0),
    ('BMP', 'a.bmp', {}, 0),
    ('WEBP', 'a.webp', {'lossless': True}, 0),
    ('TIFF', 'a.tif', {}, 0),
    ('TIFF', 'a.tiff', {'compression': 'tiff_lzw'}, 0),
)


def _pixels(seed, height=12, width=20):
  rng = np.random.RandomState(seed)
  return rng.randint(0, 256, (height, width, 3)).astype(np.uint8)


def _write(path, fmt='PNG', seed=0, **options):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  image = Image.fromarray(_pixels(seed))
  (image.convert('P') if fmt == 'GIF' else image).save(path, fmt, **options)
  return path


class ImagesTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path

  @parameterized.parameters(*_FORMATS)
  def test_every_format_decodes_like_pil(self, fmt, name, options, tol):
    path = _write(os.path.join(self.dir, name), fmt, **options)
    self.assertTrue(images.is_image_name(path.upper()))
    self.assertIsNone(images.image_problem(path))
    with Image.open(path) as image:
      want = np.asarray(image.convert('RGB')).astype(int)
    with open(path, 'rb') as f:
      eager = images.decode_image(f.read()).numpy()
    self.assertEqual(eager.dtype, np.uint8)
    self.assertEqual(eager.shape, (12, 20, 3))
    self.assertLessEqual(np.abs(eager - want).max(), tol)
    # Inside tf.data (graph mode) too, where TIFF goes through PIL.
    ds = tf.data.Dataset.from_tensor_slices([path]).map(
        lambda p: images.decode_image(tf.io.read_file(p)))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), eager)

  def test_16_bit_tiff_decodes_like_16_bit_png(self):
    grey = np.random.RandomState(0).randint(0, 65536, (6, 7)).astype(
        np.uint16)
    decoded = []
    for fmt, name in (('TIFF', 'deep.tif'), ('PNG', 'deep.png')):
      path = os.path.join(self.dir, name)
      Image.fromarray(grey).save(path, fmt)  # Mode I;16.
      with open(path, 'rb') as f:
        decoded.append(images.decode_image(f.read()).numpy())
    np.testing.assert_array_equal(decoded[0], decoded[1])  # PIL vs TF.
    np.testing.assert_array_equal(decoded[0][..., 1], grey >> 8)

  def test_load_image_is_the_eval_pipeline(self):
    """A TIFF and a PNG through load_image and through get_datasets' test
    split give the same float32 pixels (decode, bilinear resize, [-1, 1])."""
    root = os.path.join(self.dir, 'data')
    files = [_write(f'{root}/test/a/0.tif', 'TIFF', seed=1),
             _write(f'{root}/test/b/1.png', 'PNG', seed=2)]
    _write(f'{root}/train/a/0.png', seed=3)
    _write(f'{root}/train/b/0.png', seed=4)
    config = common.with_dataset(common.get_config(), root)
    config.batch = config.batch_eval = 2
    config.pp.crop = CROP
    _, test = input_pipeline.get_datasets(config, process_index=0,
                                         process_count=1)
    batch = next(iter(test.as_numpy_iterator()))
    loaded = images.load_images(files, CROP)
    self.assertEqual(loaded.shape, (2, CROP, CROP, 3))
    np.testing.assert_array_equal(loaded, batch['image'])
    self.assertBetween(loaded.min(), -1.0, 1.0)
    self.assertBetween(loaded.max(), -1.0, 1.0)

  def test_bad_files_give_one_line(self):
    text = os.path.join(self.dir, 'notes.txt')
    with open(text, 'w') as f:
      f.write('not an image')
    with self.assertRaises(images.ImageError) as cm:
      images.load_image(text, CROP)
    self.assertEqual(
        str(cm.exception),
        f'Cannot decode image {text}: not an image file. Pass a JPEG, PNG, '
        'GIF, BMP, WebP or TIFF image instead.')
    with self.assertRaisesRegex(images.ImageError, r'nope\.png does not'):
      images.load_image(os.path.join(self.dir, 'nope.png'), CROP)
    ppm = _write(os.path.join(self.dir, 'x.png'), 'PPM')
    self.assertEqual(images.image_problem(ppm),
                     'PPM data, expected JPEG, PNG, GIF, BMP, WebP or TIFF')

  def test_folder_summary_counts_per_split_and_class(self):
    root = os.path.join(self.dir, 'folder')
    for split, counts in (('train', (3, 1)), ('test', (2, 0))):
      for name, n in zip(('cats', 'dogs'), counts):
        for i in range(n):
          _write(f'{root}/{split}/{name}/{i}.webp', 'WEBP', lossless=True)
    _write(f'{root}/test/dogs/skip.tif', 'TIFF')  # Counted: TIFF is valid.
    config = common.with_dataset(common.get_config(), root)
    config.batch = config.batch_eval = 2
    config.pp.crop = CROP
    with self.assertLogs('absl', 'INFO') as logs:
      input_pipeline.get_datasets(config, process_index=0, process_count=1)
    summary = next(line for line in logs.output if 'Image folder' in line)
    self.assertIn(f'Image folder {root}: 2 classes, 4 train and 3 test '
                  'images', summary)
    rows = [line.split() for line in summary.splitlines()[1:]]
    self.assertEqual(rows, [['class', 'train', 'test'], ['cats', '3', '2'],
                            ['dogs', '1', '1']])



class EvalPreprocessJaxTest(parameterized.TestCase):
  """`eval_preprocess_jax` gives `preprocess_for_eval`'s pixels."""

  @parameterized.parameters(
      (32, 32, 32),  # Same size: the identity, then normalize.
      (17, 45, 32),  # Up in height, down in width.
      (300, 200, 224),  # A coordinate crossing 256 (where FMA rounded off).
      (5, 7, 24), (1, 1, 8), (64, 48, 7))
  def test_equals_tensorflow(self, height, width, crop):
    import jax  # pylint: disable=g-import-not-at-top
    x = np.random.default_rng(height).integers(
        0, 256, (2, height, width, 3), dtype=np.uint8)
    want = images.preprocess_for_eval(x, crop).numpy()
    jitted = jax.jit(images.eval_preprocess_jax, static_argnums=1)
    # About one float32 ulp of the result (2e-7 at 255 levels, normalised).
    np.testing.assert_allclose(np.asarray(jitted(x, crop)), want, atol=3e-7,
                               rtol=0)
    np.testing.assert_allclose(
        np.asarray(images.eval_preprocess_jax(x[1], crop)), want[1],
        atol=3e-7, rtol=0)

  def test_one_export_for_every_size(self):
    import jax  # pylint: disable=g-import-not-at-top
    from jax import export  # pylint: disable=g-import-not-at-top
    b, h, w = export.symbolic_shape('b, h, w')
    exported = export.export(jax.jit(
        lambda x: images.eval_preprocess_jax(x, 16)))(
            jax.ShapeDtypeStruct((b, h, w, 3), np.uint8))
    rng = np.random.default_rng(0)
    for shape in ((1, 16, 16, 3), (3, 40, 25, 3)):
      x = rng.integers(0, 256, shape, dtype=np.uint8)
      np.testing.assert_allclose(
          np.asarray(exported.call(x)),
          images.preprocess_for_eval(x, 16).numpy(), atol=3e-7, rtol=0)


if __name__ == '__main__':
  absltest.main()
