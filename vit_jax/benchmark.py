r"""Throughput of the real train and eval steps on synthetic data.

  python -m vit_jax.benchmark --model=ViT-B_16 --res=224 --batch=8 \
      --mode=train

Builds the state and the jitted steps with `steps.build` (the code that
fine-tuning runs), compiles once, runs `--warmup` steps, then prints the
median of `--steps` timed steps as one JSON line with the fields of
/work/shared/bench/timm_reference.py (impl, model, res, batch, mode,
img_per_sec, step_ms, first_step_s) plus compile time, peak host memory,
FLOP/s from XLA's cost analysis and their ratio to a matmul peak measured
in the same process (`mfu_vs_matmul_peak`). `cpu_ms` (process CPU time
per step, all threads) is steadier than wall time on a shared machine and
serves to compare variants of our own step.

Train mode matches timm_reference.py: accum_steps=1, SGD momentum 0.9 with
global-norm clipping at 1.0, no pretrained weights, 10 classes; the momentum
is float32 unless --optim_dtype says otherwise. Infer mode times the jitted
eval step (forward pass, argmax, count).

Run as a command, it applies the CPU tuning that `main.py --cpu_tuning`
opts into (the benchmark is the speed tool, so it is on by default;
`--no_cpu_tuning` measures the plain defaults, and the JSON's `cpu_tuning`
says which): it re-runs itself with huge pages for malloc's large blocks
(vit_jax/host.py, through cli.main; the JSON has `glibc_tunables` and
`page_faults_per_step`), exempts the objects of its imports from Python's
garbage collector before compiling (`gc_frozen_objects`) and sets the XLA
CPU flags of `host_setup` (`--xla_flags`) before JAX creates its backend.
A persistent compilation cache (default ~/.cache/vit_jax/jax, '' disables)
makes a second process skip compilation; the JSON says whether the first
step hit it.
"""

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vit_jax import cli
from vit_jax import config_validation
from vit_jax import host
from vit_jax import partitioning
from vit_jax import plan
from vit_jax import steps
from vit_jax import utils
from vit_jax.configs import common

DEFAULT_CACHE = '~/.cache/vit_jax/jax'
# The XLA:CPU flags of --cpu_tuning (see host.XLA_CPU_FLAGS).
DEFAULT_XLA_FLAGS = host.XLA_CPU_FLAGS
_CACHE_EVENTS = {'hits': 0, 'misses': 0}


def host_setup(*, xla_flags: Sequence[str] = (),
               cache_dir: Optional[str] = DEFAULT_CACHE) -> None:
  """XLA flags and the compilation cache; call before JAX's first use.

  Flags already present in $XLA_FLAGS win over `xla_flags`.
  """
  host.set_xla_flags(xla_flags)
  utils.enable_compilation_cache(cache_dir, min_compile_time_secs=0)


def _listen_to_cache() -> None:
  """Counts persistent-cache hits and misses (registered once)."""
  if not _CACHE_EVENTS.get('listening'):
    jax.monitoring.register_event_listener(_count_cache_event)
    _CACHE_EVENTS['listening'] = True


def _count_cache_event(event: str, **kwargs) -> None:
  del kwargs
  if event == '/jax/compilation_cache/cache_hits':
    _CACHE_EVENTS['hits'] += 1
  elif event == '/jax/compilation_cache/cache_misses':
    _CACHE_EVENTS['misses'] += 1


def benchmark_config(*, model: str, res: int, batch: int,
                     optim_dtype: str = 'float32', dtype: str = 'float32',
                     attention_impl: str = 'einsum',
                     remat: bool = False) -> ml_collections.ConfigDict:
  """A training config as timm_reference.py runs it (synthetic data)."""
  config = common.get_config()
  config.trainer = 'inference_time'
  config.dataset = 'synthetic'  # Never read: batches are made here.
  config.model_name = model
  config.pp.crop = res
  config.batch = config.batch_eval = batch
  config.accum_steps = 1
  config.total_steps, config.warmup_steps = 10_000, 0
  config.base_lr = 0.01
  config.optim_dtype = optim_dtype
  config.dtype = dtype
  config.attention_impl = attention_impl
  config.remat = remat
  config.pretrained_dir = ''
  return config_validation.resolve_and_validate(config)


def synthetic_batch(config, num_classes: int, mesh, *,
                    with_mask: bool) -> Dict[str, jax.Array]:
  """Uniform [-1, 1] images and cyclic labels, placed like real batches."""
  rng = np.random.RandomState(0)
  n, crop = config.batch, config.pp.crop
  batch = {'image': rng.uniform(-1, 1, (n, crop, crop, 3)).astype(np.float32),
           'label': (np.arange(n) % num_classes).astype(np.int32)}
  if with_mask:
    batch['mask'] = np.ones((n,), np.float32)
  return jax.device_put(batch, partitioning.batch_sharding(mesh))


def matmul_peak(sizes: Sequence[int] = (1024, 2048), reps: int = 5) -> float:
  """Best median FLOP/s of a float32 `jnp.dot` of n x n matrices."""
  best = 0.0
  dot = jax.jit(jnp.dot)
  for n in sizes:
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    dot(a, b).block_until_ready()
    times = []
    for _ in range(reps):
      t0 = time.perf_counter()
      dot(a, b).block_until_ready()
      times.append(time.perf_counter() - t0)
    best = max(best, 2 * n**3 / statistics.median(times))
  return best


def _compile(config, mode: str, num_classes: int):
  """`steps.build` (random init), then the step of `mode` compiled: (it,
  its first arguments, output -> next arguments, FLOPs per call from XLA,
  compile s, the tracing + lowering part of it, persistent-cache hit)."""
  built = steps.build(config, num_classes, pretrained=False)
  batch = synthetic_batch(config, num_classes, built.mesh,
                          with_mask=mode == 'infer')
  jax.block_until_ready((built.state, batch))
  if mode == 'train':
    fn, args = built.train_fn, (built.state, batch)
    advance = lambda out: (out[0], batch)
  else:
    fn, args = built.eval_fn, (built.state.params, batch)
    advance = lambda out: args
  _listen_to_cache()
  hits = _CACHE_EVENTS['hits']
  t0 = time.perf_counter()
  lowered = fn.lower(*args)
  trace_s = time.perf_counter() - t0
  compiled = lowered.compile()
  return (compiled, args, advance, plan.cost(compiled)[0],
          time.perf_counter() - t0, trace_s, _CACHE_EVENTS['hits'] > hits)


def time_steps(config, *, mode: str, steps: int = 10, warmup: int = 2,
               num_classes: int = 10, peak_flops: Optional[float] = None
               ) -> Dict[str, Any]:
  """Times `steps` steady-state steps; returns the JSON record as a dict."""
  if mode not in ('train', 'infer'):
    raise ValueError(f"mode={mode!r}; use 'train' or 'infer'.")
  compiled, args, advance, flops, compile_s, trace_s, cache_hit = _compile(
      config, mode, num_classes)
  t0 = time.perf_counter()
  out = jax.block_until_ready(compiled(*args))
  first_run_s = time.perf_counter() - t0
  losses = [_loss(out, mode)]
  for _ in range(warmup):
    out = jax.block_until_ready(compiled(*advance(out)))
  times, cpu = [], []
  faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(steps):
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(compiled(*advance(out)))
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
  losses.append(_loss(out, mode))
  med = statistics.median(times)
  peak = peak_flops if peak_flops is not None else matmul_peak()
  return dict(
      impl='vit_jax', model=config.model_name, res=config.pp.crop,
      batch=config.batch, mode=mode, img_per_sec=config.batch / med,
      step_ms=1e3 * med, cpu_ms=1e3 * statistics.median(cpu),
      page_faults_per_step=faults / max(steps, 1),
      first_step_s=compile_s + first_run_s,
      compile_s=compile_s, trace_s=trace_s, cache_hit=cache_hit,
      peak_host_mem_mb=resource.getrusage(
          resource.RUSAGE_SELF).ru_maxrss / 1024,
      flops_per_step=flops, achieved_flops=flops / med,
      matmul_peak_flops=peak,
      mfu_vs_matmul_peak=flops / med / peak if peak else 0.0,
      steps=steps, dtype=config.dtype, optim_dtype=config.optim_dtype,
      attention_impl=config.attention_impl, remat=config.remat,
      losses=losses, devices=jax.device_count(), step_times_s=times,
      xla_flags=os.environ.get('XLA_FLAGS', ''),
      glibc_tunables=os.environ.get('GLIBC_TUNABLES', ''),
      gc_frozen_objects=gc.get_freeze_count())


def _loss(out, mode: str) -> Optional[float]:
  return float(out[1]['loss']) if mode == 'train' else None


def parse_args(argv=None) -> argparse.Namespace:
  """Command-line flags (the names of timm_reference.py, plus knobs)."""
  p = cli.ArgumentParser(
      prog='python -m vit_jax.benchmark',
      description=__doc__.split('\n\n')[0],
      epilog='CPU tuning is on by default here; ' + cli.CPU_TUNING_HELP)
  p.add_argument('--model', default='ViT-B_16')
  p.add_argument('--res', type=int, default=224)
  p.add_argument('--batch', type=int, default=8)
  p.add_argument('--mode', default='train', choices=['train', 'infer'])
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--num_classes', type=int, default=10)
  p.add_argument('--optim_dtype', default='float32')
  p.add_argument('--dtype', default='float32')
  p.add_argument('--attention_impl', default='einsum')
  p.add_argument('--remat', action='store_true')
  p.add_argument('--cache_dir', default=DEFAULT_CACHE,
                 help="Persistent compilation cache; '' disables.")
  p.add_argument('--xla_flags', default=None,
                 help="XLA flags (default: DEFAULT_XLA_FLAGS; '' for none).")
  p.add_argument('--no_peak', action='store_true',
                 help='Skip the matmul peak measurement.')
  return p.parse_args(argv)


def benchmark_command(args: Sequence[str], *, cpu_tuning: bool) -> None:
  """The command's body: times the step, prints one JSON line."""
  args = parse_args(args)
  flags = (DEFAULT_XLA_FLAGS if args.xla_flags is None
           else args.xla_flags.split())
  if not cpu_tuning:
    flags = ()
  host_setup(xla_flags=flags, cache_dir=args.cache_dir)
  config = benchmark_config(
      model=args.model, res=args.res, batch=args.batch,
      optim_dtype=args.optim_dtype, dtype=args.dtype,
      attention_impl=args.attention_impl, remat=args.remat)
  record = time_steps(config, mode=args.mode, steps=args.steps,
                      warmup=args.warmup, num_classes=args.num_classes,
                      peak_flops=0.0 if args.no_peak else None)
  record['cpu_tuning'] = cpu_tuning
  print(json.dumps(record))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`python -m vit_jax.benchmark` (CPU tuning on unless --no_cpu_tuning);
  the backends start in the body, after its XLA flags."""
  return cli.main('vit_jax.benchmark', benchmark_command, argv,
                  cpu_tuning_default=True, xla_flags=False,
                  start_backends=False, tell_cpu_tuning=True)


if __name__ == '__main__':
  sys.exit(main())
