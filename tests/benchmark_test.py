"""Smoke tests of the throughput benchmark (tiny model, two steps)."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import flax.linen as nn
import jax
import numpy as np
import pytest

from vit_jax import benchmark
from vit_jax import models_vit

_FIELDS = ('img_per_sec', 'step_ms', 'first_step_s', 'compile_s',
           'peak_host_mem_mb', 'flops_per_step', 'achieved_flops',
           'matmul_peak_flops', 'mfu_vs_matmul_peak')


def _cli(cache_dir, mode='train', xla_flags=None):
  """One `python -m vit_jax.benchmark` run of the tiny model; its record."""
  cmd = [sys.executable, '-m', 'vit_jax.benchmark', '--model=testing',
         '--res=32', '--batch=4', f'--mode={mode}', '--steps=2',
         '--warmup=1', f'--cache_dir={cache_dir}']
  if xla_flags is not None:
    cmd.append(f'--xla_flags={xla_flags}')
  # Not the caller's XLA_FLAGS (an in-process CLI test may have set them):
  # the benchmark's own defaults are under test.
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       check=True, timeout=300).stdout
  return json.loads(out.strip().splitlines()[-1])


class BenchmarkTest(absltest.TestCase):

  @pytest.mark.slow
  def test_cli_fields_and_compilation_cache(self):
    with tempfile.TemporaryDirectory() as cache:
      first = _cli(cache)
      second = _cli(cache)
    for field in _FIELDS:
      self.assertGreater(first[field], 0, field)
    self.assertEqual(
        {k: first[k] for k in ('impl', 'model', 'res', 'batch', 'mode')},
        {'impl': 'vit_jax', 'model': 'testing', 'res': 32, 'batch': 4,
         'mode': 'train'})
    self.assertAlmostEqual(first['img_per_sec'] * first['step_ms'], 4e3,
                           places=6)
    self.assertFalse(first['cache_hit'])
    self.assertTrue(second['cache_hit'])
    # The command line froze its imports' objects out of the collector.
    self.assertGreater(first['gc_frozen_objects'], 100_000)
    # The same program from the cache computes the same losses.
    self.assertEqual(first['losses'], second['losses'])

  @pytest.mark.slow
  def test_cpu_flags_keep_the_losses(self):
    """The default XLA:CPU flags change speed, not the maths."""
    tuned = _cli('')
    plain = _cli('', xla_flags='')
    self.assertNotEqual(tuned['xla_flags'], plain['xla_flags'])
    np.testing.assert_allclose(tuned['losses'], plain['losses'], rtol=1e-5)

  def test_infer_in_process(self):
    config = benchmark.benchmark_config(model='testing', res=32, batch=4)
    peak = benchmark.matmul_peak(sizes=(128,), reps=2)
    record = benchmark.time_steps(config, mode='infer', steps=2, warmup=1,
                           peak_flops=peak)
    for field in _FIELDS:
      self.assertGreater(record[field], 0, field)
    self.assertEqual(record['mode'], 'infer')
    self.assertLess(record['mfu_vs_matmul_peak'], 10.0)


class FusedProjectionTest(absltest.TestCase):
  """Our attention (one fused q/k/v matmul) against flax's module."""

  def setUp(self):
    super().setUp()
    self.x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 24))
    self.ours = models_vit.MultiHeadDotProductAttention(num_heads=3)
    # Our module's initialisers (the original release's), not flax's.
    self.theirs = nn.MultiHeadDotProductAttention(
        num_heads=3, kernel_init=nn.initializers.xavier_uniform())

  def test_same_initial_parameters(self):
    ours = self.ours.init(jax.random.PRNGKey(1), self.x,
                          deterministic=True)['params']
    theirs = self.theirs.init(jax.random.PRNGKey(1), self.x, self.x)['params']
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)

  @pytest.mark.slow
  def test_same_gradients(self):
    params = self.theirs.init(jax.random.PRNGKey(1), self.x, self.x)['params']
    params = jax.tree.map(  # Non-zero biases, so that they are tested too.
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape),
        params)
    cot = jax.random.normal(jax.random.PRNGKey(3), self.x.shape)
    loss = lambda f: lambda p, x: (f(p, x) * cot).sum()
    ours = jax.grad(loss(lambda p, x: self.ours.apply(
        {'params': p}, x, deterministic=True)), argnums=(0, 1))(params, self.x)
    theirs = jax.grad(loss(lambda p, x: self.theirs.apply(
        {'params': p}, x, x)), argnums=(0, 1))(params, self.x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5),
                 ours, theirs)


if __name__ == '__main__':
  absltest.main()
