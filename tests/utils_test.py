"""Tests for the learning-rate schedule and the cadence helper."""

import math
import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import jaxlib

from vit_jax import host
from vit_jax import utils


class ScheduleTest(parameterized.TestCase):

  def test_cosine_matches_formula(self):
    lr = utils.create_learning_rate_schedule(
        total_steps=100, base=0.03, decay_type='cosine', warmup_steps=10)
    for s in (1, 5, 10, 11, 50, 99, 100):
      p = min(max((s - 10) / 90, 0.0), 1.0)
      want = 0.03 * min(1.0, s / 10) * 0.5 * (1 + math.cos(math.pi * p))
      self.assertAlmostEqual(float(lr(s)), want, places=7, msg=str(s))

  def test_warmup_peak_and_end(self):
    lr = utils.create_learning_rate_schedule(
        total_steps=100, base=0.03, decay_type='cosine', warmup_steps=10)
    self.assertAlmostEqual(float(lr(10)), 0.03, places=7)
    self.assertAlmostEqual(float(lr(100)), 0.0, places=7)
    self.assertAlmostEqual(float(lr(1)), 0.003, places=7)

  def test_linear_decays_to_linear_end(self):
    lr = utils.create_learning_rate_schedule(
        total_steps=100, base=0.03, decay_type='linear', warmup_steps=0)
    self.assertAlmostEqual(float(lr(100)), 1e-5, places=9)
    self.assertAlmostEqual(float(lr(50)), 1e-5 + (0.03 - 1e-5) * 0.5,
                           places=7)

  def test_unknown_decay(self):
    with self.assertRaisesRegex(ValueError, 'cosine'):
      utils.create_learning_rate_schedule(
          total_steps=10, base=1., decay_type='exp', warmup_steps=0)


class ItstimeTest(parameterized.TestCase):

  @parameterized.parameters(
      (10, 10, 100, True), (11, 10, 100, False), (100, 30, 100, True),
      (90, 30, 100, True), (5, 0, 100, False), (5, None, 100, False),
      (100, None, 100, True))
  def test_itstime(self, step, every, total, want):
    self.assertEqual(utils.itstime(step, every, total), want)

  def test_not_last(self):
    self.assertFalse(utils.itstime(100, 30, 100, last=False))


class XlaFlagsTest(absltest.TestCase):

  def test_adds_flags_and_keeps_the_users(self):
    with mock.patch.dict(os.environ, {'XLA_FLAGS': '--xla_foo=1'}), \
        mock.patch.object(jaxlib, '__version__', '0.10.2'):
      value = host.set_xla_flags()
      self.assertEqual(value, os.environ['XLA_FLAGS'])
    self.assertEqual(value.split(), ['--xla_foo=1', *host.XLA_CPU_FLAGS])

  def test_a_flag_the_user_set_wins(self):
    name = host.XLA_CPU_FLAGS[0].split('=')[0]
    with mock.patch.dict(os.environ, {'XLA_FLAGS': f'{name}=+dot'}), \
        mock.patch.object(jaxlib, '__version__', '0.10.2'):
      self.assertEqual(host.set_xla_flags(), f'{name}=+dot')

  def test_skipped_on_unmeasured_jaxlib(self):
    # XLA aborts on unknown flags: never pass the experimental one blindly.
    with mock.patch.dict(os.environ, {'XLA_FLAGS': ''}), \
        mock.patch.object(jaxlib, '__version__', '0.11.0'):
      self.assertEqual(host.set_xla_flags(), '')
      self.assertEqual(os.environ['XLA_FLAGS'], '')


if __name__ == '__main__':
  absltest.main()
