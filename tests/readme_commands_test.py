"""Every command in README.md's ```bash blocks, run as written, offline.

Each command runs in bash from the repository root, in a subprocess that
`tests/offline_site/sitecustomize.py` turns into an offline machine (every
non-loopback connection is refused, as without a network). It must either
work (exit 0) or fail within `FAIL_SECONDS` with a message and no
traceback, as `EXPECTED` says for it. Only placeholders are replaced:
`/tmp/` by a temporary folder, and DIR, IMAGE.png, IMAGE.jpg, IMAGES_DIR,
labels.txt by files made here. A README command that `EXPECTED` does not
know fails the test: every new command gets tested. The install and test
commands are the ones `.ci/run` runs, checked verbatim.
"""

import os
import re
import shutil
import subprocess
import sys
import time

from absl.testing import absltest
import numpy as np
from PIL import Image
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAIL_SECONDS = 90  # A failing command on a loaded 2-core machine (imports).
OK, FAILS = 'ok', 'fails'
QUICKSTART = r'main\.py --config=vit_jax/configs/quickstart\.py'
# (regex on the command, expectation, text the output must contain).
EXPECTED = (
    (r'vit_jax\.plan --config=vit_jax/configs/quickstart\.py', OK, '"fits"'),
    (QUICKSTART, OK, 'test accuracy'),
    (r'vit_jax\.predict --checkpoint=/tmp/quickstart', OK, ''),
    (r'vit_jax\.inspect --checkpoint=/tmp/quickstart', OK, ''),
    (r'vit_jax\.fewshot --checkpoint=/tmp/quickstart', OK, '"results"'),
    (r'configs/inference_time\.py', OK, 'imgs_sec_core_mean'),
    (r'checkpoint download', FAILS, ''),
    (r'checkpoint inspect checkpoints/', FAILS, 'does not exist'),
    (r'checkpoint convert', FAILS, 'does not exist'),
    (r"pretrained_dir='gs://", FAILS, 'no network'),
    (r'augreg\.py:R_Ti_16', FAILS, 'no network'),
    (r'--config\.pretrained_dir=checkpoints', FAILS, 'download'),
    (r'--checkpoint=checkpoints/', FAILS, 'does not exist'),
    (r'bench/compare_timm\.py', FAILS, 'timm'),
    (r'tools/run_original_notebooks\.py', FAILS, 'does not exist'),
)
SETUP = ('python3 -m venv .venv && source .venv/bin/activate',
         "python -m pip install -e '.[test]'", 'python -m pytest tests')


def readme_commands():
  """The commands of README.md's bash blocks (continuations joined)."""
  with open(os.path.join(ROOT, 'README.md')) as f:
    text = f.read()
  commands = []
  for block in re.findall(r'```bash\n(.*?)```', text, re.S):
    for line in block.replace('\\\n', ' ').splitlines():
      line = re.sub(r'\s+#.*$', '', line).strip()
      if line and not line.startswith('#'):
        commands.append(re.sub(r'\s+', ' ', line))
  return commands


def expectation(command):
  for pattern, expected, text in EXPECTED:
    if re.search(pattern, command):
      return expected, text
  return None


def _digit_png(path, seed):
  """A 32x32 RGB image (any image will do for predict and inspect)."""
  rng = np.random.RandomState(seed)
  Image.fromarray(rng.randint(0, 255, (32, 32, 3)).astype(np.uint8)).save(
      path)


@pytest.mark.slow
class ReadmeCommandsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = absltest.get_default_test_tmpdir() + '/readme'
    shutil.rmtree(cls.tmp, ignore_errors=True)
    os.makedirs(os.path.join(cls.tmp, 'images'))
    for i in range(2):
      _digit_png(os.path.join(cls.tmp, 'images', f'{i}.png'), i)
    _digit_png(os.path.join(cls.tmp, 'image.png'), 7)
    Image.open(os.path.join(cls.tmp, 'image.png')).save(
        os.path.join(cls.tmp, 'image.jpg'))
    with open(os.path.join(cls.tmp, 'labels.txt'), 'w') as f:
      f.write('\n'.join(f'class {i}' for i in range(1000)))

  def localize(self, command):
    """The command with its placeholders pointing at files made here."""
    command = command.replace('/tmp/', self.tmp + '/')
    for placeholder, path in (('IMAGES_DIR', 'images'),
                              ('IMAGE.png', 'image.png'),
                              ('IMAGE.jpg', 'image.jpg'),
                              ('labels.txt', 'labels.txt'),
                              ('DIR', 'dir')):
      command = re.sub(rf'(?<![\w/]){re.escape(placeholder)}(?![\w])',
                       os.path.join(self.tmp, path), command)
    return command

  def run_command(self, command):
    # A fresh HOME: nothing of this machine's (~/.cache, a timm venv in
    # ~/.venvs) changes what the commands do, and nothing is left there.
    home = os.path.join(self.tmp, 'home')
    os.makedirs(home, exist_ok=True)
    env = dict(os.environ, HOME=home, PYTHONPATH=os.pathsep.join(
        [os.path.join(ROOT, 'tests', 'offline_site'), ROOT]),
               VIT_JAX_TEST_NETWORK_LOG=os.path.join(self.tmp, 'network.log'),
               TF_CPP_MIN_LOG_LEVEL='3')
    # As a user runs them: JAX picks its backends (with the test extra's
    # libtpu installed, it tries a TPU and fails, quietly: host.py).
    for var in ('XLA_FLAGS', 'JAX_PLATFORMS'):
      env.pop(var, None)
    # `python` as the README says it: this interpreter (its venv's bin).
    env['PATH'] = os.path.dirname(sys.executable) + os.pathsep + env['PATH']
    start = time.monotonic()
    proc = subprocess.run(['bash', '-c', command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900,
                          check=False)
    return proc, time.monotonic() - start

  def test_setup_commands_are_what_ci_runs(self):
    with open(os.path.join(ROOT, '.ci', 'run')) as f:
      ci = f.read()
    commands = readme_commands()
    for command in SETUP:
      self.assertIn(command, commands)
      for part in command.split(' && '):
        self.assertIn(part, ci)

  def test_every_command_has_an_expectation(self):
    unknown = [c for c in readme_commands()
               if c not in SETUP and expectation(c) is None]
    self.assertEmpty(unknown, 'README commands without an expectation in '
                     'EXPECTED (add one so the test runs them).')

  def test_commands(self):
    commands = [c for c in readme_commands() if c not in SETUP]
    # The quickstart first: predict, inspect and fewshot read its workdir.
    commands.sort(key=lambda c: not re.search(QUICKSTART, c))
    checkpoints = sorted(os.listdir(os.path.join(ROOT, 'checkpoints')))
    for command in commands:
      expected, text = expectation(command)
      with self.subTest(command=command):
        proc, seconds = self.run_command(self.localize(command))
        output = proc.stdout + proc.stderr
        self.assertNotIn('Traceback', output, output[-3000:])
        # libtpu's complaints about a machine without TPU (host.py).
        self.assertNotIn('TPU_WORKER_HOSTNAMES', output)
        self.assertNotIn('InitGoogle', output)
        self.assertIn(text, output, output[-3000:])
        if expected == OK:
          self.assertEqual(proc.returncode, 0, output[-3000:])
        else:
          self.assertNotEqual(proc.returncode, 0, output[-3000:])
          self.assertLess(seconds, FAIL_SECONDS, output[-3000:])
          self.assertTrue(proc.stderr.strip(), 'no message on stderr')
    # Failing downloads leave no partial file in the repository.
    self.assertEqual(
        sorted(os.listdir(os.path.join(ROOT, 'checkpoints'))), checkpoints)


if __name__ == '__main__':
  absltest.main()
