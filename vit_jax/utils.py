"""Learning-rate schedule, gradient accumulation, cadences and the train.log
handler: the small helpers of the training loop."""

import contextlib
import logging as python_logging
import os
import time
from typing import Any, Callable, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp

Schedule = Callable[[jax.Array], jax.Array]

def enable_compilation_cache(path: Optional[str],
                             workdir: Optional[str] = None, *,
                             min_compile_time_secs: float = 0.5) -> str:
  """Turns on JAX's persistent compilation cache in `path` ('' or None: off).

  `~` is expanded; a relative path is taken inside `workdir`. Returns the
  directory used ('' when off). A process-wide JAX setting: the command
  lines call it, library functions do not.
  """
  if not path:
    return ''
  path = os.path.expanduser(path)
  if not os.path.isabs(path) and workdir:
    path = os.path.join(workdir, path)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs',
                    min_compile_time_secs)
  if not min_compile_time_secs:
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
  return path


# lr(progress, base, linear_end) of each decay, for progress in [0, 1].
_DECAYS = {
    'cosine': lambda p, base, end: base * 0.5 * (1.0 + jnp.cos(jnp.pi * p)),
    'linear': lambda p, base, end: end + (base - end) * (1.0 - p),
}
DECAY_TYPES = tuple(_DECAYS)  # Checked in config_validation.


def create_learning_rate_schedule(total_steps: int, base: float,
                                  decay_type: str, warmup_steps: int,
                                  linear_end: float = 1e-5) -> Schedule:
  """Returns lr(step): linear warmup, then cosine or linear decay.

  lr(s) = base * min(1, s / warmup) * decay(p) with p = clip((s - warmup) /
  (total - warmup), 0, 1); decay is 0.5 (1 + cos(pi p)) for 'cosine' and
  interpolates linearly from base to `linear_end` for 'linear'. `s` is the
  number of updates applied before this one (optax's count, from 0), as in
  the original release: the first update has lr 0 when warming up.
  `decay_type` is one of DECAY_TYPES (ValueError otherwise, as there).
  """
  if decay_type not in _DECAYS:
    raise ValueError(f'Unknown lr type {decay_type!r}: use one of '
                     f'{", ".join(DECAY_TYPES)}.')
  decay = _DECAYS[decay_type]

  def step_fn(step):
    step = jnp.asarray(step, jnp.float32)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    lr = decay(jnp.clip(progress, 0.0, 1.0), base, linear_end)
    if warmup_steps:
      lr = lr * jnp.minimum(1.0, step / warmup_steps)
    return lr

  return step_fn


def accumulate_gradient(loss_and_grad_fn: Callable[..., Any], params: Any,
                        images: jax.Array, labels: jax.Array,
                        accum_steps: int, *, strided: bool = False,
                        sharding: Any = None,
                        rng: Optional[jax.Array] = None
                        ) -> Tuple[jax.Array, Any]:
  """Mean (loss, gradient) of `loss_and_grad_fn` over `accum_steps` pieces.

  `loss_and_grad_fn(params, images, labels)` returns (loss, grads) of one
  micro-batch. As in the original, micro-batch k holds the k-th contiguous
  block of rows. With `strided`, it holds rows k, k + accum_steps, ...
  instead: the reshape (B, ...) -> (B / accum_steps, accum_steps, ...) keeps
  a data-sharded leading axis in place (`sharding` constrains it), so no
  device exchanges examples, and the micro-batches do not depend on the
  number of devices. Gradients are summed in float32. With `rng`, the
  function is called as `loss_and_grad_fn(params, images, labels, key)`
  with `key = fold_in(rng, k)` for micro-batch k (fresh dropout per
  micro-batch; the original reused one key), or `rng` itself when
  accum_steps is 1.
  """
  keys = (lambda k: ()) if rng is None else (
      lambda k: (jax.random.fold_in(rng, k),))
  if not accum_steps or accum_steps == 1:  # The key as given.
    return loss_and_grad_fn(params, images, labels,
                            *(() if rng is None else (rng,)))
  if images.shape[0] % accum_steps:
    raise ValueError(f'Bad accum_steps {accum_steps} for batch size '
                     f'{images.shape[0]}.')

  def split(x):
    if strided:  # Micro-batch k is x[:, k].
      x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
      if sharding is not None:
        x = jax.lax.with_sharding_constraint(x, sharding)
      return x
    return x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:])

  images, labels = split(images), split(labels)
  take = (lambda x, k: x[:, k]) if strided else (lambda x, k: x[k])

  def body(carry, k):
    loss_sum, grad_sum = carry
    loss, grads = loss_and_grad_fn(params, take(images, k), take(labels, k),
                                   *keys(k))
    grad_sum = jax.tree.map(lambda s, g: s + g.astype(s.dtype), grad_sum,
                            grads)
    return (loss_sum + loss, grad_sum), None

  zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
  (loss, grads), _ = jax.lax.scan(body, (jnp.float32(0), zeros),
                                  jnp.arange(accum_steps))
  return loss / accum_steps, jax.tree.map(lambda g: g / accum_steps, grads)


class GFileHandler(python_logging.StreamHandler):
  """A logging handler that appends records to a file via `tf.io.gfile`.

  So that `train.log` can live next to the checkpoints, also on gs://.
  Records are flushed at most `flush_secs` after they were written.
  """

  def __init__(self, filename: str, mode: str = 'a',
               flush_secs: float = 1.0):
    super().__init__()
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.io.gfile.makedirs(os.path.dirname(filename) or '.')
    if mode == 'a' and not tf.io.gfile.exists(filename):
      mode = 'w'
    self.filehandle = tf.io.gfile.GFile(filename, mode)
    self.flush_secs = flush_secs
    self._last_flush = time.monotonic()

  def flush(self):
    self.filehandle.flush()
    self._last_flush = time.monotonic()

  def emit(self, record):
    self.filehandle.write(self.format(record) + '\n')
    if time.monotonic() - self._last_flush >= self.flush_secs:
      self.flush()

  def close(self):
    self.filehandle.close()
    super().close()


def add_gfile_logger(workdir: str, *, basename: str = 'train',
                     level: int = python_logging.INFO) -> GFileHandler:
  """Also writes Python (absl) logging to `{workdir}/{basename}.log`.

  Returns the handler: `logging.getLogger().removeHandler(h); h.close()`
  detaches it.
  """
  handler = GFileHandler(f'{workdir}/{basename}.log', 'a')
  handler.setLevel(level)
  handler.setFormatter(logging.PythonFormatter())
  python_logging.getLogger('').addHandler(handler)
  return handler


def itstime(step: int, every: Optional[int], total: int, *,
            last: bool = True) -> bool:
  """True at every `every`-th step and (if `last`) at the final step.

  `every` of 0 or None never fires (except at the end if `last`).
  """
  if last and step == total:
    return True
  return bool(every) and step % every == 0


def format_duration(seconds: float) -> str:
  """'45s', '12m05s', '3h07m'."""
  seconds = int(round(max(seconds, 0)))
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'


class Progress:
  """Rate and ETA of a training loop, for its progress log lines.

  The rate is measured over the steps since the previous call of
  `images_per_second`; time spent inside `paused()` (evaluation) does not
  count as training time.
  """

  def __init__(self, total_steps: int, first_step: int = 0):
    self.total_steps = total_steps
    self._tick = (time.perf_counter(), first_step)
    self._steps_per_second = None

  @contextlib.contextmanager
  def paused(self):
    start = time.perf_counter()
    try:
      yield
    finally:
      t, step = self._tick
      self._tick = (t + time.perf_counter() - start, step)

  def images_per_second(self, step: int, batch: int) -> float:
    """Training throughput since the previous call (starts a new interval)."""
    now = time.perf_counter()
    t, previous = self._tick
    self._tick = (now, step)
    self._steps_per_second = (step - previous) / max(now - t, 1e-9)
    return batch * self._steps_per_second

  def line(self, step: int) -> str:
    """'Step 300/1500 (20.0%), 31.2 steps/s, ETA 38s'."""
    text = (f'Step {step}/{self.total_steps} '
            f'({100 * step / self.total_steps:.1f}%)')
    if self._steps_per_second:
      eta = (self.total_steps - step) / self._steps_per_second
      text += (f', {self._steps_per_second:.2f} steps/s, '
               f'ETA {format_duration(eta)}')
    return text

