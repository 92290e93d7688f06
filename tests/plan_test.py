"""Tests of vit_jax.plan: compiling main.py's step for TPU topologies.

The compiling tests need libtpu (the `test` extra brings it on Linux x86-64)
and skip without it. They use the tiny 'testing' ViT on a 4-chip v5e slice,
which the TPU compiler handles in seconds.
"""

import functools
import importlib.util
import json
import os
import re
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax import partitioning
from vit_jax import plan
from vit_jax import steps
from vit_jax.configs import common
from vit_jax.configs import vit as vit_config

HAVE_LIBTPU = importlib.util.find_spec('libtpu') is not None
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ('--config.pp.crop=32', '--config.batch=16', '--config.batch_eval=16',
        '--config.accum_steps=2')


def setUpModule():
  # Another JAX process on the machine may hold libtpu's lock; compiling
  # needs none (the plan CLI sets the same).
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')


def tiny_config(**changes):
  config = vit_config.get_config('testing,cifar10')
  with config.unlocked():
    config.pp.crop, config.batch, config.batch_eval = 32, 16, 16
    config.accum_steps = 2
    for key, value in changes.items():
      config[key] = value
  return config


def run_cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop('JAX_PLATFORMS', None)  # The command chooses CPU itself.
  return subprocess.run([sys.executable, '-m', 'vit_jax.plan', *args],
                        cwd=REPO, env=env, capture_output=True, text=True)


@absltest.skipUnless(HAVE_LIBTPU, "needs libtpu: pip install -e '.[tpu]'")
class CompileTest(absltest.TestCase):

  def test_bytes_equal_an_independent_lowering_of_train_step(self):
    config = tiny_config()
    report = plan.plan(config, topology='v5e:2x2', with_eval=False)
    self.assertEqual(report['devices'], 4)
    self.assertEqual(report['chip'], 'TPU v5 lite')
    self.assertEqual(report['mesh'], {'data': 4, 'model': 1})
    self.assertTrue(report['fits'])

    # The same step, lowered here from steps.train_step with this test's
    # own mesh, shardings and inputs.
    devices = plan.topology_devices('v5e:2x2')
    mesh = jax.sharding.Mesh(np.array(devices).reshape(4, 1),
                             ('data', 'model'))
    resolved = plan.resolve(config, devices, 'v5e:2x2')
    model = steps.create_model(resolved, 10)
    tx, lr_fn = steps.create_optimizer(resolved)
    params = models.abstract_params(model, 32)
    opt = jax.eval_shape(tx.init, params)
    state = steps.TrainState(step=jax.ShapeDtypeStruct((), jnp.int32),
                             params=params, opt_state=opt)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rows = jax.sharding.NamedSharding(mesh,
                                      jax.sharding.PartitionSpec('data'))
    # A 1-way model axis without FSDP shards no parameter: all replicated.
    state_sh = jax.tree.map(lambda _: rep, state)
    for s in jax.tree.leaves(partitioning.tree_shardings(state, mesh)):
      self.assertTrue(all(axis is None for axis in s.spec), s)
    step = functools.partial(
        steps.train_step, model=model, tx=tx, lr_fn=lr_fn,
        rng=jax.random.PRNGKey(0), accum_steps=2, batch_spec=rows)
    jitted = jax.jit(step, in_shardings=(state_sh, rows),
                     out_shardings=(state_sh, rep), donate_argnums=(0,))
    batch = {'image': jax.ShapeDtypeStruct((16, 32, 32, 3), jnp.float32),
             'label': jax.ShapeDtypeStruct((16,), jnp.int32)}
    compiled = jitted.lower(state, batch).compile()
    expected = plan.memory_bytes(compiled)
    self.assertEqual(report['per_device_bytes']['train'], expected)
    self.assertGreater(expected['arguments'], 0)
    flops, _ = plan.cost(compiled)
    # XLA counts the accumulation loop's body once; the report scales it.
    self.assertEqual(report['compiler_flops_per_step'], flops * 2 * 4)

  def test_a_batch_too_big_for_hbm_does_not_fit(self):
    # 2^17 images of 224 px: 18.4 GiB of input per v5e chip (16 GB).
    config = tiny_config(batch=2**17, batch_eval=16)
    with config.unlocked():
      config.pp.crop = 224
    report = plan.plan(config, topology='v5e:2x2', with_eval=False)
    self.assertFalse(report['fits'])
    # The TPU compiler itself refuses the step.
    self.assertIn('RESOURCE_EXHAUSTED', report['compiler_oom'])
    self.assertIsNone(report['per_device_bytes']['train'])
    text = plan.format_report(report)
    self.assertIn('fits: NO', text)
    self.assertIn('rerun with --fit to find the smallest accum_steps', text)

  def test_usable_hbm_is_what_the_compiler_offers(self):
    # 2 x 149 GiB of sort buffers: more than any chip's HBM.
    too_big = jax.jit(lambda v: jnp.sort(jnp.outer(v, v), axis=0)[0])
    for name, topology in (('v5e', 'v5e:2x2'), ('v4', 'v4:2x2x1'),
                           ('v5p', 'v5p:2x2x1'), ('v6e', 'v6e:2x2')):
      device = plan.topology_devices(topology)[0]
      x = jax.ShapeDtypeStruct(
          (200_000,), jnp.float32,
          sharding=jax.sharding.SingleDeviceSharding(device))
      with self.assertRaisesRegex(jax.errors.JaxRuntimeError,
                                  'available HBM') as caught:
        too_big.lower(x).compile()
      offered = re.search(r'available HBM \(([\d.]+)G\)',
                          str(caught.exception)).group(1)
      self.assertAlmostEqual(plan.CHIPS[name].usable_bytes / 2**30,
                             float(offered), places=2, msg=name)

  def test_fits_means_all_bytes_within_what_the_compiler_offers(self):
    # A step the compiler accepts can still need more than it offers once
    # its arguments are counted: 15.9 GiB fits a 16 GiB v5e chip's HBM
    # but not the 15.75 GiB a program gets.
    config = tiny_config()
    for total_gib, fits in ((15.9, False), (15.7, True)):
      fake = {'arguments': 0, 'temporaries': 0, 'outputs': 0, 'aliased': 0,
              'code': 0, 'total': int(total_gib * 2**30)}
      with mock.patch.object(plan, 'memory_bytes', return_value=fake):
        report = plan.plan(config, topology='v5e:2x2', with_eval=False)
      self.assertEqual(report['fits'], fits, total_gib)
      self.assertIn('usable by a program', plan.format_report(report))

  def test_cli_prints_table_and_json_without_native_noise(self):
    proc = run_cli('--config=configs/vit.py:testing,cifar10',
                   '--topology=v5e:2x2', *TINY)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertEqual(proc.stderr, '')  # No libtpu/XLA/TF start-up logs.
    lines = proc.stdout.splitlines()
    self.assertIn('testing on v5e:2x2: 4 x TPU v5 lite', lines[0])
    self.assertIn('eval step', lines[1])
    record = json.loads(lines[-1])
    for key in ('topology', 'chip', 'devices', 'mesh', 'per_device_bytes',
                'hbm_bytes', 'fits', 'compiler_flops_per_step',
                'compiler_flops_per_image', 'analytic_flops_per_image',
                'roofline_step_s', 'compile_s'):
      self.assertIn(key, record)
    self.assertEqual(set(record['per_device_bytes']['eval']),
                     {'arguments', 'temporaries', 'outputs', 'aliased',
                      'code', 'total'})


class TopologyTest(absltest.TestCase):

  def test_unknown_topology_is_one_line_listing_the_known_ones(self):
    proc = run_cli('--config=configs/vit.py:testing,cifar10',
                   '--topology=tpu9:2x2')
    self.assertEqual(proc.returncode, 1)
    self.assertEqual(proc.stderr.count('\n'), 1, proc.stderr)
    self.assertIn("Unknown topology 'tpu9:2x2'", proc.stderr)
    for chip in ('v4', 'v5e', 'v5p', 'v6e'):
      self.assertIn(chip, proc.stderr)

  def test_without_libtpu_says_how_to_install_it(self):
    with mock.patch.object(plan.importlib.util, 'find_spec',
                           return_value=None), \
        mock.patch.dict(os.environ, {'TPU_LIBRARY_PATH': ''}):
      with self.assertRaisesRegex(plan.PlanError,
                                  r"pip install -e '\.\[tpu\]'"):
        plan.topology_devices('v5e:2x2')

  def test_every_dataset_preset_has_a_class_count(self):
    self.assertEqual(set(plan.NUM_CLASSES), set(common.DATASET_PRESETS))
    config = tiny_config(dataset='/some/image/folder')
    with self.assertRaisesRegex(plan.PlanError, '--num_classes'):
      plan.num_classes_of(config, None)
    self.assertEqual(plan.num_classes_of(config, 7), 7)


class CommandTest(absltest.TestCase):

  def test_main_command_keeps_the_config_and_drops_changed_fields(self):
    argv = ['plan.py', '--config=configs/vit.py:l16,cifar10',
            '--topology=v5e:2x4', '--config.accum_steps=8',
            '--config.dtype=bfloat16', '--fit']
    self.assertEqual(
        plan.main_command(argv, ['accum_steps']),
        'python main.py --config=configs/vit.py:l16,cifar10 '
        '--config.dtype=bfloat16')


class AnalyticFlopsTest(absltest.TestCase):

  def test_tiny_vit_by_hand(self):
    # 'testing' at 32 px: 2x2 patches + class token = 5 tokens, width 10,
    # 2 heads of 5, MLP 10, one block, 10 classes. The last block computes
    # only the class token's output (its query, attention row, MLP).
    forward = (2 * 4 * 10 * 16 * 16 * 3  # patch embedding
               + 2 * 1 * 10 * 10  # query of the class token
               + 2 * 2 * 5 * 10 * 10  # keys and values of 5 tokens
               + 2 * 2 * 5 * 5 * 2  # logits and weighted sum, 2 heads
               + 2 * 10 * 10 * 3  # attention output, MLP in, MLP out
               + 2 * 10 * 10)  # head
    model = steps.create_model(tiny_config(), 10)
    self.assertEqual(plan.analytic_flops(model, 32), 3 * forward)


class FitSearchTest(absltest.TestCase):
  """The search logic, over a fake memory model (compiles are slow)."""

  def fake_plan(self, limit):
    def fake(config, *, topology, num_classes=None, with_eval=True):
      del topology, num_classes, with_eval
      accum = config.accum_steps
      total = 100 + 6400 // accum // (2 if config.fsdp else 1)
      self.compiled.append((accum, config.fsdp))
      return {'batch': config.batch, 'mesh': {'data': 8, 'model': 1},
              'devices': 8, 'accum_steps': accum, 'hbm_bytes': limit,
              'usable_hbm_bytes': limit,
              'per_device_bytes': {'train': {'total': total}},
              'fits': total <= limit, 'roofline_step_s': 1.0,
              'compiler_flops_per_step': 1.0}
    return fake

  def setUp(self):
    super().setUp()
    self.compiled = []

  def test_smallest_fitting_accum_by_binary_search(self):
    config = tiny_config(batch=512, accum_steps=8)  # 64 per device.
    with mock.patch.object(plan, 'plan', self.fake_plan(limit=1000)):
      report = plan.fit(config, topology='v5e:2x4')
    # 100 + 6400 / a <= 1000 first holds at a = 8 among 1, 2, 4, 8, ...
    self.assertEqual(report['fit']['accum_steps'], 8)
    self.assertLessEqual(len(self.compiled), 4)
    text = plan.format_fit(report, 'python main.py --config=x')
    self.assertIn('smallest accum_steps that fits: 8', text)
    self.assertIn('use: python main.py --config=x --config.accum_steps=8 '
                  '--workdir=WORKDIR', text)

  def test_nothing_fits_then_fsdp_is_tried(self):
    config = tiny_config(batch=512, accum_steps=8)
    with mock.patch.object(plan, 'plan', self.fake_plan(limit=140)):
      report = plan.fit(config, topology='v5e:2x4')
    # 100 + 6400/64 = 200 > 140 at best; FSDP halves it: 150, still over.
    self.assertIsNone(report['fit']['accum_steps'])
    self.assertEqual(report['fit']['alternatives'][0]['changes'],
                     {'fsdp': True, 'accum_steps': 64})
    text = plan.format_fit(report, 'python main.py')
    self.assertIn('no accum_steps fits', text)
    with mock.patch.object(plan, 'plan', self.fake_plan(limit=160)):
      text = plan.format_fit(plan.fit(config, topology='v5e:2x4'),
                             'python main.py')
    self.assertIn('use: python main.py --config.fsdp=True '
                  '--config.accum_steps=64', text)


if __name__ == '__main__':
  absltest.main()
