"""A table of bad inputs: each fails clearly or is handled as documented.

Every row names an input (a pretrained `.npz`, an image folder, a config
value) and the outcome: an error of a given type whose message matches, or
training as usual for inputs the pipeline documents as converted (RGBA,
grayscale, CMYK, palette, 1x1 images; `ConvertedImagesTest`) or skipped
(non-image files). After a failure the workdir must hold nothing: no
checkpoints, no events, no model.npz.

Rows run in-process through `train.train_and_evaluate`; `CommandLineTest`
runs a few through `main.py` to check exit code 1, the message and the
absence of a traceback.
"""

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
from PIL import Image
import pytest

from tests import resume_test
from tests import train_test
from vit_jax import checkpoint
from vit_jax import config_validation
from vit_jax import datasets
from vit_jax import images
from vit_jax import models
from vit_jax import steps
from vit_jax import train

CheckpointError = checkpoint.CheckpointError
ConfigError = config_validation.ConfigError
DatasetError = datasets.DatasetError


def tiny_params(hidden: int = 16):
  """Random float32 parameters of train_test.tiny_config's model."""
  config = train_test.tiny_config('unused')
  config.model.hidden_size = hidden
  abstract = models.abstract_params(steps.create_model(config, 2),
                                    config.pp.crop)
  rng = np.random.RandomState(0)
  return jax.tree.map(
      lambda s: rng.normal(0, 0.02, s.shape).astype(np.float32), abstract)


def flat_params():
  """The official-layout {name: array} of tiny_params()."""
  return checkpoint.to_official_layout(tiny_params())


# Pretrained .npz files: each writer returns the file to pass.


def npz_missing(tmp):
  return os.path.join(tmp, 'nowhere.npz')


def npz_empty_file(tmp):
  open(os.path.join(tmp, 'p.npz'), 'wb').close()
  return os.path.join(tmp, 'p.npz')


def npz_empty_archive(tmp):
  np.savez(os.path.join(tmp, 'p.npz'))
  return os.path.join(tmp, 'p.npz')


def npz_truncated(tmp):
  path = os.path.join(tmp, 'p.npz')
  np.savez(path, **flat_params())
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.truncate(size // 2)
  return path


def npz_not_zip(tmp):
  with open(os.path.join(tmp, 'p.npz'), 'w') as f:
    f.write('<html>403 Forbidden</html>')
  return os.path.join(tmp, 'p.npz')


def npz_single_npy(tmp):
  path = os.path.join(tmp, 'p.npz')
  with open(path, 'wb') as f:
    np.save(f, np.zeros(3, np.float32))
  return path


def npz_pickled(tmp):
  flat = flat_params()
  flat['head/kernel'] = np.array([{'evil': 1}], dtype=object)
  np.savez(os.path.join(tmp, 'p.npz'), **flat)
  return os.path.join(tmp, 'p.npz')


def npz_wrong_model(tmp):
  checkpoint.save(tiny_params(hidden=32), os.path.join(tmp, 'p.npz'))
  return os.path.join(tmp, 'p.npz')


def npz_wrong_dtype(tmp):
  flat = {k: v.astype(np.int32) for k, v in flat_params().items()}
  np.savez(os.path.join(tmp, 'p.npz'), **flat)
  return os.path.join(tmp, 'p.npz')


def npz_nan(tmp):
  flat = flat_params()
  flat['embedding/kernel'][0, 0, 0, 0] = np.nan
  np.savez(os.path.join(tmp, 'p.npz'), **flat)
  return os.path.join(tmp, 'p.npz')


# Image folders: each writer adds one odd file to a small valid folder.


def _image(path, mode, size=(16, 16), fmt=None):
  rng = np.random.RandomState(1)
  rgb = Image.fromarray(rng.randint(0, 255, size + (3,)).astype(np.uint8))
  rgb.convert(mode).save(path, fmt)


def img_corrupt_jpeg(cat):
  path = os.path.join(cat, 'bad.jpg')
  _image(path, 'RGB', (64, 64))
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def img_rgba_png(cat):
  _image(os.path.join(cat, 'rgba.png'), 'RGBA')


def img_grayscale_png(cat):
  _image(os.path.join(cat, 'gray.png'), 'L')


def img_cmyk_jpeg(cat):
  _image(os.path.join(cat, 'cmyk.jpg'), 'CMYK')


def img_palette_png(cat):
  _image(os.path.join(cat, 'palette.png'), 'P')


def img_one_pixel(cat):
  _image(os.path.join(cat, 'dot.png'), 'RGB', (1, 1))


def img_text_file(cat):
  with open(os.path.join(cat, 'notes.txt'), 'w') as f:
    f.write('not an image')


def img_text_named_jpg(cat):
  with open(os.path.join(cat, 'fake.jpg'), 'w') as f:
    f.write('not an image')


def img_gif_named_png(cat):  # Decoded by content, not by name.
  _image(os.path.join(cat, 'anim.png'), 'P', fmt='GIF')


def img_webp(cat):
  _image(os.path.join(cat, 'photo.webp'), 'RGB')


def img_tiff(cat):  # TensorFlow cannot decode TIFF: PIL does, in tf.data.
  _image(os.path.join(cat, 'scan.tif'), 'RGB')


def img_ppm_named_png(cat):
  _image(os.path.join(cat, 'raw.png'), 'RGB', fmt='PPM')


def img_empty_class(cat):
  os.makedirs(os.path.join(os.path.dirname(cat), 'empty'))


# Config values: each returns the overrides of tiny_config.


def _unknown_model(config):
  config.model = type(config.model)()
  config.model_name = 'ViT-Q_99'


_NPZ_CASES = (
    ('npz_missing', npz_missing, CheckpointError, 'does not exist'),
    ('npz_empty_file', npz_empty_file, CheckpointError,
     'not an .npz checkpoint'),
    ('npz_empty_archive', npz_empty_archive, CheckpointError,
     'empty .npz archive'),
    ('npz_truncated', npz_truncated, CheckpointError, 'truncated or corrupt'),
    ('npz_not_zip', npz_not_zip, CheckpointError, 'ZIP signature'),
    ('npz_single_npy', npz_single_npy, CheckpointError, 'single .npy'),
    ('npz_pickled', npz_pickled, CheckpointError, 'pickled'),
    ('npz_wrong_model', npz_wrong_model, CheckpointError,
     r'does not match the model: .*shape mismatches'),
    ('npz_wrong_dtype', npz_wrong_dtype, CheckpointError, 'dtype int32'),
    ('npz_nan_weights', npz_nan, CheckpointError, 'NaN or Inf'),
)
_FOLDER_CASES = (
    ('img_corrupt_jpeg', img_corrupt_jpeg, DatasetError,
     r'(?s)corrupt or unsupported .*bad\.jpg: OSError'),
    ('img_text_named_jpg', img_text_named_jpg, DatasetError,
     r'fake\.jpg: not an image file'),
    ('img_ppm_named_png', img_ppm_named_png, DatasetError,
     'PPM data, expected JPEG, PNG, GIF, BMP, WebP or TIFF'),
    ('img_empty_class', img_empty_class, DatasetError,
     r'train/empty: no images \(\.jpg \.jpeg \.png'),
)
# Documented conversions: (writer, file written, max |pipeline - PIL RGB|).
_CONVERTED_CASES = (
    ('img_rgba_png', img_rgba_png, 'rgba.png', 0),
    ('img_grayscale_png', img_grayscale_png, 'gray.png', 0),
    ('img_cmyk_jpeg', img_cmyk_jpeg, 'cmyk.jpg', 4),  # JPEG decoders differ.
    ('img_palette_png', img_palette_png, 'palette.png', 0),
    ('img_one_pixel', img_one_pixel, 'dot.png', 0),
    ('img_gif_named_png', img_gif_named_png, 'anim.png', 0),
    ('img_webp', img_webp, 'photo.webp', 0),
    ('img_tiff', img_tiff, 'scan.tif', 0),
)
_CONFIG_CASES = (
    ('cfg_unknown_model', _unknown_model, ConfigError,
     'not a registered model'),
    ('cfg_crop_below_patch', dict(pp_crop=4), ConfigError,
     'smaller than the patch stride 8x8'),
    ('cfg_batch_not_divisible', dict(batch=5), ConfigError,
     r'batch=5 must be divisible by accum_steps \(2\)'),
    ('cfg_mesh_mismatch', dict(mesh_data=3), ConfigError,
     'needs 3 devices but 1 are available'),
    ('cfg_unknown_trainer', dict(trainer='tpu'), ConfigError,
     "trainer='tpu'"),
    ('cfg_unknown_optimizer', dict(optimizer='lamb'), ConfigError,
     "optimizer='lamb'"),
    ('cfg_negative_warmup', dict(warmup_steps=-1), ConfigError,
     'warmup_steps=-1 must be >= 0'),
    ('cfg_two_model_names', dict(model_name='ViT-L_16'), ConfigError,
     r"model_name='ViT-L_16' disagrees with config.model \('testing'\)"),
    ('cfg_missing_dataset_folder', dict(dataset='/nonexistent/folder'),
     DatasetError, 'does not exist'),
)


def _apply(config, change) -> None:
  """Applies a row's config change: a function or {'a_b': value}."""
  if callable(change):
    change(config)
    return
  for key, value in change.items():
    node, *rest = key.split('_', 1) if key.startswith(('pp_', 'mesh_')) else (
        key,)
    if rest:
      config[node][rest[0]] = value
    else:
      config[node] = value


class BadInputsTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = train_test.write_image_folder(
        os.path.join(absltest.get_default_test_tmpdir(), 'bad_inputs_ok'),
        train_per_class=2, test_per_class=1)

  def config(self, dataset, **overrides):
    """tiny_config trimmed to two steps: the cheapest full run."""
    return train_test.tiny_config(
        dataset, total_steps=2, warmup_steps=1, checkpoint_every=2,
        eval_every=2, **overrides)

  def run_case(self, config, expected, message):
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(expected, message):
      train.train_and_evaluate(config, workdir)
    self.assertEmpty(os.listdir(workdir))  # Nothing half-written.

  @parameterized.named_parameters(*_NPZ_CASES)
  def test_pretrained(self, write, expected, message):
    path = write(self.create_tempdir().full_path)
    self.run_case(self.config(self.data, pretrained_path=path), expected,
                  message)

  @parameterized.named_parameters(*_FOLDER_CASES)
  def test_image_folder(self, write, expected, message):
    root = train_test.write_image_folder(
        self.create_tempdir().full_path, train_per_class=2, test_per_class=1)
    write(os.path.join(root, 'train', 'cat'))
    self.run_case(self.config(root), expected, message)

  @parameterized.named_parameters(*_CONFIG_CASES)
  def test_config(self, change, expected, message):
    config = self.config(self.data)
    _apply(config, change)
    self.run_case(config, expected, message)


class ConvertedImagesTest(parameterized.TestCase):
  """Odd but valid images are converted to RGB and train, as documented.

  One folder holds every kind (train and test split) plus a non-image
  file; one three-step run (12 examples >= all 9 train images) must pass
  each through the train and eval preprocessing.
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.addClassCleanup(shutil.rmtree, tmp)
    cls.root = train_test.write_image_folder(
        os.path.join(tmp, 'data'), train_per_class=2, test_per_class=1)
    for split in ('train', 'test'):
      for _, write, _, _ in _CONVERTED_CASES:
        write(os.path.join(cls.root, split, 'cat'))
      img_text_file(os.path.join(cls.root, split, 'cat'))
    config = train_test.tiny_config(cls.root, total_steps=3,
                                    warmup_steps=1, eval_every=3)
    cls.workdir = os.path.join(tmp, 'workdir')
    cls.result = train.run(config, cls.workdir)
    cls.info = datasets.dataset_info(config)

  def test_run_finished(self):
    self.assertEqual(self.result.step, 3)
    params = checkpoint.load(os.path.join(self.workdir, 'model.npz'))
    self.assertTrue(all(np.isfinite(x).all()
                        for x in jax.tree.leaves(params)))

  def test_non_image_file_skipped(self):
    self.assertEqual(self.info.num_train_examples,
                     4 + len(_CONVERTED_CASES))
    self.assertEqual(self.info.num_test_examples, 2 + len(_CONVERTED_CASES))

  @parameterized.named_parameters(*_CONVERTED_CASES)
  def test_converted_to_rgb(self, write, name, tolerance):
    del write
    path = os.path.join(self.root, 'train', 'cat', name)
    decoded = images.decode_image(
        open(path, 'rb').read()).numpy()
    with Image.open(path) as image:
      expected = np.asarray(image.convert('RGB'))
    self.assertEqual(decoded.dtype, np.uint8)
    self.assertEqual(decoded.shape, expected.shape)
    self.assertEqual(decoded.shape[-1], 3)
    self.assertLessEqual(
        np.abs(decoded.astype(int) - expected).max(), tolerance)


@pytest.mark.slow  # Five main.py processes: ~25 s on 2 idle cores.
class CommandLineTest(absltest.TestCase):
  """main.py: exit code 1, the message on stderr, no traceback.

  The five runs start together in setUpClass (they mostly wait on imports).
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.addClassCleanup(shutil.rmtree, tmp)
    data = train_test.write_image_folder(os.path.join(tmp, 'data'),
                                         train_per_class=2, test_per_class=1)
    npz = npz_truncated(tmp)
    ok = resume_test.write_config(os.path.join(tmp, 'ok.py'), data)
    # A learning rate that overflows float32: a NaN with no injected code.
    nan = resume_test.write_config(os.path.join(tmp, 'nan.py'), data,
                                   base_lr=1e300)
    runs = {
        'no_workdir': [f'--config={ok}'],
        'no_config_file': ['--config=configs/nonexistent.py',
                           f'--workdir={tmp}/w_cfg'],
        'bad_key': [f'--config={ok}', '--config.bacth=8',
                    f'--workdir={tmp}/w_key'],
        'bad_npz': [f'--config={ok}', f'--config.pretrained_path={npz}',
                    f'--workdir={tmp}/w_npz'],
        'nan': [f'--config={nan}', f'--workdir={tmp}/w_nan'],
    }
    procs = {name: subprocess.Popen(
        [sys.executable, resume_test.MAIN] + args, cwd=resume_test.ROOT,
        env=dict(os.environ, JAX_PLATFORMS='cpu'), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for name, args in runs.items()}
    cls.out = {name: (p.communicate(timeout=resume_test.TIMEOUT), p.returncode)
               for name, p in procs.items()}
    cls.tmp = tmp

  def assert_clean_failure(self, name, message):
    """Status 1 and, as the last line of stderr, `vit_jax.main: ` and a
    message matching `message` (vit_jax/cli.py); no traceback."""
    (_, stderr), code = self.out[name]
    self.assertEqual(code, 1, stderr[-3000:])
    self.assertRegex(stderr.splitlines()[-1], r'^vit_jax\.main: .*' + message)
    self.assertNotIn('Traceback', stderr)

  def test_missing_workdir(self):
    self.assert_clean_failure('no_workdir', r'--workdir')

  def test_unknown_config_file(self):
    self.assert_clean_failure(
        'no_config_file', r"No such file or directory: 'configs/nonexistent")
    self.assertFalse(os.path.exists(os.path.join(self.tmp, 'w_cfg')))

  def test_unknown_config_key(self):
    self.assert_clean_failure('bad_key',
                              'Did you mean "batch" instead of "bacth"')
    self.assertFalse(os.path.exists(os.path.join(self.tmp, 'w_key')))

  def test_corrupt_pretrained_file(self):
    self.assert_clean_failure('bad_npz', r'truncated or corrupt')
    workdir = os.path.join(self.tmp, 'w_npz')
    if os.path.exists(workdir):  # The compilation cache may live there.
      self.assertFalse([d for d in os.listdir(workdir)
                        if d.startswith('checkpoint_')])
      self.assertNotIn('model.npz', os.listdir(workdir))

  def test_nan_loss(self):
    self.assert_clean_failure(
        'nan', r'Non-finite loss at step \d+ .*the last checkpoint is intact')
    self.assertFalse(os.path.exists(os.path.join(self.tmp, 'w_nan',
                                                 'model.npz')))


if __name__ == '__main__':
  absltest.main()
