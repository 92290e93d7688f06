"""Learning-rate schedules, cadences and small helpers of the training loop."""

from typing import Callable, Optional

import jax
import jax.numpy as jnp

Schedule = Callable[[jax.Array], jax.Array]


def create_learning_rate_schedule(
    *, total_steps: int, base: float, decay_type: str, warmup_steps: int,
    linear_end: float = 1e-5) -> Schedule:
  """Returns lr(step): linear warmup, then cosine or linear decay.

  lr(s) = base * min(1, s / warmup) * decay(p) with p = clip((s - warmup) /
  (total - warmup), 0, 1); decay is 0.5 (1 + cos(pi p)) for 'cosine' and
  interpolates linearly from base to `linear_end` for 'linear'. `s` is the
  1-based number of the step being taken, as in the original release.
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
