"""SIGKILL `main.py` anywhere, restart it: the same parameters, bit for bit.

One workdir is killed three times (at random steps, then as soon as orbax
starts writing a checkpoint) and restarted after each kill; its final
`model.npz` must equal, byte for byte, that of an uninterrupted run. Every
restart must really resume (from the newest *complete* checkpoint), else the
comparison would prove nothing. Set RESUME_TEST_SEED to replay kill points.

The helpers here (`write_config`, `start_main`, `finish`) also serve the
other subprocess tests.
"""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

from absl.testing import absltest
import pytest

from tests import train_test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN = os.path.join(ROOT, 'main.py')
TMP_MARK = '.orbax-checkpoint-tmp'
TIMEOUT = 300  # Seconds for one main.py run on a loaded 2-core machine.
STEPS = 10

_CONFIG = '''
from tests import train_test

def get_config():
  config = train_test.tiny_config(%(dataset)r, compilation_cache=%(cache)r)
  for key, value in %(overrides)r.items():
    config[key] = value
  return config.lock()
'''


def shared_cache() -> str:
  """A compilation cache shared by every subprocess of the test session."""
  return os.path.join(absltest.get_default_test_tmpdir(), 'jax_cache')


def write_config(path: str, dataset: str, **overrides) -> str:
  """A config file: train_test.tiny_config(dataset) with `overrides`."""
  with open(path, 'w') as f:
    f.write(_CONFIG % {'dataset': dataset, 'cache': shared_cache(),
                       'overrides': overrides})
  return path


def start_main(args, log_path: str, **env) -> subprocess.Popen:
  """Starts `python main.py args` (own process group), output to log_path."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', **env)
  with open(log_path, 'ab') as log:
    return subprocess.Popen([sys.executable, MAIN] + list(args), cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def finish(proc: subprocess.Popen, log_path: str) -> str:
  """Waits for proc; returns its log. Kills it on timeout."""
  try:
    proc.wait(timeout=TIMEOUT)
  except subprocess.TimeoutExpired:
    kill(proc)
    raise AssertionError(f'main.py timed out:\n{read(log_path)[-3000:]}')
  return read(log_path)


def kill(proc: subprocess.Popen) -> None:
  """SIGKILL to the process group of proc (started by start_main)."""
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  proc.wait(timeout=60)


def read(path: str) -> str:
  with open(path, errors='replace') as f:
    return f.read()


PREFIX = 'checkpoint_'  # {workdir}/checkpoint_{step}, as the original.


def complete_steps(workdir: str) -> list[int]:
  """Steps of the finalized checkpoint directories."""
  if not os.path.isdir(workdir):
    return []
  return sorted(int(n[len(PREFIX):]) for n in os.listdir(workdir)
                if n.startswith(PREFIX) and n[len(PREFIX):].isdigit())


def partial_checkpoints(workdir: str) -> list[str]:
  if not os.path.isdir(workdir):
    return []
  return sorted(n for n in os.listdir(workdir)
                if n.startswith(PREFIX) and TMP_MARK in n)


def kill_when(proc, condition, log_path: str) -> None:
  """Polls `condition()` every 5 ms; SIGKILLs proc when it holds."""
  deadline = time.monotonic() + TIMEOUT
  while not condition():
    if proc.poll() is not None:
      raise AssertionError('main.py ended before the kill point:\n'
                           + read(log_path)[-3000:])
    if time.monotonic() > deadline:
      kill(proc)
      raise AssertionError('kill point never reached')
    time.sleep(0.005)
  kill(proc)


def resumed_step(log: str) -> int | None:
  """The step the last run in `log` resumed from (None: from scratch)."""
  found = re.findall(r'Resuming from the checkpoint of step (\d+)', log)
  return int(found[-1]) if found else None


@pytest.mark.slow
class ResumeTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    tmp = self.create_tempdir().full_path
    data = train_test.write_image_folder(os.path.join(tmp, 'data'))
    self.config = write_config(
        os.path.join(tmp, 'config.py'), data, total_steps=STEPS,
        checkpoint_every=1, eval_every=4, warmup_steps=2)
    self.tmp = tmp
    seed = int(os.environ.get('RESUME_TEST_SEED', random.randrange(10**6)))
    self.rng = random.Random(seed)
    self.seed_note = f'RESUME_TEST_SEED={seed}'

  def start(self, workdir: str, log: str) -> subprocess.Popen:
    return start_main([f'--config={self.config}', f'--workdir={workdir}'],
                      os.path.join(self.tmp, log))

  def kill_at_random_step(self, workdir: str, run: int, low: int,
                          high: int) -> int:
    """Runs until a checkpoint >= a random step in [low, high] exists."""
    target = self.rng.randint(low, high)
    proc = self.start(workdir, f'run{run}.log')
    kill_when(proc, lambda: any(s >= target
                                for s in complete_steps(workdir)),
              os.path.join(self.tmp, f'run{run}.log'))
    return max(complete_steps(workdir))

  def kill_during_checkpoint_write(self, workdir: str, run: int) -> int:
    """Kills as soon as orbax starts a checkpoint newer than the existing."""
    before = max(complete_steps(workdir))
    newer_tmp = lambda: any(  # pylint: disable=g-long-lambda
        int(n[len(PREFIX):].split('.')[0]) > before
        for n in partial_checkpoints(workdir))
    proc = self.start(workdir, f'run{run}.log')
    kill_when(proc, newer_tmp, os.path.join(self.tmp, f'run{run}.log'))
    latest = max(complete_steps(workdir))
    if not partial_checkpoints(workdir):
      # The write finished between the poll and the kill: leave a partial
      # checkpoint as a crash would (metadata, no data) so the restart
      # still faces one.
      tmp = os.path.join(workdir, f'{PREFIX}{latest + 1}{TMP_MARK}')
      shutil.copytree(os.path.join(workdir, f'{PREFIX}{latest}'), tmp)
      shutil.rmtree(os.path.join(tmp, 'default'))
    self.assertNotEmpty(partial_checkpoints(workdir))
    return latest

  def restart(self, workdir: str, run: int, expected_step: int,
              kill_at=None) -> int:
    """Restarts; checks it resumed from expected_step; optionally kills."""
    log = os.path.join(self.tmp, f'run{run}.log')
    if kill_at is None:
      proc = self.start(workdir, f'run{run}.log')
      out = finish(proc, log)
      self.assertEqual(proc.returncode, 0, out[-3000:])
    else:
      kill_at()
      out = read(log)
    self.assertEqual(resumed_step(out), expected_step,
                     f'{self.seed_note}\n{out[-3000:]}')
    return max(complete_steps(workdir))

  def test_sigkill_anywhere_then_restart_is_bitwise_exact(self):
    straight = os.path.join(self.tmp, 'straight')
    killed = os.path.join(self.tmp, 'killed')
    reference = self.start(straight, 'straight.log')  # Runs alongside.
    step = self.kill_at_random_step(killed, 0, 1, 3)
    first = step
    step = self.restart(killed, 1, step, lambda: self.kill_at_random_step(
        killed, 1, first + 1, first + 3))
    step = self.restart(killed, 2, step,
                        lambda: self.kill_during_checkpoint_write(killed, 2))
    self.assertLess(step, STEPS)
    self.assertNotIn(step + 1, complete_steps(killed))  # Never picked up.
    self.restart(killed, 3, step)

    out = finish(reference, os.path.join(self.tmp, 'straight.log'))
    self.assertEqual(reference.returncode, 0, out[-3000:])
    self.assertIsNone(resumed_step(out))
    self.assertEqual(complete_steps(killed)[-1], STEPS)
    with open(os.path.join(straight, 'model.npz'), 'rb') as a, open(
        os.path.join(killed, 'model.npz'), 'rb') as b:
      self.assertTrue(a.read() == b.read(),
                      f'model.npz differs after kills ({self.seed_note})')


if __name__ == '__main__':
  absltest.main()
