"""Learning-rate schedules, cadences and small helpers of the training loop."""

import os
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp

Schedule = Callable[[jax.Array], jax.Array]

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
    logging.info('Not setting %s: measured only on jaxlib %s.', xla_flags,
                 XLA_CPU_FLAGS_JAXLIB)
    return present
  extra = [f for f in xla_flags if f.split('=')[0] not in present]
  if extra:
    os.environ['XLA_FLAGS'] = ' '.join([present] + extra).strip()
  return os.environ.get('XLA_FLAGS', '')


def create_learning_rate_schedule(
    *, total_steps: int, base: float, decay_type: str, warmup_steps: int,
    linear_end: float = 1e-5) -> Schedule:
  """Returns lr(step): linear warmup, then cosine or linear decay.

  lr(s) = base * min(1, s / warmup) * decay(p) with p = clip((s - warmup) /
  (total - warmup), 0, 1); decay is 0.5 (1 + cos(pi p)) for 'cosine' and
  interpolates linearly from base to `linear_end` for 'linear'. `s` is the
  number of updates applied before this one (optax's count, from 0), as in
  the original release: the first update has lr 0 when warming up.
  """
  if decay_type not in ('cosine', 'linear'):
    raise ValueError(f"decay_type={decay_type!r}; use 'cosine' or 'linear'.")

  def step_fn(step):
    step = jnp.asarray(step, jnp.float32)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    progress = jnp.clip(progress, 0.0, 1.0)
    if decay_type == 'cosine':
      lr = base * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    else:
      lr = linear_end + (base - linear_end) * (1.0 - progress)
    if warmup_steps:
      lr = lr * jnp.minimum(1.0, step / warmup_steps)
    return lr

  return step_fn


def itstime(step: int, every: Optional[int], total: int, *,
            last: bool = True) -> bool:
  """True at every `every`-th step and (if `last`) at the final step.

  `every` of 0 or None never fires (except at the end if `last`).
  """
  if last and step == total:
    return True
  return bool(every) and step % every == 0
