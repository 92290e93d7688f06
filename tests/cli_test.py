"""Tests of the one command prologue/epilogue (vit_jax/cli.py)."""

import contextlib
import glob
import io
import os
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import pytest

from vit_jax import cli
from vit_jax import errors
from vit_jax import host

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SplitCpuTuningTest(parameterized.TestCase):

  @parameterized.parameters(
      ([], False, False), (['--cpu_tuning'], False, True),
      (['--no_cpu_tuning'], True, False), (['--nocpu_tuning'], True, False),
      (['--cpu_tuning', '--no_cpu_tuning'], False, False),
      (['--no_cpu_tuning', '--cpu_tuning'], True, True), ([], True, True))
  def test_spellings_default_and_last_one_wins(self, argv, default, tuning):
    got, rest = cli.split_cpu_tuning(['a', *argv, '--b', '1', 'c'],
                                     default=default)
    self.assertEqual((got, rest), (tuning, ['a', '--b', '1', 'c']))

  def test_arguments_after_double_dash_are_left_alone(self):
    self.assertEqual(cli.split_cpu_tuning(['x', '--', '--cpu_tuning']),
                     (False, ['x', '--', '--cpu_tuning']))

  def test_other_flags_are_not_taken(self):
    argv = ['--cpu_tuning_x', '--config.cpu_tuning=1', '--cpu', '-h']
    self.assertEqual(cli.split_cpu_tuning(argv), (False, argv))

  def test_a_value_is_a_flags_error(self):
    with self.assertRaisesRegex(cli.FlagsError, 'cpu_tuning.*false'):
      cli.split_cpu_tuning(['--cpu_tuning=false'])


class MainTest(absltest.TestCase):
  """cli.main: what the body sees, the exit status, the one-line error."""

  def setUp(self):
    super().setUp()
    # The test process has JAX_PLATFORMS=cpu (conftest): no platform change.
    self.tune = self.enter_context(mock.patch.object(host, 'tune_process'))

  def _main(self, body, argv, **kwargs):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      status = cli.main('vit_jax.x', body, argv, start_backends=False,
                        **kwargs)
    return status, err.getvalue()

  def test_body_gets_the_arguments_without_the_tuning_flag(self):
    seen = []
    status, err = self._main(lambda a: seen.append(a), ['--cpu_tuning', 'f'])
    self.assertEqual((status, err, seen), (0, '', [['f']]))
    self.tune.assert_called_once_with(xla_flags=True)

  def test_no_tuning_unless_asked_and_the_bodys_status(self):
    status, _ = self._main(lambda a: 3, [])
    self.assertEqual(status, 3)
    self.tune.assert_not_called()

  def test_tuning_on_by_default_and_told_to_the_body(self):
    seen = []
    self._main(lambda a, cpu_tuning: seen.append(cpu_tuning), [],
               cpu_tuning_default=True, xla_flags=False, tell_cpu_tuning=True)
    self._main(lambda a, cpu_tuning: seen.append(cpu_tuning),
               ['--no_cpu_tuning'], cpu_tuning_default=True,
               tell_cpu_tuning=True)
    self.assertEqual(seen, [True, False])
    self.tune.assert_called_once_with(xla_flags=False)

  def test_user_error_is_one_line_and_status_1(self):

    def body(args):
      raise errors.UserError('bad thing at a.npz: pass --model.')

    self.assertEqual(self._main(body, []),
                     (1, 'vit_jax.x: bad thing at a.npz: pass --model.\n'))

  def test_other_errors_keep_their_traceback(self):

    def body(args):
      raise ValueError('a bug')  # Not a UserError: not caught.

    with self.assertRaisesRegex(ValueError, 'a bug'):
      self._main(body, [])

  def test_argument_parser_errors_are_user_errors(self):

    def body(args):
      parser = cli.ArgumentParser(prog='x')
      parser.add_argument('--n', type=int, required=True)
      parser.parse_args(args)

    status, err = self._main(body, ['--n=two'])
    self.assertEqual(status, 1)
    self.assertEqual(err, "vit_jax.x: argument --n: invalid int value: 'two' "
                     '(--help lists the options).\n')
    self.assertEqual(cli.ArgumentParser().epilog, cli.CPU_TUNING_HELP)


class ChoosePlatformsTest(absltest.TestCase):

  def _choose(self, environ, platforms=None, without_tpu='cpu'):
    import jax  # pylint: disable=g-import-not-at-top
    with mock.patch.dict(os.environ, environ, clear=True), mock.patch.object(
        host, 'platforms_without_tpu', return_value=without_tpu), \
        mock.patch.object(jax.config, 'update') as update:
      chosen = cli.choose_platforms(platforms)
    return chosen, [c.args for c in update.call_args_list]

  def test_users_jax_platforms_wins(self):
    self.assertEqual(self._choose({'JAX_PLATFORMS': 'tpu'}, 'cpu'),
                     (None, []))

  def test_libtpu_without_tpu_skips_the_tpu_backend(self):
    self.assertEqual(self._choose({}), ('cpu', [('jax_platforms', 'cpu')]))

  def test_the_commands_own_choice(self):
    self.assertEqual(self._choose({}, 'cpu', without_tpu=None),
                     ('cpu', [('jax_platforms', 'cpu')]))

  def test_otherwise_jax_chooses(self):
    self.assertEqual(self._choose({}, without_tpu=None), (None, []))


class NoRedirectionTest(absltest.TestCase):

  def test_no_module_redirects_a_file_descriptor(self):
    # Output of native code reaches the console as written (a crash keeps
    # its last words), and no private JAX module is reached into for it.
    for path in glob.glob(os.path.join(REPO, 'vit_jax', '**', '*.py'),
                          recursive=True):
      with open(path) as f:
        text = f.read()
      self.assertNotRegex(text, r'os\.dup2?\(|_src\.hardware_utils', path)


# Each command with a bad flag: its message, as `prog: message` on one line.
_BAD_FLAG = {
    'vit_jax.main': ['main.py', '--config=configs/vit.py:testing,cifar10',
                     '--workdir=/nonexistent/w', '--bogus=1'],
    'vit_jax.plan': ['-m', 'vit_jax.plan', '--bogus=1'],
    'vit_jax.predict': ['-m', 'vit_jax.predict', 'a.png', '--checkpoint=c',
                        '--bogus=1'],
    'vit_jax.fewshot': ['-m', 'vit_jax.fewshot', '--checkpoint=c',
                        '--dataset=d', '--bogus=1'],
    'vit_jax.benchmark': ['-m', 'vit_jax.benchmark', '--bogus=1',
                          '--no_cpu_tuning'],
    'vit_jax.inspect': ['-m', 'vit_jax.inspect', '--bogus=1'],
    'vit_jax.inspect.benchmark': ['-m', 'vit_jax.inspect.benchmark',
                                  '--bogus=1', '--no_cpu_tuning'],
    'vit_jax.checkpoint': ['-m', 'vit_jax.checkpoint', 'inspect', 'a.npz',
                           '--bogus=1'],
    'vit_jax.export': ['-m', 'vit_jax.export', '--checkpoint=c',
                       '--format=onnx', '--out=o', '--bogus=1'],
}


@pytest.mark.slow  # Nine processes importing JAX: ~20 s on 2 cores.
class EveryCommandTest(absltest.TestCase):

  def test_a_bad_flag_is_one_line_prog_message_and_status_1(self):
    env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
    procs = {prog: subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for prog, args in _BAD_FLAG.items()}
    for prog, proc in procs.items():
      _, err = proc.communicate(timeout=300)
      self.assertEqual(proc.returncode, 1, (prog, err))
      self.assertRegex(err, rf'\A{prog}: .*bogus.*\n\Z', prog)


if __name__ == '__main__':
  absltest.main()
