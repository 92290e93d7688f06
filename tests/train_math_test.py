"""Training math pinned to independent references.

- The original release's own numbers (testdata/orig_tiny_vit_trajectory.npz,
  recipe in testdata/README.md): three updates of a tiny ViT with clipping,
  SGD momentum (float32 and bfloat16 accumulators), warmup + cosine and
  accum_steps=2, reproduced with this package's optimizer and train step.
- Hand-computed / closed-form values for the loss, the accumulation split,
  the eval mask, the learning rate applied and clipping.
"""

import functools
import os

from absl.testing import absltest
from absl.testing import parameterized
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax import steps
from vit_jax import utils
from vit_jax.configs import common
from vit_jax.configs import models as model_configs

TESTDATA = os.path.join(os.path.dirname(__file__), 'testdata')
GOLDEN = os.path.join(TESTDATA, 'orig_tiny_vit_trajectory.npz')


def _golden_tree(data, prefix):
  flat = {tuple(k[len(prefix) + 1:].split('/')): data[k]
          for k in data.files if k.startswith(prefix + '/')}
  return traverse_util.unflatten_dict(flat)


def golden_model():
  """The recipe's model: the testing config, no dropout, 2 layers."""
  config = model_configs.MODEL_CONFIGS['testing'].copy_and_resolve_references()
  config.transformer.dropout_rate = 0.0
  config.transformer.num_layers = 2
  return models.build_model(config, num_classes=10)


def golden_optim_config(optim_dtype):
  """The recipe's optimizer: clip 1, SGD 0.9, 10 steps cosine, warmup 2."""
  config = common.get_config()
  config.total_steps, config.base_lr, config.warmup_steps = 10, 0.1, 2
  config.decay_type, config.optimizer = 'cosine', 'sgd'
  config.momentum, config.grad_norm_clip = 0.9, 1.0
  config.optim_dtype = optim_dtype
  return config


def golden_batch():
  x = np.random.RandomState(0).uniform(-1, 1, (8, 32, 32, 3))
  return {'image': jnp.asarray(x.astype(np.float32)),
          'label': jnp.asarray(np.arange(8) % 10)}


@functools.lru_cache(maxsize=None)
def golden_step(optim_dtype):
  """(tx, jitted train step) of the recipe; shared so it compiles once."""
  tx, lr_fn = steps.create_optimizer(golden_optim_config(optim_dtype))
  step = jax.jit(functools.partial(
      steps.train_step, model=golden_model(), tx=tx, lr_fn=lr_fn,
      rng=jax.random.PRNGKey(0), accum_steps=2))
  return tx, step


def run_updates(params, optim_dtype, batch, n):
  """`n` recipe updates on the same batch: (params, losses, lrs)."""
  tx, step = golden_step(optim_dtype)
  state = steps.TrainState(step=jnp.int32(0), params=params,
                           opt_state=tx.init(params))
  losses, lrs = [], []
  for _ in range(n):
    state, metrics = step(state, batch)
    losses.append(float(metrics['loss']))
    lrs.append(float(metrics['learning_rate']))
  return state.params, losses, lrs


def max_abs_diff(a, b):
  return max(float(np.abs(np.asarray(x, np.float64) - y).max())
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


class OriginalTrajectoryTest(parameterized.TestCase):
  """The original release's numbers, reproduced to 1e-6."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = np.load(GOLDEN)
    cls.model = golden_model()
    cls.params0 = _golden_tree(cls.data, 'params0')

  def test_init_equals_original(self):
    x = golden_batch()['image'][:1]
    params = jax.jit(lambda x: self.model.init(
        jax.random.PRNGKey(0), x, train=False)['params'])(x)
    self.assertEqual(jax.tree.structure(params),
                     jax.tree.structure(self.params0))
    # Eager init gives exactly 0.0; jit fuses the initialisers' scaling
    # differently (measured 3.7e-9).
    self.assertLess(max_abs_diff(params, self.params0), 1e-7)

  @parameterized.parameters('float32', 'bfloat16')
  def test_three_updates(self, optim_dtype):
    params, losses, lrs = run_updates(self.params0, optim_dtype,
                                      golden_batch(), 3)
    # The lr applied by updates 1..3 (optax count 0, 1, 2): 0.1 * c / 2.
    np.testing.assert_allclose(lrs, [0.0, 0.05, 0.1], atol=1e-9)
    np.testing.assert_allclose(losses, self.data[f'losses_{optim_dtype}'],
                               rtol=0, atol=1e-6)
    want = _golden_tree(self.data, f'params3_{optim_dtype}')
    self.assertEqual(jax.tree.structure(params), jax.tree.structure(want))
    self.assertLess(max_abs_diff(params, want), 1e-6)


class LossTest(absltest.TestCase):

  def test_cross_entropy_matches_float64(self):
    rng = np.random.RandomState(1)
    logits = rng.normal(size=(6, 5)) * 3
    labels = rng.randint(0, 5, 6)
    shifted = logits - logits.max(-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    want = -logp[np.arange(6), labels].mean()
    got = steps.cross_entropy(jnp.asarray(logits, jnp.float32),
                              jnp.asarray(labels))
    self.assertAlmostEqual(float(got), want, places=5)
    self.assertGreater(float(got), 0.0)  # -log p > 0 for p < 1.


class AccumulationTest(absltest.TestCase):
  """Micro-batches really split, strided, and the mean is taken."""

  def test_batch_dependent_loss_sees_strided_micro_batches(self):
    # A loss that depends on the whole (micro-)batch, not per example: the
    # max over its rows; its "gradient" is the number of rows it saw.
    def loss_and_grad(params, images, labels, rng):
      del params, rng
      return (images.max() + 100.0 * labels.max(),
              {'rows': jnp.float32(images.shape[0])})

    images = np.random.RandomState(0).normal(size=(12,)).astype(np.float32)
    labels = np.arange(12) % 4
    for accum in (1, 2, 3, 4):
      loss, grads = utils.accumulate_gradient(
          loss_and_grad, {'rows': jnp.zeros(())}, jnp.asarray(images),
          jnp.asarray(labels), accum, strided=True,
          rng=jax.random.PRNGKey(0))
      # Micro-batch k is rows k, k + accum, ... (float64 reference).
      want = np.mean([images[k::accum].max() + 100.0 * labels[k::accum].max()
                      for k in range(accum)])
      self.assertAlmostEqual(float(loss), want, places=4, msg=accum)
      self.assertEqual(float(grads['rows']), 12 / accum, msg=accum)

  def test_mean_gradient_of_a_linear_model(self):
    # d/dw mean_i (w . x_i - y_i)^2 = mean_i 2 (w . x_i - y_i) x_i, closed
    # form in float64; micro-batch means of equal size average to it.
    rng = np.random.RandomState(0)
    x, y, w = rng.normal(size=(8, 3)), rng.normal(size=8), rng.normal(size=3)

    def loss_fn(params, images, labels, rng):
      del rng
      return jnp.mean((images @ params['w'] - labels) ** 2)

    want_grad = (2 * (x @ w - y)[:, None] * x).mean(0)
    want_loss = ((x @ w - y) ** 2).mean()
    batch = {'image': jnp.asarray(x, jnp.float32),
             'label': jnp.asarray(y, jnp.float32)}
    for accum in (1, 2, 4):
      loss, grads = utils.accumulate_gradient(
          jax.value_and_grad(loss_fn), {'w': jnp.asarray(w, jnp.float32)},
          batch['image'], batch['label'], accum, strided=True,
          rng=jax.random.PRNGKey(0))
      self.assertAlmostEqual(float(loss), want_loss, places=5)
      np.testing.assert_allclose(grads['w'], want_grad, rtol=1e-5, atol=1e-6)


class EvalStepTest(absltest.TestCase):

  def test_padding_is_not_counted(self):
    class Fixed:  # A fake model: predicts class 2 for every image.

      def apply(self, variables, images, train):
        del variables, train
        return jax.nn.one_hot(jnp.full(images.shape[:1], 2), 3)

    batch = {'image': jnp.zeros((6, 1)),
             'label': jnp.asarray([2, 2, 0, 2, 2, 2]),
             'mask': jnp.asarray([1, 1, 1, 1, 0, 0])}
    correct, total = steps.eval_step({}, batch, model=Fixed())
    # Real rows 0..3: three of them have label 2; rows 4, 5 are padding.
    self.assertEqual((int(correct), int(total)), (3, 4))


class OptimizerTest(absltest.TestCase):

  def _tx(self, **overrides):
    config = golden_optim_config('float32')
    config.momentum = 0.0
    for key, value in overrides.items():
      config[key] = value
    return steps.create_optimizer(config)

  def test_lr_applied_at_each_update(self):
    # Plain SGD with unit gradient: update n moves a parameter by -lr_n.
    tx, _ = self._tx(grad_norm_clip=0.0)
    params = {'w': jnp.zeros(())}
    opt_state = tx.init(params)
    applied = []
    for _ in range(5):
      updates, opt_state = tx.update({'w': jnp.ones(())}, opt_state, params)
      applied.append(-float(updates['w']))
    # 0.1 * min(1, c / 2) * cosine((c - 2) / 8) for optax counts c = 0..4.
    want = [0.1 * min(1, c / 2) * 0.5 * (1 + np.cos(np.pi * max(c - 2, 0) / 8))
            for c in range(5)]
    np.testing.assert_allclose(applied, want, rtol=1e-6, atol=1e-9)

  def test_clipping_to_unit_global_norm(self):
    tx, _ = self._tx(momentum=0.0, warmup_steps=0)
    grads = {'a': jnp.asarray([3.0, 0.0]), 'b': jnp.asarray([4.0])}  # norm 5
    params = jax.tree.map(jnp.zeros_like, grads)
    updates, _ = tx.update(grads, tx.init(params), params)
    # lr 0.1 at count 0 (no warmup), gradient scaled by 1 / 5.
    np.testing.assert_allclose(updates['a'], [-0.06, 0.0], rtol=1e-6)
    np.testing.assert_allclose(updates['b'], [-0.08], rtol=1e-6)
    small = jax.tree.map(lambda g: g / 10, grads)  # norm 0.5: untouched.
    updates, _ = tx.update(small, tx.init(params), params)
    np.testing.assert_allclose(updates['a'], [-0.03, 0.0], rtol=1e-6)

  def test_logged_lr_follows_the_optimizer_after_a_skip(self):
    params = _golden_tree(np.load(GOLDEN), 'params0')
    tx, step = golden_step('float32')
    batch = golden_batch()
    bad = dict(batch, image=batch['image'].at[0].set(jnp.nan))
    state = steps.TrainState(step=jnp.int32(0), params=params,
                             opt_state=tx.init(params))
    state, m1 = step(state, batch)
    before = jax.device_get(state)
    state, m2 = step(state, bad)  # Skipped: optimizer count stays at 1.
    self.assertFalse(bool(m2['finite']))
    self.assertEqual(int(state.step), 2)
    for got, want in zip(jax.tree.leaves((state.params, state.opt_state)),
                         jax.tree.leaves((before.params, before.opt_state))):
      np.testing.assert_array_equal(got, want)
    state, m3 = step(state, batch)
    self.assertEqual(int(state.step), 3)
    lrs = [float(m['learning_rate']) for m in (m1, m2, m3)]
    np.testing.assert_allclose(lrs, [0.0, 0.05, 0.05], atol=1e-9)


if __name__ == '__main__':
  absltest.main()
