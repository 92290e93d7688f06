#!/usr/bin/env python3
"""One vit_jax case of the GPU check: `python gpu_check_jax.py CASE_JSON`.

Times the real train or eval step with `vit_jax.benchmark.time_steps` (the
steps of `steps.build`, synthetic data, no TensorFlow) at the case's dtype and
attention_impl, then reads the device's peak memory from
`jax.devices()[0].memory_stats()`; a fresh process per case, so that peak
is this case's. A case with 'measure_peak' also times a large matmul (bf16
8192^3 on a GPU; a small float32 one elsewhere) as a measured ceiling. A
case with 'check' then runs the cudnn-vs-xla logits check: the same params
and images through attention_impl 'cudnn' and 'xla' (both in the case's
dtype), each compared with a float32 'xla' reference at 'highest' matmul
precision. Prints one JSON line per record (the case, then the check).

'cudnn' needs a CUDA GPU: elsewhere the case and its check are printed as
'skipped'.
"""

import contextlib
import json
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import benchmark
from vit_jax import models


def device_memory() -> dict:
  """Peak/limit of device 0 in MiB (None where the backend keeps none)."""
  stats = jax.devices()[0].memory_stats() or {}
  mib = lambda k: stats[k] / 2**20 if k in stats else None
  return dict(peak_device_mem_mb=mib('peak_bytes_in_use'),
              device_mem_limit_mb=mib('bytes_limit'))


def matmul_ceiling() -> dict:
  """Measured matmul FLOP/s: bf16 8192^3 on a GPU (median of 10, random
  data), else `benchmark.matmul_peak` on small float32 matrices."""
  if jax.default_backend() != 'gpu':
    return dict(measured_matmul_flops=benchmark.matmul_peak((256, 512), 3),
                measured_matmul_dtype='float32')
  n = 8192
  a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), jnp.bfloat16)
          for i in (1, 2))
  dot = jax.jit(jnp.dot)
  for _ in range(3):
    dot(a, b).block_until_ready()
  times = []
  for _ in range(10):
    t0 = time.perf_counter()
    dot(a, b).block_until_ready()
    times.append(time.perf_counter() - t0)
  return dict(measured_matmul_flops=2 * n**3 / statistics.median(times),
              measured_matmul_dtype='bfloat16')


def rel_err(a, b) -> float:
  """||a - b|| / ||b|| in float64."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def attention_check(case, config, *, batch: int = 8,
                    candidate: str = 'cudnn') -> dict:
  """Logits of attention_impl `candidate` (the fields say 'cudnn') vs 'xla'
  on one batch of `batch` random images (see the module docstring)."""
  crop, dtype = config.pp.crop, jnp.dtype(case['dtype'])
  make = lambda impl, dt: models.build_model(  # pylint: disable=g-long-lambda
      config.model, num_classes=case['num_classes'], dtype=dt,
      attention_impl=impl)
  ref_model = make('xla', jnp.float32)
  params = models.init_params(ref_model, crop, seed=0)
  # The head is zero at initialisation, so every logit would be 0 whatever
  # the attention computed: a random head makes the logits carry it.
  kernel = params['head']['kernel']
  head = jax.random.normal(jax.random.PRNGKey(1), kernel.shape) / np.sqrt(
      kernel.shape[0])
  params = {**params, 'head': {**params['head'], 'kernel': head}}
  images = jax.random.uniform(jax.random.PRNGKey(2), (batch, crop, crop, 3),
                              minval=-1, maxval=1)
  logits = lambda m: jax.jit(  # pylint: disable=g-long-lambda
      lambda p, x: m.apply({'params': p}, x, train=False))(params, images)
  # 'highest': float32 matmuls on a GPU may otherwise run as TF32.
  precision = getattr(jax, 'default_matmul_precision', None)
  with (contextlib.nullcontext() if precision is None
        else precision('highest')):
    ref = logits(ref_model)
  xla, cudnn = logits(make('xla', dtype)), logits(make(candidate, dtype))
  err = dict(rel_err_cudnn_xla=rel_err(cudnn, xla),
             rel_err_cudnn_f32=rel_err(cudnn, ref),
             rel_err_xla_f32=rel_err(xla, ref))
  # cudnn must be about as close to float32 as XLA's own bf16 attention;
  # the floor admits bf16 rounding when both errors are tiny.
  tol = max(2 * err['rel_err_xla_f32'], case['check_floor'])
  return dict(status='ok', check_batch=batch, tol=tol,
              ref_precision='default' if precision is None else 'highest',
              passed=bool(err['rel_err_cudnn_f32'] <= tol), **err)


def versions() -> dict:
  """jax, jaxlib and (on a GPU) cuDNN versions."""
  import jaxlib  # pylint: disable=g-import-not-at-top
  out = dict(jax=jax.__version__, jaxlib=jaxlib.__version__)
  try:
    # pylint: disable-next=g-import-not-at-top
    from jax._src.lib import cuda_versions
    out['cudnn'] = cuda_versions.cudnn_get_version() if cuda_versions else None
  except Exception:  # pylint: disable=broad-except
    out['cudnn'] = None  # A private module: its absence is no failure.
  return out


def _guarded(fn) -> dict:
  """fn()'s record, or an 'error' record with the traceback's tail."""
  try:
    return fn()
  except Exception:  # pylint: disable=broad-except
    # One failing case (cuDNN refusing a shape, out of memory) must not stop
    # the check: the driver records it and goes on.
    return dict(status='error', reason=traceback.format_exc()[-3000:])


def time_case(case, config) -> dict:
  """benchmark.time_steps's record, device memory (and measured peak)."""
  record = benchmark.time_steps(config, mode=case['mode'],
                                steps=case['steps'], warmup=case['warmup'],
                                num_classes=case['num_classes'],
                                peak_flops=0.0)
  record.update(device_memory(), status='ok')
  if case.get('measure_peak'):
    record.update(matmul_ceiling())  # After the memory was read.
  return record


def main(argv) -> None:
  case = json.loads(argv[1])
  backend = jax.default_backend()
  common = dict(backend=backend, device_kind=jax.devices()[0].device_kind,
                versions=versions())
  config = benchmark.benchmark_config(
      model=case['model'], res=case['res'], batch=case['batch'],
      dtype=case['dtype'], optim_dtype='float32',
      attention_impl=case['variant'])
  if case['variant'] == 'cudnn' and backend != 'gpu':
    reason = f'cudnn attention needs a CUDA GPU; the backend is {backend}'
    record = dict(status='skipped', reason=reason)
    check = dict(status='skipped', reason=reason)
  else:
    record = _guarded(lambda: time_case(case, config))
    check = case.get('check') and _guarded(
        lambda: attention_check(case, config))
  print(json.dumps({**case, **common, **record}), flush=True)
  if case.get('check'):
    print(json.dumps({**case, **common, 'impl': 'check',
                      'variant': 'cudnn_vs_xla', **check}), flush=True)


if __name__ == '__main__':
  main(sys.argv)
