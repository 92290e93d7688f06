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
from typing import Dict, Mapping, Optional, Tuple

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
