"""Tests for the learning-rate schedule and the cadence helper."""

import math

from absl.testing import absltest
from absl.testing import parameterized

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


if __name__ == '__main__':
  absltest.main()
