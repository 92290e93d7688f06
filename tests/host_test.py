"""Tests for the process set-up of the command lines (vit_jax/host.py)."""

import gc
import json
import os
import subprocess
import sys
import tempfile
import weakref
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import pytest

from vit_jax import host

_GLIBC = ('glibc', '2.36')
_MADVISE = 'always [madvise] never\n'


def _environ(mode=_MADVISE, environ=None, libc=_GLIBC, system='linux'):
  with tempfile.NamedTemporaryFile('w', suffix='.thp') as f:
    f.write(mode)
    f.flush()
    return host.huge_pages_environ(
        {'HOME': '/h'} if environ is None else environ, libc=libc,
        thp_mode_path=f.name, system=system)


def _without_tunables():
  return {k: v for k, v in os.environ.items() if k != 'GLIBC_TUNABLES'}


class HugePagesEnvironTest(parameterized.TestCase):

  def test_adds_the_tunable_and_keeps_the_environment(self):
    self.assertEqual(_environ(), {'HOME': '/h',
                                  'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'})

  def test_appends_to_the_users_tunables(self):
    env = _environ(environ={'GLIBC_TUNABLES': 'glibc.malloc.arena_max=2'})
    self.assertEqual(env['GLIBC_TUNABLES'],
                     'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1')

  @parameterized.named_parameters(
      ('user_opted_out', dict(
          environ={'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=0'})),
      ('already_rerun', dict(
          environ={'GLIBC_TUNABLES': 'glibc.malloc.hugetlb=1'})),
      ('thp_always_on', dict(mode='[always] madvise never\n')),
      ('thp_off', dict(mode='always madvise [never]\n')),
      ('glibc_too_old', dict(libc=('glibc', '2.31'))),
      ('not_glibc', dict(libc=('', ''))),
      ('odd_version', dict(libc=('glibc', 'x.y'))),
      ('macos', dict(system='darwin')),
  )
  def test_nothing_to_gain(self, kwargs):
    self.assertIsNone(_environ(**kwargs))

  def test_no_thp_file(self):
    self.assertIsNone(host.huge_pages_environ(
        {}, libc=_GLIBC, thp_mode_path='/nonexistent/enabled',
        system='linux'))


@absltest.skipIf(host.huge_pages_environ(_without_tunables()) is None,
                 'No transparent huge pages on request on this machine.')
class RerunTest(absltest.TestCase):

  def _run(self, args, **env):
    return subprocess.run(
        [sys.executable] + args, capture_output=True, text=True, check=True,
        timeout=600, env=dict(_without_tunables(), **env)).stdout

  def test_reruns_once_in_the_same_process(self):
    code = ('import os, sys; print(os.getpid(), sys.argv[1:], '
            "os.environ.get('GLIBC_TUNABLES'), flush=True); "
            'from vit_jax import host; host.rerun_with_huge_pages()')
    lines = self._run(['-c', code, 'a', '--b=1']).splitlines()
    self.assertLen(lines, 2)
    first, second = (line.split(' ', 1) for line in lines)
    self.assertEqual(first[0], second[0])  # Same pid: exec, not a child.
    self.assertEqual(first[1], "['a', '--b=1'] None")
    self.assertEqual(second[1], "['a', '--b=1'] glibc.malloc.hugetlb=1")
    # An explicit choice is kept: no re-run.
    lines = self._run(['-c', code], GLIBC_TUNABLES='glibc.malloc.hugetlb=0')
    self.assertLen(lines.splitlines(), 1)

  @pytest.mark.slow
  def test_benchmark_step_buffers_stop_faulting(self):
    """XLA's per-step temporary buffer is faulted in as 2 MiB pages."""
    cmd = ['-m', 'vit_jax.benchmark', '--model=ViT-Ti_16', '--res=64',
           '--batch=32', '--steps=2', '--warmup=1', '--no_peak',
           '--cache_dir=']
    huge = json.loads(self._run(cmd, JAX_PLATFORMS='cpu').splitlines()[-1])
    small = json.loads(self._run(cmd, JAX_PLATFORMS='cpu',
                                 GLIBC_TUNABLES='glibc.malloc.hugetlb=0'
                                 ).splitlines()[-1])
    self.assertEqual(huge['glibc_tunables'], 'glibc.malloc.hugetlb=1')
    # ~29k faults of 4 KiB per step without huge pages, a few hundred with.
    self.assertGreater(small['page_faults_per_step'], 10_000)
    self.assertLess(huge['page_faults_per_step'],
                    small['page_faults_per_step'] / 10)
    self.assertEqual(huge['losses'], small['losses'])


class _Node:
  """An object that can refer to itself (a reference cycle)."""


class FreezeTest(absltest.TestCase):

  def test_freezes_what_exists_and_still_collects_new_cycles(self):
    self.addCleanup(gc.unfreeze)
    old = _Node()
    old.self = old
    old_ref = weakref.ref(old)
    host.freeze_imported_objects()
    self.assertGreater(gc.get_freeze_count(), 1000)
    new = _Node()
    new.self = new
    new_ref = weakref.ref(new)
    del old, new
    gc.collect()
    self.assertIsNotNone(old_ref())  # Frozen: no longer collected.
    self.assertIsNone(new_ref())  # Created later: collected as usual.
    gc.unfreeze()
    gc.collect()
    self.assertIsNone(old_ref())

  def test_late_imports_are_frozen_only_after_the_prologue_froze(self):
    self.addCleanup(gc.unfreeze)
    gc.unfreeze()
    host.freeze_late_imports()  # No CPU tuning: nothing changes.
    self.assertEqual(gc.get_freeze_count(), 0)
    host.freeze_imported_objects()
    frozen = gc.get_freeze_count()
    late = [_Node() for _ in range(1000)]
    host.freeze_late_imports()
    self.assertGreaterEqual(gc.get_freeze_count(), frozen + len(late))


class PlatformsWithoutTpuTest(parameterized.TestCase):
  """host.platforms_without_tpu: 'cpu' only where JAX would probe libtpu
  on a machine that shows no TPU (and no GPU)."""

  def _machine(self, *, dev=(), pci=()):
    """A fake /dev with `dev` entries and a PCI tree of `pci` vendor ids."""
    root = self.create_tempdir().full_path
    dev_dir, pci_dir = os.path.join(root, 'dev'), os.path.join(root, 'pci')
    os.makedirs(dev_dir)
    for name in dev:
      path = os.path.join(dev_dir, name)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      open(path, 'w').close()
    for i, vendor in enumerate(pci):
      os.makedirs(os.path.join(pci_dir, f'0000:00:0{i}.0'))
      with open(os.path.join(pci_dir, f'0000:00:0{i}.0', 'vendor'), 'w') as f:
        f.write(vendor + '\n')
    return dict(dev_dir=dev_dir, pci_dir=pci_dir)

  def test_libtpu_without_tpu_gives_cpu(self):
    machine = self._machine(pci=('0x1af4', '0x8086'))
    self.assertEqual(host.platforms_without_tpu(
        {}, libtpu_installed=True, **machine), 'cpu')
    self.assertFalse(host.tpu_device_present(**machine))

  @parameterized.named_parameters(
      ('accel', dict(dev=('accel0',))),
      ('vfio', dict(dev=('vfio/0',))),
      ('google_pci', dict(pci=('0x8086', '0x1ae0'))),
      ('nvidia_gpu', dict(dev=('nvidia0',))),
      ('rocm_gpu', dict(dev=('kfd',))))
  def test_a_tpu_or_gpu_keeps_jaxs_choice(self, kwargs):
    machine = self._machine(**kwargs)
    self.assertIsNone(host.platforms_without_tpu(
        {}, libtpu_installed=True, **machine))

  def test_users_jax_platforms_wins(self):
    machine = self._machine()
    self.assertIsNone(host.platforms_without_tpu(
        {'JAX_PLATFORMS': 'tpu'}, libtpu_installed=True, **machine))

  def test_without_libtpu_nothing_to_skip(self):
    machine = self._machine()
    self.assertIsNone(host.platforms_without_tpu(
        {}, libtpu_installed=False, **machine))

  def test_real_libtpu_on_this_machine_is_quiet(self):
    """A fresh process through the command prologue: no libtpu line, no fd
    redirection (a line written to fd 2 comes through)."""
    import importlib.util  # pylint: disable=g-import-not-at-top
    if importlib.util.find_spec('libtpu') is None:
      self.skipTest('libtpu is not installed (the test extra brings it on '
                    'Linux x86-64)')
    if host.platforms_without_tpu({}) is None:
      self.skipTest('this machine has a TPU or a GPU')
    env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
    code = ('import os, jax; from vit_jax import cli\n'
            'def body(args):\n'
            '  os.write(2, b"native line\\n")\n'
            '  print([d.platform for d in jax.devices()])\n'
            'raise SystemExit(cli.main("t", body, []))\n')
    proc = subprocess.run([sys.executable, '-c', code], env=env,
                          capture_output=True, text=True, timeout=120)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    self.assertEqual(proc.stdout, "['cpu']\n")
    self.assertEqual(proc.stderr, 'native line\n')


if __name__ == '__main__':
  absltest.main()
