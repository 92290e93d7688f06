"""Cost of inspection relative to a plain forward pass.

  python -m vit_jax.inspect.benchmark --model=ViT-B_16 --batch=128 --res=224

Times (median of --repeats interleaved runs after one warm-up) a jitted
forward pass against one jitted call that runs the same forward with
attention capture and computes all four analyses: per-image attention
distance and rollout maps (reduced per layer inside the jit), embedding-
filter PCA and position similarity. Prints one JSON line with wall and
process-CPU times and their ratios (target <= 1.15). Parameters are random:
timing does not depend on their values. A speed tool: CPU tuning is on
unless --nocpu_tuning (vit_jax/cli.py parses it, as for every command).
"""

import json
import statistics
import sys
import time

from absl import flags
from flax import traverse_util
import jax
import numpy as np

from vit_jax import cli
from vit_jax import models
from vit_jax.inspect import analysis
from vit_jax.inspect import filters
from vit_jax.inspect import position

def random_params(model, res: int, seed: int = 0):
  """Params of the right shapes filled with small random values."""
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(models.abstract_params(model, res))
  return jax.device_put(traverse_util.unflatten_dict({
      k: (float(k[-1] == 'scale') + rng.normal(scale=0.02, size=v.shape)
          ).astype(np.float32) for k, v in flat.items()}))


def make_inspect_fn(model, res: int):
  """One jit: forward + capture + distance + rollout + filters + position."""
  analyze = analysis.build_analysis(model, (res, res))

  def inspect_all(params, images):
    out = analyze(params, images)
    kernel = params['embedding']['kernel']
    pcs = filters.embedding_filters(kernel, min(28, kernel.shape[-1]))
    grid = out.rollout_maps.shape[1:]
    sim = position.posemb_similarity(
        params['Transformer']['posembed_input']['pos_embedding'], grid)
    return out, pcs, sim

  return jax.jit(inspect_all)


def interleaved_times(fns, *args, repeats: int):
  """Median wall and process-CPU seconds per function.

  The functions alternate within each repeat so that both see the same load
  on a shared machine; CPU time (all threads) is the steadier measure there.
  """
  for fn in fns:
    jax.block_until_ready(fn(*args))  # Warm-up: compile and first run.
  wall, cpu = [[] for _ in fns], [[] for _ in fns]
  for _ in range(repeats):
    for i, fn in enumerate(fns):
      start, start_cpu = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(*args))
      wall[i].append(time.perf_counter() - start)
      cpu[i].append(time.process_time() - start_cpu)
  return ([statistics.median(t) for t in wall],
          [statistics.median(t) for t in cpu])


def time_inspection(name: str, batch: int, res: int, repeats: int) -> dict:
  """Forward vs forward + all analyses of model `name` on random inputs:
  median seconds (wall and process CPU) and their ratios."""
  model = models.get_model(name, num_classes=1000)
  params = random_params(model, res)
  images = jax.device_put(np.random.default_rng(1).uniform(
      -1, 1, (batch, res, res, 3)).astype(np.float32))
  fns = (analysis.make_forward_fn(model), make_inspect_fn(model, res))
  wall, cpu = interleaved_times(fns, params, images, repeats=repeats)
  return {'model': name, 'batch': batch, 'res': res, 'repeats': repeats,
          'device': jax.devices()[0].device_kind,
          'forward_s': wall[0], 'inspect_s': wall[1],
          'ratio': wall[1] / wall[0],
          'forward_cpu_s': cpu[0], 'inspect_cpu_s': cpu[1],
          'cpu_ratio': cpu[1] / cpu[0]}


def _define_flags():
  # Defined only when run as a program: importing this module registers no
  # global flags.
  flags.DEFINE_string('model', 'ViT-B_16', 'Registered ViT name.')
  flags.DEFINE_integer('batch', 128, 'Images per call.')
  flags.DEFINE_integer('res', 224, 'Square image size in pixels.')
  flags.DEFINE_integer('repeats', 3, 'Timed runs per function.')


def _main(argv):
  del argv
  f = flags.FLAGS
  out = time_inspection(f.model, f.batch, f.res, f.repeats)
  print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                    for k, v in out.items()}))


if __name__ == '__main__':
  _define_flags()
  sys.exit(cli.main('vit_jax.inspect.benchmark', cli.absl_body(_main),
                    cpu_tuning_default=True))
