r"""`inference_time(config, workdir)`: the original's throughput benchmark.

Two kinds of config work:
- the original's configs/inference_time.py (`model_name`, `batch`,
  `num_classes`, `image_size`, `steps`, `initial_steps`): times the
  jitted forward pass, logs and writes imgs_sec_core_{min,max,mean,std}
  (images per second per device) to TensorBoard in `workdir`;
- a fine-tuning config with `config.trainer = 'inference_time'`: times that
  config's model, batch, crop, precision and optimizer with
  `benchmark.time_steps` (mode 'infer' unless `config.inference_time_mode` is
  'train' or 'both') and appends the JSON records to
  {workdir}/inference_time.jsonl.

Neither changes process settings: run `python -m vit_jax.benchmark` or
`main --cpu_tuning` for the CPU-tuned numbers of bench/RESULTS.md.
"""

import json
import os
from typing import Any, Dict, List

from absl import logging
from clu import metric_writers
import ml_collections
import numpy as np

from vit_jax import benchmark
from vit_jax import config_validation
from vit_jax.configs import common


def _is_original_config(config) -> bool:
  return 'image_size' in config


def _train_config(config) -> ml_collections.ConfigDict:
  """The original's benchmark fields as a (synthetic-data) train config."""
  for field in ('batch', 'num_classes', 'image_size'):
    if not config.get(field):
      raise config_validation.ConfigError(
          f'--config.{field}={config.get(field)} must be > 0 for the '
          'inference-time benchmark.')
  out = common.get_config()
  out.trainer = 'inference_time'
  out.dataset = 'synthetic'  # Batches are made by the benchmark.
  out.model_name = config.model_name
  out.pretrained_dir = ''
  out.batch = out.batch_eval = config.batch
  out.accum_steps = 1
  out.pp.crop = config.image_size
  out.total_steps, out.warmup_steps = 1, 0
  out.compilation_cache = ''
  return out


def inference_time(config: ml_collections.ConfigDict,
                   workdir: str) -> List[Dict[str, Any]]:
  """Runs the benchmark for `config`; returns the JSON records."""
  if _is_original_config(config):
    record = benchmark.time_steps(
        config_validation.resolve_and_validate(_train_config(config)),
        mode='infer', steps=config.steps, warmup=config.initial_steps,
        num_classes=config.num_classes, peak_flops=0.0)
    _write_original_scalars(record, workdir)
    return [record]
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
    record = benchmark.time_steps(config, mode=m, steps=steps,
                                  peak_flops=peak)
    logging.info('inference_time: %s', record)
    print(json.dumps(record), flush=True)
    records.append(record)
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'inference_time.jsonl'), 'a') as f:
      for record in records:
        f.write(json.dumps(record) + '\n')
  return records


def _write_original_scalars(record: Dict[str, Any], workdir: str) -> None:
  """The original's TensorBoard scalars and log lines for one record."""
  per_device = np.asarray(record['step_times_s'])
  imgs = record['batch'] / record['devices'] / per_device
  stats = dict(imgs_sec_core_min=imgs.min(), imgs_sec_core_max=imgs.max(),
               imgs_sec_core_mean=imgs.mean(), imgs_sec_core_std=imgs.std())
  for key, value in stats.items():
    logging.info('%s=%f', key, value)
  writer = metric_writers.create_default_writer(workdir, asynchronous=False)
  writer.write_scalars(0, {k: float(v) for k, v in stats.items()})
  writer.flush()
  writer.close()

