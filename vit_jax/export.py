"""Exports fine-tuned parameters as an official-layout `.npz` plus metadata.

A workdir then holds `model.npz` (loadable by the original release, timm and
`checkpoint.load`) and `model.json`:

  {"model_name": ..., "model": {model config fields}, "num_classes": N,
   "class_names": [...], "resolution": crop, "dataset": ...}

`load_exported(path)` turns either file (or the workdir) back into a model
and its parameters: the form `predict`, `inspect` and the notebooks use.
"""

import json
import os
import tempfile
from typing import Any, Dict, Tuple

import jax
from jax.experimental import multihost_utils
import ml_collections

from vit_jax import checkpoint
from vit_jax import models

MODEL_NPZ = 'model.npz'
MODEL_JSON = 'model.json'


def _write_json_atomic(path: str, obj: Dict[str, Any]) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp')
  try:
    with os.fdopen(fd, 'w') as f:
      json.dump(obj, f, indent=2)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def export_model(workdir: str, *, params: Any, config, info) -> str:
  """Writes {workdir}/model.npz and model.json (process 0 only).

  `params` may be sharded across processes; they are gathered first (a
  collective, so every process must call this). Returns the .npz path.
  """
  params = multihost_utils.process_allgather(params, tiled=True)
  path = os.path.join(workdir, MODEL_NPZ)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    checkpoint.save(params, path)
    _write_json_atomic(os.path.join(workdir, MODEL_JSON), {
        'model_name': config.model_name,
        'model': config.model.to_dict(),
        'num_classes': info.num_classes,
        'class_names': list(info.class_names),
        'resolution': config.pp.crop,
        'dataset': config.dataset,
    })
  return path


def _to_config(d: Dict[str, Any]) -> ml_collections.ConfigDict:
  """JSON lists back to tuples (patch sizes, ResNet stages)."""
  fix = lambda v: tuple(v) if isinstance(v, list) else v  # pylint: disable=g-long-lambda
  out = {}
  for key, value in d.items():
    out[key] = _to_config(value) if isinstance(value, dict) else fix(value)
  return ml_collections.ConfigDict(out)


def read_metadata(path: str) -> Dict[str, Any]:
  """model.json next to `path` (a workdir, model.npz or model.json)."""
  if os.path.isdir(path):
    path = os.path.join(path, MODEL_JSON)
  elif path.endswith('.npz'):
    path = path[:-len('.npz')] + '.json'
  if not os.path.exists(path):
    raise checkpoint.CheckpointError(
        f'{path} does not exist: a training workdir holds {MODEL_NPZ} and '
        f'{MODEL_JSON} after `python main.py` finishes (config.export=True).')
  with open(path) as f:
    meta = json.load(f)
  meta['model'] = _to_config(meta['model'])
  return meta


def load_exported(path: str, **model_kwargs) -> Tuple[Any, Any, Dict]:
  """(model, params, metadata) from a workdir or an exported model.npz."""
  meta = read_metadata(path)
  npz = os.path.join(path, MODEL_NPZ) if os.path.isdir(path) else (
      path[:-len('.json')] + '.npz' if path.endswith('.json') else path)
  params = checkpoint.load(npz)
  model = models.build_model(meta['model'], num_classes=meta['num_classes'],
                             **model_kwargs)
  return model, params, meta
