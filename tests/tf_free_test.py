"""Everything but the data pipeline imports and runs without TensorFlow.

A subprocess gets a `sitecustomize` whose import hook makes `tensorflow`
and `tensorflow_datasets` unimportable (as on a GPU machine that has JAX but
no TF); it imports the package's non-data modules and, slower, runs one
tiny benchmark train step end to end.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pytest

_BLOCKER = '''
import sys

class _NoTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
      raise ImportError(f'{name} is blocked by tf_free_test')
    return None

sys.meta_path.insert(0, _NoTensorFlow())
'''

MODULES = ('train', 'steps', 'benchmark', 'plan', 'predict', 'inspect',
           'inspect.cli', 'fewshot', 'fewshot_solver', 'models',
           'checkpoint', 'export', 'images', 'main')

_IMPORTS = '''
import importlib, sys
try:
  import tensorflow
  raise SystemExit('the blocker let tensorflow through')
except ImportError:
  pass
for name in sys.argv[1:]:
  importlib.import_module('vit_jax.' + name)
print(sorted(m for m in sys.modules if m.split('.')[0] in
             ('tensorflow', 'tensorflow_datasets')))
'''


def _run(args, timeout):
  """`python args` with TF blocked; (returncode, stdout, stderr)."""
  with tempfile.TemporaryDirectory() as hook:
    with open(os.path.join(hook, 'sitecustomize.py'), 'w') as f:
      f.write(_BLOCKER)
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env['PYTHONPATH'] = os.pathsep.join(
        [hook, root] + [p for p in [env.get('PYTHONPATH')] if p])
    out = subprocess.run([sys.executable] + args, capture_output=True,
                         text=True, env=env, timeout=timeout, check=False)
  return out.returncode, out.stdout, out.stderr


class TensorFlowFreeTest(absltest.TestCase):

  def test_modules_import_without_tensorflow(self):
    code, out, err = _run(['-c', _IMPORTS, *MODULES], timeout=120)
    self.assertEqual(code, 0, err[-3000:])
    self.assertEqual(out.strip().splitlines()[-1], '[]')

  @pytest.mark.slow  # Compiles a train step (~15 s on 2 cores).
  def test_benchmark_trains_without_tensorflow(self):
    code, out, err = _run(
        ['-m', 'vit_jax.benchmark', '--model=testing', '--res=32',
         '--batch=4', '--mode=train', '--steps=1', '--warmup=0',
         '--cache_dir=', '--no_peak', '--no_cpu_tuning'], timeout=300)
    self.assertEqual(code, 0, err[-3000:])
    record = json.loads(out.strip().splitlines()[-1])
    self.assertEqual(record['mode'], 'train')
    self.assertLen(record['losses'], 2)
    self.assertTrue(all(0 < x < 10 for x in record['losses']),
                    record['losses'])


if __name__ == '__main__':
  absltest.main()
