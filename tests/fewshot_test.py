"""Tests for vit_jax.fewshot: solver, sampling, features, command, training."""

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
from absl.testing import parameterized
import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from tests import test_util
from tests import train_test
from vit_jax import checkpoint
from vit_jax import fewshot
from vit_jax import fewshot_solver as solver
from vit_jax import input_pipeline
from vit_jax import models
from vit_jax import train


def clusters(rng, *, num_classes, per_class, dim, spread):
  """Gaussian blobs around random centres: (features, labels)."""
  centres = 5.0 * rng.standard_normal((num_classes, dim))
  labels = np.repeat(np.arange(num_classes), per_class)
  x = centres[labels] + spread * rng.standard_normal((len(labels), dim))
  return x.astype(np.float32), labels


def closed_form(x, labels, num_classes, l2):
  """float64 ridge weights (d + 1, K) on standardised x plus the bias."""
  x = np.asarray(x, np.float64)
  mean, std = x.mean(0), x.std(0) + solver.STD_EPS
  x = np.concatenate([(x - mean) / std,
                      np.full((len(x), 1), solver.BIAS_FEATURE)], 1)
  y = 2.0 * np.eye(num_classes)[labels] - 1.0
  return np.linalg.solve(x.T @ x + l2 * np.eye(x.shape[1]), x.T @ y)


class SolverTest(parameterized.TestCase):

  def test_separable_toy_problem_is_solved(self):
    rng = np.random.default_rng(0)
    x, y = clusters(rng, num_classes=5, per_class=40, dim=16, spread=0.3)
    result = solver.fewshot_accuracy(
        train_features=x[::2], train_labels=y[::2], test_features=x[1::2],
        test_labels=y[1::2], shots=(1, 5), seeds=(0, 1))
    self.assertEqual(result.accuracy.shape, (2, 2, 1))
    np.testing.assert_array_equal(result.accuracy, 1.0)
    # Control: the same features with permuted test labels are near chance.
    shuffled = rng.permutation(y[1::2])
    control = solver.fewshot_accuracy(
        train_features=x[::2], train_labels=y[::2], test_features=x[1::2],
        test_labels=shuffled, shots=(5,), seeds=(0,))
    self.assertLess(control.mean[0, 0], 0.6)

  @parameterized.named_parameters(('more_examples', 60, 7),
                                  ('more_features', 12, 40))
  def test_both_branches_match_float64_closed_form(self, n, d):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, d)).astype(np.float32) * 3 + 1
    labels = np.arange(n) % 4
    weights = {}
    for gram in ('features', 'examples'):
      cache = solver.fit_ridge(x, labels, num_classes=4, gram=gram)
      self.assertEqual(cache.eigvals.shape,
                       (d + 1,) if gram == 'features' else (n,))
      weights[gram] = np.asarray(solver.ridge_weights(cache, (2.0**10, 0.5)))
    want = closed_form(x, labels, 4, 2.0**10)
    for gram, w in weights.items():
      np.testing.assert_allclose(w[0], want, atol=1e-3 * np.abs(want).max(),
                                 err_msg=gram)
    # The automatic choice is the smaller Gram matrix. Only it is checked at
    # a small lambda: the larger one is rank-deficient, and its float32
    # round-off eigenvalues (~1e-7 of the largest, which the 100.0 bias
    # column makes ~1e4 n) are no longer negligible next to lambda = 0.5.
    auto = solver.fit_ridge(x, labels, num_classes=4)
    self.assertEqual(auto.eigvals.shape, (min(n, d + 1),))
    want = closed_form(x, labels, 4, 0.5)
    w = weights['features' if d + 1 <= n else 'examples'][1]
    np.testing.assert_allclose(w, want, atol=3e-3 * np.abs(want).max())

  def test_accuracy_is_argmax_of_the_closed_form(self):
    rng = np.random.default_rng(3)
    x, y = clusters(rng, num_classes=3, per_class=10, dim=5, spread=4.0)
    test, test_y = clusters(rng, num_classes=3, per_class=50, dim=5,
                            spread=4.0)
    cache = solver.fit_ridge(x, y, num_classes=3)
    got = solver.ridge_accuracy(cache, test, test_y, [1.0, 100.0])
    for l2, acc in zip([1.0, 100.0], got):
      w = closed_form(x, y, 3, l2)
      mean, std = x.mean(0), x.std(0) + solver.STD_EPS
      t = np.concatenate([(test - mean) / std, np.full((150, 1), 100.0)], 1)
      self.assertAlmostEqual(acc, np.mean((t @ w).argmax(1) == test_y))
    self.assertBetween(got[0], 0.4, 0.99)  # Not trivially 0 or 1.


class SamplingTest(absltest.TestCase):

  labels = np.array([0] * 7 + [1] * 5 + [2] * 9)[
      np.random.default_rng(0).permutation(21)]

  def test_draws_are_balanced_nested_and_reproducible(self):
    draw = lambda k, s: solver.sample_fewshot(  # pylint: disable=g-long-lambda
        self.labels, shots=k, seed=s, num_classes=3)
    five = draw(5, 1)
    np.testing.assert_array_equal(self.labels[five], np.repeat([0, 1, 2], 5))
    self.assertLen(set(five), 15)
    np.testing.assert_array_equal(five, draw(5, 1))
    self.assertTrue(set(draw(2, 1)) <= set(five))  # Nested per seed.
    self.assertFalse(np.array_equal(five, draw(5, 2)))
    rows = solver.needed_indices(self.labels, shots=(2, 5), seeds=(1, 2),
                                 num_classes=3)
    self.assertEqual(set(rows), set(five) | set(draw(5, 2)))

  def test_accuracy_reproducible_per_seed(self):
    rng = np.random.default_rng(1)
    x, y = clusters(rng, num_classes=4, per_class=30, dim=6, spread=5.0)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    kw = dict(train_features=x[:80], train_labels=y[:80],
              test_features=x[80:], test_labels=y[80:], shots=(1, 3),
              seeds=(0, 1, 2), l2_regs=(1.0, 1024.0))
    a, b = solver.fewshot_accuracy(**kw), solver.fewshot_accuracy(**kw)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    self.assertEqual(a.accuracy.shape, (2, 3, 2))
    np.testing.assert_allclose(a.mean, a.accuracy.mean(1))
    self.assertGreater(len(np.unique(a.accuracy[0, :, 0])), 1)  # Seeds differ.
    # Features of only the drawn rows give the same numbers.
    rows = solver.needed_indices(y[:80], shots=(1, 3), seeds=(0, 1, 2),
                                 num_classes=4)
    c = solver.fewshot_accuracy(**dict(kw, train_features=x[rows],
                                        train_rows=rows))
    np.testing.assert_array_equal(a.accuracy, c.accuracy)
    with self.assertRaisesRegex(solver.FewshotError, 'needed_indices'):
      solver.fewshot_accuracy(**dict(kw, train_features=x[rows[1:]],
                                      train_rows=rows[1:]))

  def test_too_many_shots_is_a_clear_error(self):
    with self.assertRaisesRegex(
        solver.FewshotError,
        r"6 shots need 6 images .* fewer in 1 of 3 classes: '1' \(5\)\. "
        'Use at most 5 shots'):
      solver.sample_fewshot(self.labels, shots=6, seed=0, num_classes=3)
    with self.assertRaisesRegex(solver.FewshotError, 'counts >= 1'):
      solver.check_shots(self.labels, [0, 1], num_classes=3)
    with self.assertRaisesRegex(solver.FewshotError,
                                "'3' \\(0\\)\\. Every class needs"):
      solver.check_shots(self.labels, [1], num_classes=4)


def tiny_mixer():
  return ml_collections.ConfigDict(dict(
      model_name='tiny-mixer', patches={'size': (8, 8)}, num_blocks=2,
      hidden_dim=16, tokens_mlp_dim=8, channels_mlp_dim=16))


def tiny_vit(**fields):
  config = ml_collections.ConfigDict(test_util.TINY_VIT)
  config.patches.size = (8, 8)
  config.update(fields)
  return config


class FeaturesTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('token', tiny_vit(), 16),
      ('gap', tiny_vit(classifier='gap'), 16),
      ('representation', tiny_vit(representation_size=12), 12),
      ('hybrid', tiny_vit(patches={'size': (1, 1)}, resnet={
          'num_layers': (1,), 'width_factor': 0.5}), 16),
      ('mixer', tiny_mixer(), 16))
  def test_features_are_the_head_input(self, config, width):
    model = models.build_model(config, num_classes=3)
    params = test_util.random_params(model, 16, scale=0.5, unit_scales=True)
    images = np.random.default_rng(0).uniform(-1, 1, (5, 16, 16, 3))
    feats = fewshot.make_features_fn(model)(params, images)
    self.assertEqual(feats.shape, (5, width))
    logits, state = jax.jit(functools.partial(
        model.apply, train=False, capture_intermediates=True))(
            {'params': params}, images)
    head = params['head']
    np.testing.assert_allclose(feats @ head['kernel'] + head['bias'], logits,
                               rtol=1e-4, atol=1e-4)
    if 'pre_logits' in state['intermediates']:  # ViT: its named layer,
      captured = state['intermediates']['pre_logits']['__call__'][0]
      if config.get('representation_size'):  # followed by a tanh.
        captured = np.tanh(captured)
      np.testing.assert_allclose(feats, captured, rtol=1e-5, atol=1e-5)
    self.assertGreater(float(np.std(feats, axis=0).mean()), 1e-3)

  def test_unpooled_models_are_refused(self):
    model = models.get_model('testing-unpooled', num_classes=3)
    with self.assertRaisesRegex(solver.FewshotError, 'one vector per token'):
      fewshot.make_features_fn(model)

  def test_compute_features_pads_the_last_batch(self):
    model = models.build_model(tiny_vit(), num_classes=None)
    params = test_util.random_params(model, 16, unit_scales=True)
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (7, 16, 16, 3)).astype(np.float32)
    batches = [{'image': images[i:i + 3], 'label': np.arange(7)[i:i + 3]}
               for i in range(0, 7, 3)]  # 3, 3 and 1 images.
    seen = []
    feats, labels = fewshot.compute_features(
        fewshot.make_features_fn(model), params, batches, batch_size=3,
        progress=seen.append)
    self.assertEqual(seen, [3, 3, 1])
    np.testing.assert_array_equal(labels, np.arange(7))
    want = jax.jit(functools.partial(model.apply, train=False))(
        {'params': params}, images)
    np.testing.assert_allclose(feats, want, rtol=1e-5, atol=1e-5)


class CommandTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.root)
    cls.data = train_test.write_image_folder(
        os.path.join(cls.root, 'colours'), classes=('red', 'blue', 'green'),
        train_per_class=6, test_per_class=4)
    cls.model = models.build_model(tiny_vit(), num_classes=3)
    cls.params = test_util.random_params(cls.model, 16, scale=0.5,
                                         unit_scales=True)
    cls.workdir = os.path.join(cls.root, 'work')
    os.makedirs(cls.workdir)
    checkpoint.save(cls.params, os.path.join(cls.workdir, 'model.npz'))
    with open(os.path.join(cls.workdir, 'model.json'), 'w') as f:
      json.dump({'model_name': 'tiny-vit', 'model': tiny_vit().to_dict(),
                 'num_classes': 3, 'resolution': 16}, f)

  def run_main(self, *args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      status = fewshot.main([f'--checkpoint={self.workdir}', *args])
    return status, out.getvalue(), err.getvalue()

  def test_prints_table_and_json_that_match_the_library(self):
    status, out, err = self.run_main(f'--dataset={self.data}',
                                     '--shots=1,3', '--seeds=2',
                                     '--l2_regs=1024,1', '--batch_size=4')
    self.assertEqual(status, 0, err)
    self.assertIn('features: 100%', err)  # The progress bar.
    lines = out.strip().splitlines()
    self.assertLen(lines, 1 + 3 + 1)  # Title, header + 2 rows, JSON.
    self.assertEqual(lines[1].split(), ['shots', 'l2=1024', 'l2=1'])
    record = json.loads(lines[-1])
    self.assertEqual((record['model'], record['num_classes']),
                     ('tiny-vit', 3))
    got = {(r['shots'], r['l2_reg']): r['per_seed']
           for r in record['results']}
    # The same numbers from every train image, computed another way.
    train, test, info = input_pipeline.get_labeled_splits(
        fewshot.data_config(self.data, crop=16))

    apply = jax.jit(functools.partial(self.model.clone(num_classes=None).apply,
                                      train=False))

    def features(split):
      batch = next(input_pipeline.eval_examples(split, crop=16).batch(
          100).as_numpy_iterator())
      return apply({'params': self.params}, batch['image']), batch['label']

    (x, y), (tx, ty) = features(train), features(test)
    np.testing.assert_array_equal(y, train.labels)
    want = solver.fewshot_accuracy(
        train_features=np.asarray(x), train_labels=y,
        test_features=np.asarray(tx), test_labels=ty, shots=(1, 3),
        seeds=(0, 1), l2_regs=(1024.0, 1.0), num_classes=info.num_classes)
    for i, k in enumerate((1, 3)):
      for j, l2 in enumerate((1024.0, 1.0)):
        np.testing.assert_allclose(got[k, l2], want.accuracy[i, :, j])
    self.assertIn(f'{100 * want.mean[1, 0]:5.1f}%', lines[3])

  def test_bad_input_exits_1_with_a_message(self):
    for args, message in (
        ([f'--dataset={self.data}', '--shots=1,7'],
         "fewer in 3 of 3 classes: 'blue' (6), 'green' (6), 'red' (6)"),
        ([f'--dataset={self.root}/nope'], 'does not exist'),
        (['--dataset=digits', '--shots=0'], 'counts >= 1'),
    ):
      with self.subTest(message):
        status, out, err = self.run_main(*args)
        self.assertEqual(status, 1)
        self.assertIn(message, err)
        self.assertEqual(out, '')

  def test_cli_missing_checkpoint_has_no_traceback(self):
    result = subprocess.run(
        [sys.executable, '-m', 'vit_jax.fewshot', '--model=ViT-B_16',
         f'--checkpoint={self.root}/missing.npz', f'--dataset={self.data}'],
        capture_output=True, text=True, timeout=300, check=False,
        env=dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3'))
    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn('missing.npz does not exist', result.stderr)
    self.assertNotIn('Traceback', result.stderr)


@pytest.mark.slow  # Whole training runs with few-shot evaluation.
class TrainingHookTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.data = train_test.write_image_folder(
        os.path.join(self.create_tempdir().full_path, 'pets'))

  def config(self, **fewshot_fields):
    config = train_test.tiny_config(self.data, export=False,
                                   checkpoint_every=0)
    config.fewshot.datasets = (self.data,)
    config.fewshot.update(fewshot_fields)
    return config

  def test_logs_fewshot_scalars_at_eval_time(self):
    workdir = self.create_tempdir().full_path
    config = self.config(shots=(1, 4), seeds=2, l2_regs=(1024.0, 1.0))
    with self.assertLogs('absl', 'INFO') as logs:
      train.train_and_evaluate(config, workdir)
    scalars = {}
    for name in os.listdir(workdir):
      if name.startswith('events.out'):
        for event in tf.compat.v1.train.summary_iterator(
            os.path.join(workdir, name)):
          for value in event.summary.value:
            if value.tag.startswith('fewshot/'):
              scalars[value.tag, event.step] = float(
                  tf.make_ndarray(value.tensor))
    tags = ['fewshot/pets_1shot', 'fewshot/pets_4shot',
            'fewshot/pets_1shot_l2_1', 'fewshot/pets_4shot_l2_1']
    self.assertEqual(set(scalars), {(t, s) for t in tags for s in (3, 6)})
    for value in scalars.values():
      self.assertBetween(value, 0.0, 1.0)
    console = '\n'.join(logs.output)
    self.assertIn('[6] fewshot/pets_1shot=', console)

  def test_bad_fewshot_configs_fail_before_training(self):
    workdir = self.create_tempdir().full_path
    for fields, message in (
        (dict(shots=(9,)), "fewer in 2 of 2 classes: 'cat' \\(8\\), "
         "'dog' \\(8\\). Use at most 8 shots"),
        (dict(shots=(0, 1), seeds=0),
         r'shots=\(0, 1\) must be counts >= 1; .*seeds=0 must be >= 1'),
    ):
      with self.assertRaisesRegex(solver.FewshotError, message):
        train.train_and_evaluate(self.config(**fields), workdir)
    self.assertEmpty(os.listdir(workdir))


if __name__ == '__main__':
  absltest.main()
