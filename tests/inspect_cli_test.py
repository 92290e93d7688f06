"""Tests for attention capture, the fused analysis and the inspect CLI on
tiny synthetic checkpoints (no network, a few seconds)."""

import contextlib
import functools
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image

from tests import test_util
from vit_jax import checkpoint
from vit_jax import models
from vit_jax import inspect as vi
from vit_jax import workdir as workdir_lib
from vit_jax.inspect import benchmark
from vit_jax.inspect import capture
from vit_jax.inspect import cli

# Unit norm scales and a random head: predictions depend on the image.
random_params = functools.partial(test_util.random_params, scale=0.3,
                                  unit_scales=True)

TINY_VIT = test_util.TINY_VIT
TINY_HYBRID = dict(TINY_VIT, model_name='tiny-hybrid',
                   patches={'size': [4, 4]},
                   resnet={'num_layers': [1], 'width_factor': 0.5})
TINY_MIXER = {'model_name': 'tiny-mixer', 'patches': {'size': [8, 8]},
              'hidden_dim': 8, 'num_blocks': 1, 'tokens_mlp_dim': 8,
              'channels_mlp_dim': 8}


def save_npz(path, params):
  checkpoint.save(params, path)  # The official layout (pre-Linen names).


def make_workdir(root, config, num_classes=3, resolution=32):
  os.makedirs(root)
  model = models.build_model(config, num_classes=num_classes)
  save_npz(os.path.join(root, 'model.npz'), random_params(model, resolution))
  with open(os.path.join(root, 'model.json'), 'w') as f:
    json.dump({'model_name': config['model_name'], 'model': config,
               'num_classes': num_classes, 'resolution': resolution,
               'class_names': ['a', 'b', 'c'][:num_classes]}, f)
  return root


class CaptureTest(absltest.TestCase):

  def test_attention_shapes_and_fused_analysis_agree(self):
    model = models.build_model(TINY_VIT, num_classes=3)
    params = random_params(model, 32)
    images = np.random.default_rng(0).uniform(
        -1, 1, (3, 32, 32, 3)).astype(np.float32)
    att = np.asarray(vi.attention_weights(model, params, images))
    self.assertEqual(att.shape, (2, 3, 2, 17, 17))
    np.testing.assert_allclose(att.sum(-1), 1, atol=1e-5)
    self.assertGreater(np.ptp(att), 1e-3)
    out = vi.make_analysis_fn(model, (32, 32))(params, images)
    np.testing.assert_allclose(
        out.distance.mean(0), vi.mean_attention_distance(att, (4, 4), 8),
        rtol=1e-5)
    np.testing.assert_allclose(out.rollout_maps,
                               vi.rollout_map(att, (4, 4)), rtol=1e-5)
    np.testing.assert_allclose(
        out.logits, vi.make_forward_fn(model)(params, images), rtol=1e-5,
        atol=1e-6)

  def test_hybrid(self):
    model = models.build_model(TINY_HYBRID, num_classes=2)
    params = random_params(model, 32)
    geo = vi.geometry(model, (32, 32))
    self.assertEqual(geo, vi.Geometry((2, 2), (16, 16), 1))
    att = vi.attention_weights(model, params, np.zeros((2, 32, 32, 3)))
    self.assertEqual(att.shape, (2, 2, 2, 5, 5))

  def test_mixer_has_no_attention(self):
    model = models.build_model(TINY_MIXER, num_classes=2)
    with self.assertRaisesRegex(ValueError, 'MLP-Mixer'):
      vi.attention_weights(model, {}, np.zeros((1, 32, 32, 3)))

  def test_no_captured_weights(self):
    with self.assertRaisesRegex(ValueError, 'did not sow any attention'):
      capture.layer_weights({'Transformer': {'encoder_norm': {}}})

  def test_benchmark_smoke(self):
    # Not a timing test: the benchmark runs and reports consistent numbers.
    out = benchmark.time_inspection('testing', batch=2, res=32, repeats=1)
    self.assertAlmostEqual(out['ratio'], out['inspect_s'] / out['forward_s'])
    self.assertEqual((out['model'], out['batch'], out['res']),
                     ('testing', 2, 32))
    self.assertGreater(out['forward_s'], 0)


class CliTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.root)
    cls.images = os.path.join(cls.root, 'images')
    os.makedirs(cls.images)
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 30), (32, 32), (50, 64)]):
      Image.fromarray(rng.integers(0, 255, size + (3,), np.uint8)).save(
          os.path.join(cls.images, f'img{i}.png'))
    cls.npz = os.path.join(cls.root, 'testing.npz')
    save_npz(cls.npz, random_params(models.get_model('testing', num_classes=3),
                                  32))
    cls.workdir = make_workdir(os.path.join(cls.root, 'work'), TINY_VIT)

  def out_dir(self):
    return tempfile.mkdtemp(dir=self.root)

  def test_npz_end_to_end(self):
    out = self.out_dir()
    cli.write_report(cli.Options(checkpoint=self.npz, model='testing', out=out,
                        images=self.images, resolution=32))
    files = sorted(os.listdir(out))
    self.assertEqual(files, ['distance.png', 'filters.png', 'inspect.json',
                             'position.png', 'rollout.png'])
    with open(os.path.join(out, 'inspect.json')) as f:
      summary = json.load(f)
    self.assertEqual(summary['grid'], [2, 2])
    self.assertEqual(summary['distance']['shape'], [1, 2])
    self.assertEqual(np.shape(summary['distance']['mean_distance']), (1, 2))
    self.assertEqual(summary['rollout']['shape'], [3, 2, 2])
    self.assertEqual(summary['position']['shape'], [4, 4])
    # D = 10 filters limit the number of components.
    self.assertLen(summary['filters']['explained_variance_ratio'], 10)
    self.assertLen(summary['top1'], 3)
    for name in ('filters', 'position', 'distance', 'rollout'):
      with Image.open(os.path.join(out, f'{name}.png')) as img:
        self.assertGreater(img.size[0], 100)

  def test_without_images_writes_what_needs_none(self):
    out = self.out_dir()
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
      status = cli.command(cli.Options(checkpoint=self.workdir, out=out))
    self.assertEqual(status, 0)
    self.assertEqual(sorted(os.listdir(out)),
                     ['filters.png', 'inspect.json', 'position.png'])
    with open(os.path.join(out, 'inspect.json')) as f:
      self.assertEqual(json.load(f)['figures'], ['filters', 'position'])
    self.assertIn('distance and rollout need images: pass --images',
                  stdout.getvalue())
    # Asked for explicitly, an attention figure without images is an error.
    self.assert_fails_cleanly('distance need images', checkpoint=self.workdir,
                              figures=('distance',))

  def test_workdir_and_posemb_resize(self):
    out = self.out_dir()
    summary = cli.write_report(cli.Options(
        checkpoint=self.workdir, out=out, images=self.images,
        figures=('position', 'distance'), resolution=64, batch_size=2))
    self.assertEqual(summary['model_name'], 'tiny-vit')
    self.assertEqual(summary['grid'], [8, 8])
    self.assertEqual(summary['position']['shape'], [64, 64])
    self.assertEqual(summary['distance']['shape'], [2, 2])
    self.assertLen(summary['top1_names'], 3)
    self.assertEqual(sorted(os.listdir(out)),
                     ['distance.png', 'inspect.json', 'position.png'])

  def test_workdir_model_disagrees(self):
    with self.assertRaisesRegex(workdir_lib.LoadError, 'disagrees'):
      cli.write_report(cli.Options(checkpoint=self.workdir, model='ViT-B_16',
                          out=self.out_dir(), figures=('filters',)))

  def assert_fails_cleanly(self, pattern, **kw):
    out = self.out_dir()
    with self.assertRaisesRegex(ValueError, pattern):
      cli.write_report(cli.Options(out=out, **kw))
    self.assertEqual(os.listdir(out), [])

  def test_bad_image(self):
    folder = os.path.join(self.root, 'bad')
    os.makedirs(folder, exist_ok=True)
    bad = os.path.join(folder, 'broken.png')
    with open(bad, 'wb') as f:
      f.write(b'not a png')
    self.assert_fails_cleanly('Cannot decode image .*broken.png',
                              checkpoint=self.npz, model='testing',
                              images=f'{self.images},{folder}',
                              resolution=32)

  def test_mixer(self):
    workdir = make_workdir(os.path.join(self.root, 'mixer'), TINY_MIXER)
    self.assert_fails_cleanly('MLP-Mixer', checkpoint=workdir,
                              images=self.images)
    out = self.out_dir()
    summary = cli.write_report(cli.Options(checkpoint=workdir, out=out,
                                  figures=('filters',)))
    self.assertEqual(summary['filters']['num_components'], 8)

  def test_grid_and_shape_mismatch(self):
    self.assert_fails_cleanly('resolution=40 must be a positive multiple of '
                              'the patch stride 16x16',
                              checkpoint=self.npz, model='testing',
                              images=self.images, resolution=40)
    self.assert_fails_cleanly('ViT-Ti_16 at 32 px.* does not match the model',
                              checkpoint=self.npz, model='ViT-Ti_16',
                              figures=('filters',), resolution=32)

  def test_command_line_error_is_one_line(self):
    out = os.path.join(self.root, 'cmd')
    proc = subprocess.run(
        [sys.executable, '-m', 'vit_jax.inspect', '--model=testing',
         f'--checkpoint={self.npz}', f'--out={out}',
         f'--images={os.path.join(self.root, "missing.png")}'],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, JAX_PLATFORMS='cpu'))
    self.assertEqual(proc.returncode, 1)
    self.assertRegex(proc.stderr,
                     r'\Avit_jax\.inspect: .*missing\.png does not exist.*\n\Z')
    self.assertFalse(os.path.exists(out))


if __name__ == '__main__':
  absltest.main()
