r"""`config.trainer = 'inference_time'`: the original's throughput benchmark.

  python main.py --config=configs/vit.py:b16,cifar10 --workdir=/tmp/it \
      --config.trainer=inference_time --config.batch=16 --config.pp.crop=224

Times the jitted step of `train.make_step_fns` on synthetic data with the
config's model, batch, crop, precision and optimizer (see
`vit_jax.benchmark`, which runs the same code from the command line). The
mode is inference (the original measured that) unless the config has a
field `inference_time_mode` ('train', 'infer' or 'both'). Each record is
logged, printed as one JSON line and appended to
{workdir}/inference_time.jsonl.
"""

import json
import os
from typing import Any, Dict, List

from absl import logging
import ml_collections

from vit_jax import benchmark
from vit_jax import config_validation


def inference_time(config: ml_collections.ConfigDict,
                   workdir: str) -> List[Dict[str, Any]]:
  """Runs the benchmark for `config`; returns the JSON records."""
  # The benchmark's XLA:CPU flags; no effect once JAX's backend exists.
  benchmark.host_setup(xla_flags=benchmark.DEFAULT_XLA_FLAGS, cache_dir=None)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    if not config.dataset:
      config.dataset = 'synthetic'  # Batches are synthetic here.
    config.pretrained_dir = config.pretrained_path = ''
  config = config_validation.resolve_and_validate(config)
  mode = config.get('inference_time_mode', 'infer')
  modes = ('train', 'infer') if mode == 'both' else (mode,)
  steps = config.get('inference_time_steps', 10)
  peak = benchmark.matmul_peak()
  records = []
  for m in modes:
    record = benchmark.run(config, mode=m, steps=steps, peak_flops=peak)
    logging.info('inference_time: %s', record)
    print(json.dumps(record), flush=True)
    records.append(record)
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'inference_time.jsonl'), 'a') as f:
      for record in records:
        f.write(json.dumps(record) + '\n')
  return records
