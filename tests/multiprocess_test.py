"""Two `main.py` processes (jax.distributed on 127.0.0.1) train like one.

Each process has one CPU device and reads its own block of every global
batch. Two 2-process layouts run against one single-process run with the
same global batch: 'data' (the data axis spans the processes) and 'model'
(the model axis does, so both processes must read the same rows). Their
per-step losses (from the TensorBoard events of process 0) and exported
parameters must match the single process within float32 tolerance.
"""

import glob
import os
import shutil
import socket
import tempfile

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

from tests import resume_test
from tests import train_test

STEPS = 4
_LAYOUTS = {'data': [], 'model': ['--config.mesh.data=1',
                                  '--config.mesh.model=2']}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def train_losses(workdir: str) -> list[float]:
  """'train_loss' per step from the (single) events file in workdir."""
  losses = {}
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == 'train_loss':
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  return [losses[s] for s in sorted(losses)]


@pytest.mark.slow
class MultiProcessTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    tmp = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
    cls.addClassCleanup(shutil.rmtree, tmp)
    data = train_test.write_image_folder(os.path.join(tmp, 'data'))
    config = resume_test.write_config(
        os.path.join(tmp, 'config.py'), data, total_steps=STEPS,
        progress_every=1, checkpoint_every=2, eval_every=STEPS)
    runs = {'single': [[]]}  # name -> extra arguments of each process.
    for name, extra in _LAYOUTS.items():
      address = f'--coordinator_address=127.0.0.1:{free_port()}'
      runs[name] = [[address, '--num_processes=2', f'--process_id={i}']
                    + extra for i in range(2)]
    procs = []  # All start together: they mostly wait on imports.
    for name, per_process in runs.items():
      for i, extra in enumerate(per_process):
        log = os.path.join(tmp, f'{name}{i}.log')
        args = [f'--config={config}', f'--workdir={tmp}/{name}'] + extra
        procs.append((name, log, resume_test.start_main(args, log)))
    cls.exit_codes = {}
    for name, log, proc in procs:
      out = resume_test.finish(proc, log)
      cls.exit_codes.setdefault(name, []).append(proc.returncode)
      if proc.returncode:
        print(f'{log}:\n{out[-3000:]}')
    cls.tmp = tmp

  def workdir(self, name):
    return os.path.join(self.tmp, name)

  def test_all_processes_succeed(self):
    self.assertEqual(self.exit_codes,
                     {'single': [0], 'data': [0, 0], 'model': [0, 0]})

  def test_only_process_zero_writes_events(self):
    for name in _LAYOUTS:
      self.assertLen(glob.glob(os.path.join(
          self.workdir(name), 'events.out.tfevents.*')), 1, msg=name)

  def test_losses_match_single_process(self):
    single = train_losses(self.workdir('single'))
    self.assertLen(single, STEPS)
    self.assertGreater(len(set(single)), 1)  # Training moves.
    for name in _LAYOUTS:
      np.testing.assert_allclose(train_losses(self.workdir(name)), single,
                                 rtol=1e-5, err_msg=name)

  def test_exported_params_match_single_process(self):
    single = np.load(os.path.join(self.workdir('single'), 'model.npz'))
    for name in _LAYOUTS:
      other = np.load(os.path.join(self.workdir(name), 'model.npz'))
      self.assertEqual(sorted(other.files), sorted(single.files))
      for key in single.files:
        np.testing.assert_allclose(other[key], single[key], atol=1e-5,
                                   err_msg=f'{name}: {key}')

  def test_checkpoints_written_once(self):
    for name in _LAYOUTS:
      self.assertEqual(resume_test.complete_steps(self.workdir(name)),
                       [2, STEPS], msg=name)


if __name__ == '__main__':
  absltest.main()
