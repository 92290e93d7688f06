"""bench/gpu_check.sh: its CPU dry run, its plan, FLOP count and tables.

The real check needs a GPU; here the dry run proves the whole pipeline
(wrapper, driver, one worker process per case, JSON lines, table, files)
on the CPU, with the cudnn cases and the check reported as skipped, and
the timm cases too where torch is absent. With $GPU_CHECK_TIMM_PYTHON set
to a Python that has torch and timm, a second dry run times timm's side.
"""

import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'bench')


def _load(name):
  """A bench/ script as a module (bench/ is no package)."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(BENCH, name + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


gpu_check = _load('gpu_check')


def _dry_run(out_dir, *extra):
  """Runs the wrapper's dry run: (return code, JSON records, stdout)."""
  env = dict(os.environ, PYTHON=sys.executable,
             PYTHONPATH=os.pathsep.join(
                 [ROOT] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  proc = subprocess.run(
      ['bash', os.path.join(BENCH, 'gpu_check.sh'), '--dry_run',
       f'--out={out_dir}', *extra], capture_output=True, text=True,
      env=env, timeout=600, check=False)
  records = [json.loads(line) for line in proc.stdout.splitlines()
             if line.startswith('{')]
  return proc.returncode, records, proc.stdout, proc.stderr


class DryRunTest(absltest.TestCase):

  @pytest.mark.slow  # Two jax worker processes compile (~25 s on 2 cores).
  def test_dry_run_reports_every_case(self):
    out_dir = tempfile.mkdtemp()
    code, records, stdout, stderr = _dry_run(out_dir)
    self.assertEqual(code, 0, stderr[-3000:])
    by_name = {r['name']: r for r in records}
    self.assertLen(by_name, 9)  # 8 cases (2 impls x 2 modes x 2) + check.
    for mode in ('infer', 'train'):
      ours = by_name[f'testing@32/b4/{mode}/vit_jax-xla']
      self.assertEqual(ours['status'], 'ok', ours.get('reason'))
      self.assertGreater(ours['img_per_sec'], 0)
      self.assertGreater(ours['mfu'], 0)
      self.assertLess(ours['mfu'], 10)  # A 1-step tiny model is noisy.
      self.assertIn('peak_device_mem_mb', ours)
      self.assertEqual(ours['dtype'], 'bfloat16')
      cudnn = by_name[f'testing@32/b4/{mode}/vit_jax-cudnn']
      self.assertEqual(cudnn['status'], 'skipped')
      self.assertIn('CUDA GPU', cudnn['reason'])
      for variant in ('eager', 'compile'):
        timm = by_name[f'testing@32/b4/{mode}/timm-{variant}']
        if variant == 'compile' or not importlib.util.find_spec('torch'):
          self.assertEqual(timm['status'], 'skipped')
    train = by_name['testing@32/b4/train/vit_jax-xla']
    self.assertTrue(all(0 < x < 10 for x in train['losses']))
    check = by_name['testing@32/b4/infer/vit_jax-cudnn/check']
    self.assertEqual(check['impl'], 'check')
    self.assertEqual(check['status'], 'skipped')
    # The table: a header and one row per case, then the check's table.
    self.assertIn('| model | mode | impl | img/s |', stdout)
    self.assertEqual(stdout.count('| testing@32 b4 |'), 8)
    self.assertIn('| testing@32 | - | - | - | - | skipped', stdout)
    with open(os.path.join(out_dir, 'gpu_check.md')) as f:
      self.assertIn(f.read().strip(), stdout)
    with open(os.path.join(out_dir, 'gpu_check.jsonl')) as f:
      self.assertEqual([json.loads(line)['name'] for line in f],
                       [r['name'] for r in records])

  @pytest.mark.slow
  @absltest.skipUnless(os.environ.get('GPU_CHECK_TIMM_PYTHON'),
                       'set GPU_CHECK_TIMM_PYTHON to a Python with timm')
  def test_dry_run_times_timm(self):
    code, records, _, stderr = _dry_run(
        tempfile.mkdtemp(), '--only=timm-eager',
        f"--timm_python={os.environ['GPU_CHECK_TIMM_PYTHON']}")
    self.assertEqual(code, 0, stderr[-3000:])
    self.assertLen(records, 2)
    for r in records:
      self.assertEqual(r['status'], 'ok', r.get('reason'))
      self.assertGreater(r['img_per_sec'], 0)
      self.assertIsNone(r['mfu'])  # No listed chip, no vit_jax case ran.
      self.assertEqual(r['hidden'], 10)


class AttentionCheckTest(absltest.TestCase):

  @pytest.mark.slow  # Three compiles of the forward (~15 s on 2 cores).
  def test_check_passes_for_an_equal_implementation(self):
    # On a CPU cuDNN is absent: 'einsum' stands in, the same function.
    worker = _load('gpu_check_jax')
    case = dict(model='testing', res=32, batch=4, mode='infer',
                variant='xla', dtype='bfloat16', num_classes=10,
                check_floor=gpu_check.CHECK_FLOOR)
    config = worker.benchmark.benchmark_config(
        model='testing', res=32, batch=4, dtype='bfloat16')
    result = worker.attention_check(case, config, batch=4,
                                    candidate='einsum')
    self.assertTrue(result['passed'], result)
    self.assertGreater(result['rel_err_xla_f32'], 0)  # bf16 rounds.
    self.assertLess(result['rel_err_xla_f32'], 5e-2)
    self.assertLess(result['rel_err_cudnn_xla'], 5e-2)


class PlanTest(absltest.TestCase):

  def test_flops_match_published_counts(self):
    # timm's model cards: 17.6 and 191.2 GMACs per image.
    self.assertAlmostEqual(gpu_check.vit_flops('ViT-B_16', 224) / 35.2e9,
                           1, delta=0.01)
    self.assertAlmostEqual(gpu_check.vit_flops('ViT-L_16', 384) / 382.4e9,
                           1, delta=0.01)

  def test_gpu_plan_order_and_budget(self):
    # A 1 s budget skips every case without starting a process.
    out_dir = tempfile.mkdtemp()
    with mock.patch.object(sys, 'stdout', new_callable=io.StringIO) as out, \
        mock.patch.object(sys, 'stderr', new_callable=io.StringIO):
      code = gpu_check.main(['--budget_s=1', f'--out={out_dir}'])
    self.assertEqual(code, 0)
    records = [json.loads(line) for line in out.getvalue().splitlines()
               if line.startswith('{')]
    names = [r['name'] for r in records]
    self.assertLen(names, 18)  # 2 models x (4 vit_jax + 4 timm) + 2 checks.
    self.assertEqual(names[0], 'ViT-B_16@224/b128/infer/vit_jax-xla')
    self.assertTrue(all('compile' in n for n in names[-4:]), names)
    self.assertTrue(all(r['status'] == 'skipped' and 'budget' in r['reason']
                        for r in records))
    self.assertEqual(records[0]['model_flops_per_step'],
                     128 * gpu_check.vit_flops('ViT-B_16', 224))
    large = [r for r in records if r['model'] == 'ViT-L_16']
    self.assertTrue(all(r['res'] == 384 and r['batch'] == 32 for r in large))

  def test_mfu_uses_the_chip_peak_and_a_failed_check_fails(self):
    case = dict(model='ViT-B_16', res=224, batch=128, mode='train',
                variant='xla', name='b')
    records = [
        dict(case, impl='vit_jax', status='ok', img_per_sec=1000.0,
             step_ms=128.0, first_step_s=30.0, peak_device_mem_mb=20480.0,
             device_kind='NVIDIA H200'),
        dict(case, impl='check', status='ok', passed=False, tol=1e-2,
             rel_err_cudnn_xla=0.1, rel_err_cudnn_f32=0.1,
             rel_err_xla_f32=1e-3)]
    peak, source = gpu_check.chip_peak(records)
    self.assertEqual(peak, 989.4e12)
    self.assertIn('H200', source)
    gpu_check.add_mfu(records[0], peak, source)
    expected = 3 * gpu_check.vit_flops('ViT-B_16', 224) * 1000 / 989.4e12
    self.assertAlmostEqual(records[0]['mfu'], expected)
    text = gpu_check.report(records, peak=peak, source=source, wall_s=1,
                            budget_s=450)
    self.assertIn(f'| {expected:.3f} | 20.00 | 30.0 | - | ok |', text)
    self.assertIn('| FAIL |', text)


if __name__ == '__main__':
  absltest.main()
