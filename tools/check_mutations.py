#!/usr/bin/env python3
r"""Plants known bugs one at a time and checks that the tests catch each.

  python tools/check_mutations.py [--only=NAME,...] [--list]

For every mutation below: the committed tree (`git archive HEAD`) is copied
to a temporary folder, one exact string is replaced (it must occur once:
a mutation whose text is gone fails loudly, so the list follows the code),
and the tests named with it run there (`pytest -x`). A mutation is caught
when those tests pass on the unchanged copy and fail with it planted. Prints one line per mutation and exits 1 if any
survives. Runs on the tests' own offline data; a few minutes on 2 cores.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (file, text, replacement, pytest arguments).
MUTATIONS = {
    'loss sign': (
        'vit_jax/steps.py', 'return -(onehot * logp).sum(-1).mean()',
        'return (onehot * logp).sum(-1).mean()',
        ['tests/train_math_test.py', '-k', 'LossTest or Trajectory']),
    'accumulated gradient not divided': (
        'vit_jax/utils.py',
        'return loss / accum_steps, jax.tree.map(lambda g: g / accum_steps, '
        'grads)', 'return loss / accum_steps, grads',
        ['tests/train_math_test.py', '-k', 'AccumulationTest']),
    'padding counted in eval': (
        'vit_jax/steps.py',
        "correct = (jnp.argmax(logits, -1) == batch['label']) * batch['mask']",
        "correct = (jnp.argmax(logits, -1) == batch['label'])",
        ['tests/train_math_test.py', '-k', 'EvalStepTest']),
    'lr one update ahead': (
        'vit_jax/steps.py', 'opt = optax.sgd(lr_fn,',
        'opt = optax.sgd(lambda c: lr_fn(c + 1),',
        ['tests/train_math_test.py', '-k', 'lr_applied or Trajectory']),
    'clipping removed': (
        'vit_jax/steps.py', 'if config.grad_norm_clip:', 'if False:',
        ['tests/train_math_test.py', '-k', 'clipping or Trajectory']),
    'skip policy keeps the bad params': (
        'vit_jax/steps.py', 'params=keep(params, state.params)',
        'params=params',
        ['tests/train_test.py', '-k', 'skip_policy']),
    'folder labels not permuted with the paths': (
        'vit_jax/datasets.py', 'np.asarray(train.labels, np.int64)[order]))',
        'np.asarray(train.labels, np.int64)))',
        ['tests/input_pipeline_test.py', '-k', 'FolderLabelsTest']),
    'capture layers reversed': (
        'vit_jax/inspect/capture.py',
        'return [found[i] for i in sorted(found)]',
        'return [found[i] for i in sorted(found, reverse=True)]',
        ['tests/inspect_oracle_test.py', '-k', 'CaptureOrderTest']),
    "only 'token' has a class row": (
        'vit_jax/models_vit.py',
        "CLASS_TOKEN_CLASSIFIERS = ('token', 'token_unpooled')",
        "CLASS_TOKEN_CLASSIFIERS = ('token',)",
        ['tests/checkpoint_test.py', '-k', 'token_unpooled_resize']),
    'exact GELU': (
        'vit_jax/models_vit.py', 'x = nn.gelu(x)  # approximate=True',
        'x = nn.gelu(x, approximate=False)  #',
        ['tests/golden_forward_test.py']),
    'LayerNorm eps 1e-5': (
        'vit_jax/models_vit.py', 'x = nn.LayerNorm(epsilon=1e-6, **kw)(inputs)',
        'x = nn.LayerNorm(epsilon=1e-5, **kw)(inputs)',
        ['tests/golden_forward_test.py']),
    'posemb zoom axes swapped': (
        'vit_jax/checkpoint/pretrained.py',
        '(gh / gs_old, gw / gs_old, 1)', '(gw / gs_old, gh / gs_old, 1)',
        ['tests/checkpoint_test.py', '-k', 'non_square or Interpolat']),
    'finiteness not checked before a save': (
        'vit_jax/train.py',
        '      _check_finite(pending, config.nonfinite_loss)\n'
        '      pending = None\n      manager.save(',
        '      manager.save(',
        ['tests/train_test.py', '-k', 'nan_loss_at_a_checkpoint_step']),
}


def _plant(root: str, name: str) -> None:
  path, old, new, _ = MUTATIONS[name]
  full = os.path.join(root, path)
  with open(full) as f:
    text = f.read()
  if text.count(old) != 1:
    sys.exit(f'check_mutations: "{name}": {path} holds its text '
             f'{text.count(old)} times, not once; update MUTATIONS.')
  with open(full, 'w') as f:
    f.write(text.replace(old, new))


def _tests_pass(name: str, *, planted: bool) -> bool:
  """Whether the tests of mutation `name` pass on HEAD (mutation planted?)."""
  with tempfile.TemporaryDirectory(prefix='vit_jax_mutation_') as root:
    archive = subprocess.run(['git', 'archive', 'HEAD'], cwd=REPO,
                             check=True, capture_output=True).stdout
    subprocess.run(['tar', '-x', '-C', root], input=archive, check=True)
    if planted:
      _plant(root, name)
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider',
         *MUTATIONS[name][3]], cwd=root, env=env, capture_output=True,
        text=True, check=False)
  if proc.returncode not in (0, 1):  # 2-5: pytest could not run the tests.
    print(proc.stdout[-2000:], proc.stderr[-2000:])
    sys.exit(f'check_mutations: "{name}": pytest exited '
             f'{proc.returncode} (not a test failure).')
  return proc.returncode == 0


def check(name: str) -> bool:
  """True when the mutation's tests pass on HEAD and fail with it planted."""
  if not _tests_pass(name, planted=False):
    sys.exit(f'check_mutations: the tests of "{name}" fail without the '
             'mutation: fix HEAD first.')
  return not _tests_pass(name, planted=True)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--only', default='',
                      help='comma-separated mutation names (default: all)')
  parser.add_argument('--list', action='store_true')
  args = parser.parse_args()
  names = [n for n in args.only.split(',') if n] or list(MUTATIONS)
  unknown = [n for n in names if n not in MUTATIONS]
  if unknown:
    sys.exit(f'check_mutations: unknown {unknown}; --list shows the names.')
  if args.list:
    print('\n'.join(names))
    return 0
  survived = []
  for name in names:
    start = time.time()
    caught = check(name)
    print(f'{"caught  " if caught else "SURVIVED"} {name} '
          f'({time.time() - start:.0f} s)', flush=True)
    survived += [] if caught else [name]
  print(f'{len(names) - len(survived)} of {len(names)} caught')
  return 1 if survived else 0


if __name__ == '__main__':
  sys.exit(main())
