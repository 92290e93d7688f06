"""Process set-up for the command lines (`cli.main` calls it; library code
never does): opt-in CPU tuning, and which JAX platforms to start.

CPU tuning (`--cpu_tuning`) re-runs the process with glibc's
`glibc.malloc.hugetlb=1` tunable, so that malloc backs XLA:CPU's large
per-step temporary buffers with transparent huge pages instead of faulting
them in 4 KiB at a time on every step; the tunable is read once, at process
start, hence the re-run. It also sets XLA:CPU flags and freezes the heap
after the imports. bench/RESULTS.md has the measurements. Set
`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` to keep 4 KiB pages (a hugetlb value
of your own is never overridden).

`platforms_without_tpu` keeps libtpu's start-up complaints off machines
without a TPU by naming the platforms JAX should start. Only the standard
library at import: importing this must stay instant.
"""

import gc
import glob
import importlib.util
import logging
import os
import platform
import sys
from typing import Dict, Mapping, Optional, Sequence, Tuple

_log = logging.getLogger(__name__)
HUGE_PAGES_TUNABLE = 'glibc.malloc.hugetlb=1'
THP_MODE_PATH = '/sys/kernel/mm/transparent_hugepage/enabled'
_MIN_GLIBC = (2, 35)  # The first glibc with glibc.malloc.hugetlb.


def huge_pages_environ(
    environ: Mapping[str, str] = os.environ, *,
    libc: Optional[Tuple[str, str]] = None,
    thp_mode_path: str = THP_MODE_PATH,
    system: str = sys.platform) -> Optional[Dict[str, str]]:
  """The environment to re-run with, or None when there is nothing to gain.

  None unless this is Linux with glibc >= 2.35, the kernel gives transparent
  huge pages on request ('[madvise]'; with '[always]' they are already on,
  with '[never]' never), and $GLIBC_TUNABLES does not set
  glibc.malloc.hugetlb yet (the user's choice, or this process's re-run).
  """
  if system != 'linux':
    return None
  name, version = libc if libc is not None else platform.libc_ver()
  try:
    if name != 'glibc' or tuple(
        int(v) for v in version.split('.')[:2]) < _MIN_GLIBC:
      return None
  except ValueError:
    return None
  tunables = environ.get('GLIBC_TUNABLES', '')
  if 'glibc.malloc.hugetlb' in tunables:
    return None
  try:
    with open(thp_mode_path) as f:
      if '[madvise]' not in f.read():
        return None
  except OSError:
    return None
  env = dict(environ)
  env['GLIBC_TUNABLES'] = ':'.join(t for t in (tunables, HUGE_PAGES_TUNABLE)
                                   if t)
  return env


def rerun_with_huge_pages() -> None:
  """Replaces this process (same pid, arguments and interpreter options) by
  one whose malloc uses transparent huge pages; returns when not needed.

  Only for the command prologue (`cli.main`): library code must never call
  it.
  """
  env = huge_pages_environ()
  if env is None:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, env)
  except OSError as e:  # E.g. a sandbox without exec: run as we are.
    logging.warning('Not re-running with %s: %s', HUGE_PAGES_TUNABLE, e)


def freeze_imported_objects() -> None:
  """Exempts every object alive now from Python's cyclic garbage collector.

  For command lines, once their imports are done and before their first jit
  compile. JAX's tracing and lowering create objects fast enough to set off
  full collections, and each of those walks the ~480k objects that importing
  jax, flax and tensorflow leaves behind: 0.28 s of the 0.5 s lowering of
  the ViT-B/16 train step, also when the compiled step then comes from the
  persistent compilation cache. Objects created later are collected as
  usual. Library code never calls this: in a notebook, frozen objects would
  stay in memory for good.
  """
  gc.freeze()


def freeze_late_imports() -> None:
  """Where CPU tuning froze the heap (the command prologue), freezes what a
  command imported since, before its first compile; elsewhere nothing."""
  if gc.get_freeze_count():
    gc.freeze()


# XLA:CPU flags for ViT, measured on jaxlib 0.10 (bench/RESULTS.md): route
# dots, reductions and elementwise ops through XLA's own emitters and Eigen
# rather than YNNPACK fusions (YNNPACK keeps only the patch-embedding conv).
# YNNPACK fused each attention (two batched dots and the softmax) into one
# kernel that ran at ~24 GFLOP/s; without it ViT-Ti/16 inference is 1.9x and
# ViT-B/16 inference 1.1x faster, training unchanged. They only touch the
# CPU backend. The flag is experimental, and XLA aborts on unknown flags, so
# it is set only for jaxlib versions where it was measured.
XLA_CPU_FLAGS = (
    '--xla_cpu_experimental_ynn_fusion_type='
    '-individual_dot,-dot,-reduce,-eltwise',)
XLA_CPU_FLAGS_JAXLIB = ((0, 10),)  # (major, minor) versions measured.


def set_xla_flags(xla_flags: Sequence[str] = XLA_CPU_FLAGS) -> str:
  """Adds `xla_flags` to $XLA_FLAGS; returns the resulting value.

  Call before JAX creates its backends (the first `jax.devices()` or
  computation); later calls have no effect on the running process. A flag
  already present in $XLA_FLAGS wins, so users can override any of these.
  The default flags are skipped on jaxlib versions they were not measured on.
  """
  import jaxlib  # pylint: disable=g-import-not-at-top
  present = os.environ.get('XLA_FLAGS', '')
  version = tuple(int(v) for v in jaxlib.__version__.split('.')[:2])
  if (tuple(xla_flags) == XLA_CPU_FLAGS and
      version not in XLA_CPU_FLAGS_JAXLIB):
    _log.info('Not setting %s: measured only on jaxlib %s.', xla_flags,
              XLA_CPU_FLAGS_JAXLIB)
    return present
  extra = [f for f in xla_flags if f.split('=')[0] not in present]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([present] + extra).strip()
  return os.environ.get('XLA_FLAGS', '')


def tune_process(*, xla_flags: bool = True) -> None:
  """CPU tuning, all of it: huge pages (re-runs the process), the XLA:CPU
  flags (unless `xla_flags` is False: a command that takes its own XLA flags
  sets them) and a frozen heap. For `cli.main` only, once the command's
  imports are done and before JAX creates its backends.
  """
  rerun_with_huge_pages()
  if xla_flags:
    set_xla_flags()
  freeze_imported_objects()


# Where a TPU shows itself without starting any runtime: TPU v4 and later
# VMs have /dev/accel*, v5e/v6e VMs /dev/vfio/*, and every TPU chip is a PCI
# device of Google's vendor id. GPUs: NVIDIA's device nodes (WSL2: dxg) and
# ROCm's kfd.
GOOGLE_PCI_VENDOR = '0x1ae0'
_GPU_NODES = ('nvidia0', 'nvidiactl', 'dxg', 'kfd')


def tpu_device_present(*, dev_dir: str = '/dev',
                       pci_dir: str = '/sys/bus/pci/devices') -> bool:
  """Whether this machine shows a TPU (device nodes or a Google PCI device);
  reads a few files, starts nothing."""
  if glob.glob(os.path.join(dev_dir, 'accel*')) or glob.glob(
      os.path.join(dev_dir, 'vfio', '*')):
    return True
  for vendor in glob.glob(os.path.join(pci_dir, '*', 'vendor')):
    try:
      with open(vendor) as f:
        if f.read().strip() == GOOGLE_PCI_VENDOR:
          return True
    except OSError:
      continue
  return False


def platforms_without_tpu(
    environ: Mapping[str, str] = os.environ, *,
    libtpu_installed: Optional[bool] = None, dev_dir: str = '/dev',
    pci_dir: str = '/sys/bus/pci/devices') -> Optional[str]:
  """'cpu' when JAX would try, and fail, to start a TPU backend; else None.

  That is: libtpu is installed (jax[tpu], this project's test extra), the
  user has not set JAX_PLATFORMS, and the machine shows neither a TPU nor a
  GPU (naming 'cuda' where none is would be fatal, so a GPU machine keeps
  JAX's default). libtpu then prints a dozen lines about unset
  TPU_WORKER_HOSTNAMES on stderr while JAX probes it; with the value
  returned here as `jax_platforms`, JAX never loads it. libtpu's
  compile-only path (`jax.experimental.topologies`, the planner) does not
  need the TPU backend and keeps working.
  """
  if environ.get('JAX_PLATFORMS'):
    return None
  if libtpu_installed is None:  # The wheel, or a libtpu.so of your own.
    libtpu_installed = (importlib.util.find_spec('libtpu') is not None or
                        bool(environ.get('TPU_LIBRARY_PATH')))
  if not libtpu_installed or tpu_device_present(dev_dir=dev_dir,
                                                pci_dir=pci_dir):
    return None
  if any(os.path.exists(os.path.join(dev_dir, n)) for n in _GPU_NODES):
    return None
  return 'cpu'
