"""Tests for vit_jax.predict on tiny exported and official-layout models."""

import contextlib
import functools
import gc
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import jax
import numpy as np
from PIL import Image

from tests import test_util
from vit_jax import checkpoint
from vit_jax import config_validation
from vit_jax import datasets
from vit_jax import images
from vit_jax import models
from vit_jax import predict
from vit_jax import workdir as workdir_lib
from vit_jax.configs import quickstart

# Unit norm scales and a random head: predictions depend on the image.
random_params = functools.partial(test_util.random_params, scale=0.5,
                                  unit_scales=True)

TINY_VIT = test_util.TINY_VIT
CLASS_NAMES = ['zero', 'one', 'two', 'three']


def export_workdir(root, params, resolution=32):
  """A workdir as `workdir.export_model` writes it."""
  os.makedirs(root)
  checkpoint.save(params, os.path.join(root, 'model.npz'))
  with open(os.path.join(root, 'model.json'), 'w') as f:
    json.dump({'model_name': TINY_VIT['model_name'], 'model': TINY_VIT,
               'num_classes': len(CLASS_NAMES), 'class_names': CLASS_NAMES,
               'resolution': resolution, 'dataset': 'digits'}, f)
  return root


def write_image(path, size, seed):
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,),
                                                np.uint8)
  Image.fromarray(pixels).save(path)
  return path


def run_cli(*args):
  return subprocess.run(
      [sys.executable, '-m', 'vit_jax.predict', *args], capture_output=True,
      text=True, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3'))


class PredictTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.root)
    cls.model = models.build_model(TINY_VIT, num_classes=len(CLASS_NAMES))
    cls.params = random_params(cls.model, 32)
    cls.workdir = export_workdir(os.path.join(cls.root, 'work'), cls.params)
    cls.images = [write_image(os.path.join(cls.root, f'img{i}.png'), size, i)
                  for i, size in enumerate([(40, 30), (32, 32), (64, 50)])]
    cls.bad_image = os.path.join(cls.root, 'broken.png')
    with open(cls.bad_image, 'wb') as f:
      f.write(b'not an image at all')

  def test_load_image_uses_eval_preprocessing(self):
    image = predict.load_image(self.images[0], 32)
    with open(self.images[0], 'rb') as f:
      want = images.preprocess_for_eval(
          images.decode_image(f.read()), 32).numpy()
    np.testing.assert_array_equal(image, want)
    self.assertEqual(image.shape, (32, 32, 3))
    self.assertBetween(image.min(), -1.0, 1.0)
    self.assertBetween(image.max(), -1.0, 1.0)

  def test_predict_matches_softmax_of_logits(self):
    loaded = predict.load_model(self.workdir)
    self.assertEqual((loaded.model_name, loaded.resolution),
                     ('tiny-vit', 32))
    self.assertEqual(loaded.class_names, CLASS_NAMES)
    images = predict.load_images(self.images, loaded.resolution)
    out = predict.predict(loaded.model, loaded.params, images, top_k=3,
                          class_names=loaded.class_names, batch_size=2)
    logits = self.model.apply({'params': self.params}, images, train=False)
    probs = np.asarray(jax.nn.softmax(logits))
    self.assertLen(out, 3)
    for row, p in zip(out, probs):
      order = np.argsort(-p)[:3]
      self.assertEqual([name for name, _ in row],
                       [CLASS_NAMES[c] for c in order])
      np.testing.assert_allclose([q for _, q in row], p[order], rtol=1e-5)
      values = [q for _, q in row]
      self.assertEqual(values, sorted(values, reverse=True))
      self.assertLessEqual(sum(values), 1 + 1e-6)
    # The random model does not give every image the same answer.
    self.assertGreater(len({row[0][0] for row in out}), 1)

  def test_top_k_is_clamped_and_indices_are_default_names(self):
    image = predict.load_image(self.images[1], 32)
    (row,) = predict.predict(self.model, self.params, image, top_k=10)
    self.assertLen(row, 4)
    self.assertCountEqual([name for name, _ in row], ['0', '1', '2', '3'])
    self.assertAlmostEqual(sum(p for _, p in row), 1.0, places=5)

  def test_official_npz_needs_model_and_resizes_posemb(self):
    npz = os.path.join(self.root, 'official.npz')
    testing = models.get_model('testing', num_classes=5)
    params = random_params(testing, 32)
    checkpoint.save(params, npz)
    with self.assertRaisesRegex(workdir_lib.LoadError, 'pass --model'):
      predict.load_model(npz)
    loaded = predict.load_model(npz, 'testing')
    self.assertEqual(loaded.model.num_classes, 5)  # From the head.
    self.assertEqual(loaded.resolution, 32)  # The file's: 2x2 grid, 16 px.
    self.assertIsNone(loaded.class_names)
    loaded = predict.load_model(npz, 'testing', resolution=64)
    pe = loaded.params['Transformer']['posembed_input']['pos_embedding']
    self.assertEqual(pe.shape, (1, 1 + 4 * 4, 10))
    # i21k+i2012 files: a 24x24 grid of 16 px patches -> 384 px.
    posemb = np.zeros((1, 1 + 24 * 24, 2))
    self.assertEqual(workdir_lib.native_resolution(
        models.get_model_config('ViT-B_16'),
        {'Transformer': {'posembed_input': {'pos_embedding': posemb}}}), 384)
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                'does not match the model'):
      predict.load_model(npz, 'ViT-Ti_16')

  def test_posemb_resized_for_another_resolution(self):
    npz = os.path.join(self.root, 'for_resize.npz')
    checkpoint.save(self.params, npz)
    config = dict(TINY_VIT)
    with open(os.path.join(self.root, 'for_resize.json'), 'w') as f:
      json.dump({'model_name': 'tiny-vit', 'model': config,
                 'num_classes': 4, 'class_names': CLASS_NAMES,
                 'resolution': 32}, f)
    loaded = predict.load_model(npz, resolution=48)
    pe = loaded.params['Transformer']['posembed_input']['pos_embedding']
    self.assertEqual(pe.shape, (1, 1 + 6 * 6, 16))
    want = self.params['Transformer']['posembed_input']['pos_embedding']
    np.testing.assert_array_equal(pe[0, :2], want[0, :2])  # Class + corner.
    with self.assertRaisesRegex(workdir_lib.LoadError, 'multiple'):
      predict.load_model(npz, resolution=36)
    with self.assertRaisesRegex(workdir_lib.LoadError, 'disagrees'):
      predict.load_model(npz, 'ViT-B_16')

  def test_headless_file_loads_for_inspect_but_not_predict(self):
    npz = os.path.join(self.root, 'headless.npz')
    params = {k: v for k, v in self.params.items() if k != 'head'}
    checkpoint.save(params, npz)
    with open(os.path.join(self.root, 'headless.json'), 'w') as f:
      json.dump({'model_name': 'tiny-vit', 'model': dict(TINY_VIT),
                 'num_classes': 4, 'resolution': 32}, f)
    loaded = workdir_lib.load_model(npz)  # What `inspect` uses.
    self.assertIsNone(loaded.model.num_classes)
    self.assertNotIn('head', loaded.params)
    with self.assertRaisesRegex(predict.PredictError, 'no classification'):
      predict.load_model(npz)

  def test_unreadable_model_json(self):
    workdir = os.path.join(self.root, 'bad_json')
    os.makedirs(workdir)
    checkpoint.save(self.params, os.path.join(workdir, 'model.npz'))
    for text, problem in [('{"model_name": "tiny-vit"', 'JSONDecodeError'),
                          ('{"model": {}}', 'no model_name, num_classes'),
                          ('[]', 'a JSON list, not an object'),
                          ('{"model_name": "a", "model": 3, "num_classes": 4}',
                           '"model" is not an object')]:
      with open(os.path.join(workdir, 'model.json'), 'w') as f:
        f.write(text)
      with self.assertRaisesRegex(checkpoint.CheckpointError,
                                  f'Cannot read .*model.json .*{problem}'):
        workdir_lib.load_model(workdir)

  def test_class_names(self):
    self.assertEqual(predict.get_class_names(3), ['0', '1', '2'])
    self.assertEqual(predict.get_class_names(2, saved=['a', 'b']),
                     ['a', 'b'])
    ids = predict.get_class_names(1000)
    self.assertEqual((ids[0], len(ids)), ('n01440764', 1000))
    labels = os.path.join(self.root, 'labels.txt')
    with open(labels, 'w') as f:
      f.write('cat\ndog\n\n')
    self.assertEqual(predict.get_class_names(2, labels, ['a', 'b']),
                     ['cat', 'dog'])
    with self.assertRaisesRegex(predict.PredictError, '2 names'):
      predict.get_class_names(3, labels)

  def test_export_untrained_reads_like_a_workdir(self):
    config = quickstart.get_config()
    info = datasets.DatasetInfo(3, ['a', 'b', 'c'], 30, 6)
    workdir = os.path.join(self.root, 'untrained')
    workdir_lib.export_untrained(workdir, config=config, info=info)
    loaded = predict.load_model(workdir)
    self.assertEqual(loaded.model_name,
                     config_validation.model_name(config))
    self.assertEqual(loaded.resolution, config.pp.crop)
    self.assertEqual(loaded.class_names, ['a', 'b', 'c'])
    self.assertEqual(loaded.params['head']['kernel'].shape[-1], 3)

  def test_bad_images(self):
    with self.assertRaisesRegex(images.ImageError, 'does not exist'):
      predict.load_image(os.path.join(self.root, 'nope.png'), 32)
    with self.assertRaisesRegex(images.ImageError, 'Cannot decode'):
      predict.load_image(self.bad_image, 32)

  def test_main_prints_top_k(self):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
      status = predict.main([f'--checkpoint={self.workdir}/model.npz',
                             '--top_k=2', *self.images[:2]])
    self.assertEqual(status, 0)
    # Called as a function, main() leaves the collector alone (only the
    # command line freezes its imports: host.py).
    self.assertEqual(gc.get_freeze_count(), 0)
    lines = stdout.getvalue().strip().splitlines()
    self.assertEqual(lines[0], 'tiny-vit at 32 px, 4 classes:')
    self.assertEqual(lines[1], f'{self.images[0]}:')
    self.assertEqual(lines[4], f'{self.images[1]}:')
    self.assertLen(lines, 1 + 2 * 3)
    for line in lines[2:4] + lines[5:7]:
      prob, name = line.split()
      self.assertIn(name, CLASS_NAMES)
      self.assertBetween(float(prob), 0.0, 1.0)

  def test_main_errors_exit_1(self):
    for args, message in (
        ([f'--checkpoint={self.workdir}', self.bad_image], 'Cannot decode'),
        ([f'--checkpoint={self.workdir}', '--labels=/nonexistent',
          self.images[0]], 'Cannot read labels'),
        ([f'--checkpoint={self.root}/missing.npz', '--model=ViT-B_16',
          self.images[0]], 'does not exist'),
        ([f'--checkpoint={self.root}/missing.npz', '--model=ViT-X',
          self.images[0]], 'Unknown model name'),
    ):
      with self.subTest(message):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
          status = predict.main(args)
        self.assertEqual(status, 1)
        self.assertIn(message, stderr.getvalue())

  def test_cli_error_has_no_traceback(self):
    result = run_cli(f'--checkpoint={self.workdir}', self.bad_image)
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn(f'Cannot decode image {self.bad_image}: not an image file. '
                  'Pass a JPEG, PNG', result.stderr)
    self.assertNotIn('Traceback', result.stderr)
    self.assertNotIn('function_node', result.stderr)  # TF op text.


if __name__ == '__main__':
  absltest.main()
