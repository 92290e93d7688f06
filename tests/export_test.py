"""Tests for vit_jax.export: parity of each format, run in a fresh process.

Tiny ViT, hybrid (ResNet root + one stage) and Mixer workdirs at 32 px are
exported; tools/serve_exported.py then runs each artifact in a subprocess
where vit_jax (and, for savedmodel and onnx, JAX) cannot be imported, and
its logits must be within 1e-5 of `model.apply` on the same images, for
batches of 1 and 7, with the same top-1. With --preprocess the reference is
the TF eval pipeline (`images.preprocess_for_eval`) followed by apply.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import ml_collections
import numpy as np
import pytest

from tests import test_util
from vit_jax import checkpoint
from vit_jax import export
from vit_jax import images
from vit_jax import models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVE = os.path.join(ROOT, 'tools', 'serve_exported.py')
LOGIT_TOL = 1e-5  # float32, the bound.
CLASS_NAMES = ['zero', 'one', 'two', 'three']
MODELS = {
    'vit': test_util.TINY_VIT,
    'hybrid': dict(test_util.TINY_VIT, model_name='tiny-hybrid',
                   patches={'size': [2, 2]},
                   resnet={'num_layers': [1], 'width_factor': 1}),
    'mixer': {'model_name': 'tiny-mixer', 'patches': {'size': [8, 8]},
              'hidden_dim': 16, 'num_blocks': 2, 'tokens_mlp_dim': 8,
              'channels_mlp_dim': 16},
}


def write_workdir(root, model_config):
  """A workdir as training exports it: model.npz + model.json (32 px)."""
  model = models.build_model(ml_collections.ConfigDict(model_config),
                             num_classes=len(CLASS_NAMES))
  # Unit norm scales and a random head: logits of order 1 that depend on
  # the image.
  params = test_util.random_params(model, 32, scale=0.5, unit_scales=True)
  os.makedirs(root)
  checkpoint.save(params, os.path.join(root, 'model.npz'))
  with open(os.path.join(root, 'model.json'), 'w') as f:
    json.dump({'model_name': model_config['model_name'],
               'model': model_config, 'num_classes': len(CLASS_NAMES),
               'class_names': CLASS_NAMES, 'resolution': 32,
               'dataset': 'digits'}, f)
  return model, params


def batches(preprocess):
  """Batches of 1 and 7: float [-1, 1] at 32 px, or uint8 of other sizes
  (one larger, one smaller than 32 px: down- and upsampling)."""
  rng = np.random.default_rng(0)
  if preprocess:
    return {'b1': rng.integers(0, 256, (1, 20, 64, 3), np.uint8),
            'b7': rng.integers(0, 256, (7, 45, 29, 3), np.uint8)}
  return {f'b{n}': rng.uniform(-1, 1, (n, 32, 32, 3)).astype(np.float32)
          for n in (1, 7)}


def serve(artifact, inputs):
  """Runs tools/serve_exported.py in a fresh process: outputs, modules."""
  with tempfile.TemporaryDirectory() as tmp:
    np.savez(os.path.join(tmp, 'in.npz'), **inputs)
    out = os.path.join(tmp, 'out.npz')
    proc = subprocess.run(
        [sys.executable, SERVE, f'--artifact={artifact}',
         f'--inputs={os.path.join(tmp, "in.npz")}', f'--out={out}'],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
                 PYTHONPATH=''))  # The runtime only, not this checkout.
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out) as f:
      outputs = {k: f[k] for k in f.files}
  return outputs, set(outputs.pop('modules'))


class ExportParityTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.models = {name: write_workdir(os.path.join(cls.tmp, name), config)
                  for name, config in MODELS.items()}
    cls.references = {}

  def reference(self, name, preprocess, key, x):
    """model.apply's logits (jitted, as predict runs it), once per input."""
    if (name, preprocess, key) not in self.references:
      model, params = self.models[name]
      if preprocess:
        x = np.asarray(images.preprocess_for_eval(x, 32))
      apply = jax.jit(lambda x: model.apply({'params': params}, x,
                                            train=False))
      self.references[name, preprocess, key] = np.asarray(apply(x))
    return self.references[name, preprocess, key]

  def check(self, name, fmt, *, preprocess=False):
    """Exports `name`, serves it in a subprocess, compares with apply."""
    out = os.path.join(self.tmp, f'{name}-{fmt}-{preprocess}')
    result = export.export(checkpoint_path=os.path.join(self.tmp, name),
                           format=fmt, out=out, preprocess=preprocess)
    self.assertEqual((result.path, result.resolution), (out, 32))
    inputs = batches(preprocess)
    outputs, modules = serve(out, inputs)
    self.assertNotIn('vit_jax', modules)
    if fmt != 'stablehlo':
      self.assertNotIn('jax', modules)
    for key, x in inputs.items():
      want = self.reference(name, preprocess, key, x)
      got = outputs[f'{key}/logits']
      self.assertEqual(got.shape, want.shape)
      np.testing.assert_allclose(got, want, rtol=0, atol=LOGIT_TOL)
      np.testing.assert_array_equal(got.argmax(-1), want.argmax(-1))
      probs = np.exp(want - want.max(-1, keepdims=True))
      np.testing.assert_allclose(outputs[f'{key}/probabilities'],
                                 probs / probs.sum(-1, keepdims=True),
                                 atol=LOGIT_TOL)
    return out

  @parameterized.parameters('vit', 'hybrid', 'mixer')
  def test_stablehlo(self, name):
    self.check(name, 'stablehlo')

  @parameterized.parameters('vit', 'hybrid', 'mixer')
  def test_onnx(self, name):
    out = self.check(name, 'onnx')
    import onnx  # pylint: disable=g-import-not-at-top
    props = {p.key: p.value for p in onnx.load(
        os.path.join(out, 'model.onnx')).metadata_props}
    self.assertEqual(props['class_names'].split('\n'), CLASS_NAMES)
    self.assertEqual(json.loads(props['vit_jax'])['model_name'],
                     MODELS[name]['model_name'])

  @pytest.mark.slow  # TensorFlow's eval resize in this process.
  @parameterized.parameters('stablehlo', 'onnx')
  def test_preprocess(self, fmt):
    out = self.check('vit', fmt, preprocess=True)
    with open(os.path.join(out, 'export.json')) as f:
      meta = json.load(f)
    self.assertEqual(meta['input'], {'shape': [None, None, None, 3],
                                     'dtype': 'uint8', 'range': [0, 255]})
    self.assertEqual(meta['outputs'], ['logits', 'probabilities'])
    with open(os.path.join(out, 'class_names.txt')) as f:
      self.assertEqual(f.read().splitlines(), CLASS_NAMES)

  @pytest.mark.slow
  def test_savedmodel(self):
    out = self.check('vit', 'savedmodel')
    with open(os.path.join(out, 'assets', 'class_names.txt')) as f:
      self.assertEqual(f.read().splitlines(), CLASS_NAMES)

  @pytest.mark.slow
  def test_savedmodel_preprocess(self):
    self.check('vit', 'savedmodel', preprocess=True)

  @pytest.mark.slow
  def test_savedmodel_hybrid_and_mixer(self):
    self.check('hybrid', 'savedmodel')
    self.check('mixer', 'savedmodel')


class ExportFeaturesTest(absltest.TestCase):

  def test_headless_official_npz_exports_features(self):
    """An official file without a head, named by --model: 'features'."""
    import onnxruntime  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    model = models.build_model(models.get_model_config('testing'),
                               num_classes=None)
    params = test_util.random_params(model, 32, unit_scales=True)
    checkpoint.save(params, os.path.join(tmp, 'testing.npz'))
    out = os.path.join(tmp, 'onnx')
    result = export.export(checkpoint_path=os.path.join(tmp, 'testing.npz'),
                           model_name='testing', format='onnx', out=out)
    self.assertEqual(result.metadata['outputs'], ['features'])
    session = onnxruntime.InferenceSession(
        os.path.join(out, 'model.onnx'), providers=['CPUExecutionProvider'])
    x = batches(False)['b7']
    got, = session.run(['features'], {'images': x})
    want = model.apply({'params': params}, x, train=False)
    self.assertEqual(got.shape, (7, 10))
    np.testing.assert_allclose(got, want, rtol=0, atol=LOGIT_TOL)


class ExportBadInputTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path
    write_workdir(os.path.join(self.tmp, 'vit'), test_util.TINY_VIT)

  def run_main(self, *args):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
      status = export.main(list(args))
    return status, stderr.getvalue()

  def assert_refused(self, out, *args, says):
    before = sorted(os.listdir(self.tmp))
    status, stderr = self.run_main(*args, f'--out={out}')
    self.assertEqual(status, 1)
    self.assertEqual(len(stderr.strip().splitlines()), 1, stderr)
    self.assertIn(says, stderr)
    self.assertEqual(sorted(os.listdir(self.tmp)), before)  # No temp left.

  def test_unknown_format(self):
    out = os.path.join(self.tmp, 'out')
    self.assert_refused(out, f'--checkpoint={self.tmp}/vit', '--format=tflite',
                        says='--format=tflite is not one of stablehlo')
    self.assertFalse(os.path.exists(out))

  def test_non_empty_out(self):
    out = os.path.join(self.tmp, 'vit')  # Holds model.npz: never touched.
    self.assert_refused(out, f'--checkpoint={self.tmp}/vit',
                        '--format=stablehlo', says='is not an empty folder')
    self.assertEqual(sorted(os.listdir(out)), ['model.json', 'model.npz'])

  def test_missing_checkpoint(self):
    out = os.path.join(self.tmp, 'out')
    self.assert_refused(out, f'--checkpoint={self.tmp}/nothing',
                        '--format=onnx', says='nothing')
    self.assertFalse(os.path.exists(out))

  def test_official_npz_needs_a_model_name(self):
    npz = os.path.join(self.tmp, 'vit', 'model.npz')
    os.rename(npz, os.path.join(self.tmp, 'ViT.npz'))
    self.assert_refused(os.path.join(self.tmp, 'out'),
                        f'--checkpoint={self.tmp}/ViT.npz',
                        '--format=stablehlo', says='pass --model')

  def test_command_line(self):
    """The real command: exit 1, one line on stderr, nothing written."""
    out = os.path.join(self.tmp, 'out')
    proc = subprocess.run(
        [sys.executable, '-m', 'vit_jax.export',
         f'--checkpoint={self.tmp}/missing', '--format=stablehlo',
         f'--out={out}'], capture_output=True, text=True, timeout=300,
        check=False, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    self.assertEqual(proc.returncode, 1, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    self.assertEqual(len(lines), 1, proc.stderr)
    self.assertTrue(lines[0].startswith('vit_jax.export: '), lines[0])
    self.assertFalse(os.path.exists(out))


if __name__ == '__main__':
  absltest.main()
