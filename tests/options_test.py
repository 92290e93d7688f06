"""Options that must not silently become no-ops: each changes what runs.

dtype=bfloat16 puts the matmuls of the lowered train step in bfloat16;
remat puts a rematerialisation (checkpoint) in the gradient's jaxpr;
attention_impl='xla' routes attention through jax.nn.dot_product_attention
(same numbers as the explicit einsum). Gradient accumulation really
splitting micro-batches is checked in train_math_test.
"""

import functools
import re
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
from jax.extend import core as jax_core
import numpy as np

from tests import test_util
from tests import train_test
from vit_jax import models
from vit_jax import steps


def _config(**overrides):
  config = train_test.tiny_config('/nonexistent', **overrides)
  config.pp.crop = 16
  return config


def lowered_train_step(config) -> str:
  """StableHLO text of the jitted train step of `config` (not compiled)."""
  model = steps.create_model(config, num_classes=2)
  tx, lr_fn = steps.create_optimizer(config)
  params = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False))[
          'params']
  state = steps.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                           params=params,
                           opt_state=jax.eval_shape(tx.init, params))
  batch = {'image': jax.ShapeDtypeStruct((4, 16, 16, 3), jnp.float32),
           'label': jax.ShapeDtypeStruct((4,), jnp.int32)}
  step = functools.partial(steps.train_step, model=model, tx=tx, lr_fn=lr_fn,
                           rng=jax.random.PRNGKey(0),
                           accum_steps=config.accum_steps)
  return jax.jit(step).lower(state, batch).as_text()


def dots_by_operand_type(text: str):
  """(bf16 dots, f32 dots): dot_general ops by their operand element type."""
  dots = [line for line in text.splitlines()
          if 'stablehlo.dot_general' in line]
  operands = [re.search(r':\s*\((.*)\)\s*->', line).group(1) for line in dots]
  bf16 = sum('xbf16>' in o for o in operands)
  f32 = sum('xbf16>' not in o for o in operands)
  return bf16, f32


class OptionsTest(absltest.TestCase):

  def test_bfloat16_dots_in_the_train_step(self):
    bf16, f32 = dots_by_operand_type(lowered_train_step(_config()))
    self.assertEqual(bf16, 0)
    self.assertGreater(f32, 10)
    bf16, f32 = dots_by_operand_type(
        lowered_train_step(_config(dtype='bfloat16')))
    # Every matmul of the model, forward and backward, runs in bfloat16.
    self.assertGreater(bf16, 10)
    self.assertEqual(f32, 0)

  def _grad_jaxpr(self, **fields):
    model = models.build_model(test_util.TINY_VIT, num_classes=2, **fields)
    params = test_util.random_params(model, 32)
    x = jnp.zeros((2, 32, 32, 3))
    loss = lambda p: model.apply({'params': p}, x, train=True).sum()
    return jax.make_jaxpr(jax.grad(loss))(params)

  def test_remat_puts_a_checkpoint_in_the_gradient(self):
    def primitives(jaxpr):
      names = set()
      for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for sub in jax_core.jaxprs_in_params(eqn.params):
          names |= primitives(sub)
      return names

    plain = primitives(self._grad_jaxpr().jaxpr)
    remat = primitives(self._grad_jaxpr(remat=True).jaxpr)
    # jax names the primitive 'checkpoint' or 'remat2' (jax 0.10).
    is_remat = lambda names: bool(names & {'checkpoint', 'remat', 'remat2'})
    self.assertFalse(is_remat(plain))
    self.assertTrue(is_remat(remat), remat)

  def test_xla_attention_calls_dot_product_attention(self):
    model_args = dict(num_classes=3)
    images = np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)).astype(
        np.float32)
    logits, calls = {}, {}
    real = jax.nn.dot_product_attention
    for impl in ('einsum', 'xla'):
      model = models.build_model(test_util.TINY_VIT, attention_impl=impl,
                                 **model_args)
      params = test_util.random_params(model, 32, scale=0.3,
                                       unit_scales=True)
      seen = []

      def spy(*args, seen=seen, **kwargs):
        seen.append(kwargs.get('implementation'))
        return real(*args, **kwargs)

      apply = lambda p, x, model=model, **kw: model.apply(
          {'params': p}, x, train=False, **kw)
      with mock.patch.object(jax.nn, 'dot_product_attention', spy):
        logits[impl] = np.asarray(jax.jit(apply)(params, images))
        # Capturing weights needs the explicit softmax: einsum is used.
        before = len(seen)
        jax.jit(functools.partial(apply, mutable=['intermediates']))(
            params, images)
        calls[impl] = (seen[:before], len(seen) - before)
    self.assertEqual(calls['einsum'], ([], 0))
    self.assertEqual(calls['xla'], (['xla', 'xla'], 0))  # One per block.
    self.assertGreater(np.ptp(logits['einsum']), 1e-3)
    np.testing.assert_allclose(logits['xla'], logits['einsum'], rtol=1e-5,
                               atol=1e-5)


if __name__ == '__main__':
  absltest.main()
