"""Process set-up for the command lines: huge pages, and a frozen heap.

XLA:CPU allocates each execution's temporary buffer with malloc in one
block (750 MB for a ViT-Ti/16 train step at batch 16, 1.76 GB for ViT-B/16
at batch 8) and frees it when the step ends. glibc serves blocks that large
with mmap and unmaps them on free, so every step faults its whole temporary
buffer back in, 4 KiB at a time: 186k page faults and ~0.35 s of kernel time
per Ti/16 step, 430k and ~1 s per B/16 step (bench/RESULTS.md). With glibc's
`glibc.malloc.hugetlb=1` tunable, malloc asks for transparent huge pages for
such blocks (madvise), and the same step takes ~900 faults of 2 MiB.

The tunable is read once, when the process starts, so a command line that
opts in re-runs itself with it (`rerun_with_huge_pages`) before JAX starts:
`python -m vit_jax.main --cpu_tuning` (off by default: the process, its
config file and any `%run` in a notebook would run twice), and the speed
benchmark, which says so in its JSON (`glibc_tunables`). Set
`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` to keep 4 KiB pages (a hugetlb
value of your own is never overridden). Only the standard library here:
importing this must stay instant; library code never calls it.

`freeze_imported_objects` serves the first compile: see its docstring.
"""

import gc
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

  Only for `if __name__ == '__main__':` blocks of command lines, before the
  heavy imports: library code must never call it.
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


CPU_TUNING_FLAG = '--cpu_tuning'


def prepare_command(argv: Sequence[str] = (), *, default: bool = False,
                    xla_flags: bool = True) -> bool:
  """The prologue of every command line; returns whether CPU tuning is on.

  Call first thing under `if __name__ == '__main__':`, before the heavy
  imports. CPU tuning (`--cpu_tuning` in argv, or `default`; `--no_cpu_
  tuning` / `--nocpu_tuning` turn a default off) re-runs the process with
  huge pages and sets `XLA_CPU_FLAGS` (unless `xla_flags` is False: a
  command that takes its own XLA flags sets them); the command then calls
  `freeze_imported_objects()` after its imports. Without it nothing about
  the process changes.
  """
  argv = list(argv)
  tuning = default
  if any(a in argv for a in (CPU_TUNING_FLAG, CPU_TUNING_FLAG + '=true')):
    tuning = True
  if any(a in argv for a in ('--no_cpu_tuning', '--nocpu_tuning',
                             CPU_TUNING_FLAG + '=false')):
    tuning = False
  if tuning:
    rerun_with_huge_pages()
    if xla_flags:
      set_xla_flags()
  return tuning


# What libtpu prints on fd 2 when it is installed (jax[tpu]; this project's
# test extra) on a machine without TPU chips, while JAX tries and fails to
# start a 'tpu' backend: unset TPU_WORKER_HOSTNAMES and accelerator type,
# "Logging before InitGoogle()", a source location trace.
_NO_TPU_NOISE = ('TPU', 'InitGoogle', 'Source Location Trace', 'libtpu')


def _tpu_chips_present() -> bool:
  try:
    from jax._src import hardware_utils  # pylint: disable=g-import-not-at-top
    return hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0
  except Exception:  # pylint: disable=broad-except
    return False  # Private API moved: assume none, as on most machines.


def start_backends() -> None:
  """Starts JAX's backends, without libtpu's noise where there is no TPU.

  For the command lines, after `jax.distributed.initialize` (which must
  come first) and before anything else touches a device. Where libtpu is
  installed, JAX_PLATFORMS is unset and the machine has no TPU chip, fd 2
  is captured while the backends start and replayed without libtpu's lines
  (unless a TPU backend did come up, or starting failed). Elsewhere this is
  `jax.devices()`.
  """
  import importlib.util  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  if (os.environ.get('JAX_PLATFORMS') or importlib.util.find_spec('libtpu')
      is None or _tpu_chips_present()):
    jax.devices()
    return
  sys.stderr.flush()
  console = os.dup(2)
  platforms = set()
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      platforms = {d.platform for d in jax.devices()}
    finally:
      sys.stderr.flush()
      os.dup2(console, 2)
      os.close(console)
      captured.seek(0)
      lines = captured.read().decode(errors='replace').splitlines(True)
      if platforms and 'tpu' not in platforms:
        lines = [l for l in lines if not any(m in l for m in _NO_TPU_NOISE)]
      sys.stderr.write(''.join(lines))
      sys.stderr.flush()
