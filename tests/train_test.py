"""End-to-end tests of train_and_evaluate on a tiny generated image folder."""

import json
import os
from unittest import mock

from absl.testing import absltest
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from vit_jax import checkpoint
from vit_jax import config_validation
from vit_jax import input_pipeline
from vit_jax import train
from vit_jax import workdir as workdir_lib
from vit_jax.configs import common
from vit_jax.configs import models


def write_image_folder(root, *, classes=('cat', 'dog'), train_per_class=8,
                       test_per_class=3, size=16, seed=0):
  """Class-coloured noise images: learnable, tiny and deterministic."""
  rng = np.random.RandomState(seed)
  for split, n in (('train', train_per_class), ('test', test_per_class)):
    for c, name in enumerate(classes):
      os.makedirs(os.path.join(root, split, name), exist_ok=True)
      for i in range(n):
        base = np.array([200, 40, 40]) if c == 0 else np.array([40, 40, 200])
        img = np.clip(base + rng.randint(-40, 40, (size, size, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(
            os.path.join(root, split, name, f'{i}.png'))
  return root


def tiny_config(dataset, **overrides):
  """A 2-layer width-16 ViT on 16 px images; a few seconds per run."""
  config = common.with_dataset(common.get_config(), dataset)
  config.model = models.MODEL_CONFIGS['testing'].copy_and_resolve_references()
  config.model.hidden_size = 16
  config.model.patches.size = (8, 8)
  config.model.transformer.num_heads = 2
  config.model.transformer.mlp_dim = 16
  config.model.transformer.num_layers = 2
  config.pretrained_dir = ''
  config.pp.crop = 16
  config.batch = 4
  config.batch_eval = 4
  config.accum_steps = 2
  config.shuffle_buffer = 16
  config.total_steps = 6
  config.warmup_steps = 2
  config.base_lr = 0.1
  config.eval_every = 3
  config.progress_every = 2
  config.checkpoint_every = 2
  config.compilation_cache = ''
  for key, value in overrides.items():
    config[key] = value
  return config


class TrainTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = write_image_folder(
        os.path.join(absltest.get_default_test_tmpdir(), 'folder'))

  def workdir(self):
    return self.create_tempdir().full_path

  @pytest.mark.slow
  def test_end_to_end_artifacts(self):
    workdir = self.workdir()
    result = train.run(tiny_config(self.data), workdir)
    self.assertEqual(result.step, 6)
    # The colours separate the classes: correct training gets all 6 test
    # images right (measured 1.0; chance is 0.5). Measured with planted
    # bugs: loss sign flipped 0.0, folder labels not permuted with their
    # paths 0.83 (5 of 6).
    self.assertGreaterEqual(result.accuracy, 0.9)
    self.assertEqual(sorted(d for d in os.listdir(workdir)
                            if d.startswith('checkpoint_')),
                     ['checkpoint_2', 'checkpoint_4', 'checkpoint_6'])
    self.assertTrue(any(f.startswith('events.out.tfevents')
                        for f in os.listdir(workdir)))
    meta = json.load(open(os.path.join(workdir, 'model.json')))
    self.assertEqual(meta['class_names'], ['cat', 'dog'])
    self.assertEqual(meta['num_classes'], 2)
    params = checkpoint.load(os.path.join(workdir, 'model.npz'))
    self.assertEqual(params['head']['kernel'].shape, (16, 2))
    # Fine-tuning moved the zero-initialised head.
    self.assertGreater(np.abs(params['head']['kernel']).max(), 0)

  @pytest.mark.slow
  def test_resume_is_exact(self):
    """Stopped after the step-4 checkpoint and restarted == uninterrupted."""
    config = tiny_config(self.data, total_steps=8, checkpoint_every=4)
    straight = self.workdir()
    train.train_and_evaluate(config, straight)

    resumed = self.workdir()
    real_save = ocp.CheckpointManager.save

    def save_then_die(manager, step, *a, **kw):
      out = real_save(manager, step, *a, **kw)
      if step == 4:
        manager.wait_until_finished()
        raise KeyboardInterrupt('simulated preemption')
      return out

    with mock.patch.object(ocp.CheckpointManager, 'save', save_then_die):
      with self.assertRaises(KeyboardInterrupt):
        train.train_and_evaluate(config, resumed)
    self.assertFalse(os.path.exists(os.path.join(resumed, 'model.npz')))
    self.assertEqual(workdir_lib.latest_checkpoint_step(resumed), 4)
    train.train_and_evaluate(config, resumed)
    with open(os.path.join(straight, 'model.npz'), 'rb') as a, open(
        os.path.join(resumed, 'model.npz'), 'rb') as b:
      self.assertEqual(a.read(), b.read())

  def _nan_at_step(self, step):
    """get_datasets whose train batch number `step` (1-based) is NaN."""
    real = input_pipeline.get_datasets

    def fake(config, **kw):
      datasets = real(config, **kw)
      (train_ds, test_ds), info = datasets, datasets.info
      first = kw.get('start_step', 0) + 1

      def poison(i, batch):
        bad = tf_where(i + first == step, batch['image'])
        return dict(batch, image=bad)

      return input_pipeline.Datasets(train_ds.enumerate().map(poison),
                                     test_ds, info)

    return mock.patch.object(input_pipeline, 'get_datasets', fake)

  @pytest.mark.slow
  def test_nan_loss_stops_with_step_and_keeps_checkpoint(self):
    workdir = self.workdir()
    with self._nan_at_step(5):
      with self.assertRaisesRegex(train.NonFiniteLossError, 'step 5'):
        train.train_and_evaluate(tiny_config(self.data), workdir)
    self.assertEqual(workdir_lib.latest_checkpoint_step(workdir), 4)
    self.assertFalse(os.path.exists(os.path.join(workdir, 'model.npz')))

  @pytest.mark.slow
  def test_nan_loss_at_a_checkpoint_step_is_not_saved(self):
    # Step 4 is due for a checkpoint: the step is checked before saving, so
    # the newest checkpoint is step 2, never one past the bad batch.
    workdir = self.workdir()
    with self._nan_at_step(4):
      with self.assertRaisesRegex(train.NonFiniteLossError, 'step 4'):
        train.train_and_evaluate(tiny_config(self.data), workdir)
    self.assertEqual(workdir_lib.latest_checkpoint_step(workdir), 2)

  @pytest.mark.slow
  def test_nan_loss_skip_policy_continues(self):
    # At a checkpoint step (4); between checkpoints it is the same code path
    # (train_math_test checks a skipped update leaves the state untouched).
    workdir = self.workdir()
    with self._nan_at_step(4):
      result = train.run(
          tiny_config(self.data, nonfinite_loss='skip'), workdir)
    self.assertEqual(result.step, 6)
    self.assertEqual(sorted(d for d in os.listdir(workdir)
                            if d.startswith('checkpoint_')),
                     ['checkpoint_2', 'checkpoint_4', 'checkpoint_6'])
    params = checkpoint.load(os.path.join(workdir, 'model.npz'))
    self.assertTrue(all(np.isfinite(v).all() for v in _leaves(params)))

  def test_bad_configs_fail_before_compiling(self):
    cases = {
        'pp.crop': (2, 'smaller than the patch stride'),
        'batch': (5, 'must be divisible by accum_steps'),
        'model_name': ('ViT-X', 'not a registered model'),
        'decay_type': ('exp', 'cosine'),
    }
    for field, (value, message) in cases.items():
      config = tiny_config(self.data)
      if field == 'model_name':
        config.model = config.model.__class__()
      if field == 'pp.crop':
        config.pp.crop = value
      else:
        config[field] = value
      with self.assertRaisesRegex(config_validation.ConfigError, message,
                                  msg=field):
        train.train_and_evaluate(config, self.workdir())

  def test_mesh_mismatch(self):
    config = tiny_config(self.data)
    config.mesh.data = 3
    workdir = self.workdir()
    with self.assertRaisesRegex(config_validation.ConfigError, 'needs 3'):
      train.train_and_evaluate(config, workdir)
    self.assertEmpty(os.listdir(workdir))


def tf_where(condition, images):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.where(condition, tf.fill(tf.shape(images), np.nan), images)


def _leaves(tree):
  for value in tree.values():
    if isinstance(value, dict):
      yield from _leaves(value)
    else:
      yield value


if __name__ == '__main__':
  absltest.main()
