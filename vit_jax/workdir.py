"""The training workdir's format: what `train.run` writes and readers load.

A workdir holds
- `checkpoint_{step}/`: orbax checkpoints of the whole TrainState (the
  original's folder names), written by `checkpoint_manager` and found by
  `latest_checkpoint_step` (complete ones only);
- `config.json`: the flattened config of the run (`record_config`);
- `model.npz` (official layout: the original release, timm and
  `checkpoint.load` read it) and `model.json`, written by `export_model`:

    {"model_name": ..., "model": {model config fields}, "num_classes": N,
     "class_names": [...], "resolution": crop, "dataset": ...}

`load_model(path, model_name=None, resolution=None)` is the project's one
model loader (predict, inspect, fewshot, export, the notebooks): a workdir,
its model.npz or an official-layout `.npz` -> model and checked parameters,
the position embedding resized for another resolution. `load_exported` is
the plain (model, params, metadata) form. JSON files are written with
`checkpoint.atomic_write`, so a reader never sees half a file.
"""

import json
import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from vit_jax import checkpoint
from vit_jax import config_validation
from vit_jax import models
from vit_jax.configs import common

CHECKPOINT_PREFIX = 'checkpoint'  # Steps live in {workdir}/checkpoint_{step}.
CONFIG_JSON = 'config.json'
MODEL_NPZ = 'model.npz'
MODEL_JSON = 'model.json'
DEFAULT_RESOLUTION = 224  # Models without position embeddings (Mixer).
_META_KEYS = ('model_name', 'model', 'num_classes')  # Required in model.json.


class LoadError(checkpoint.CheckpointError):
  """`load_model` cannot build a model from the arguments; says what to do."""


class LoadedModel(NamedTuple):
  """A model with checked parameters, as `load_model` returns it."""
  model: Any  # models.VisionTransformer or models.MlpMixer.
  params: Any  # Nested dict of float32 numpy arrays (Linen names).
  model_name: str
  resolution: int  # Square input side (pixels).
  class_names: Optional[List[str]]  # model.json's; None for official files.


def checkpoint_path(workdir: str, step) -> str:
  """{workdir}/checkpoint_{step} as an absolute path (`step` may be text)."""
  return os.path.join(os.path.abspath(workdir), f'{CHECKPOINT_PREFIX}_{step}')


def _manager_options(config=None, **kwargs) -> ocp.CheckpointManagerOptions:
  keep = config.keep_checkpoints if config is not None else None
  return ocp.CheckpointManagerOptions(
      max_to_keep=keep, step_prefix=CHECKPOINT_PREFIX, **kwargs)


def latest_checkpoint_step(workdir: str) -> int:
  """Step of the newest *complete* checkpoint (0 if none).

  Orbax writes into a temporary directory and renames it when done, so a
  checkpoint interrupted mid-write is never reported here.
  """
  if not os.path.isdir(workdir):
    return 0
  manager = ocp.CheckpointManager(os.path.abspath(workdir),
                                  options=_manager_options())
  step = manager.latest_step()
  manager.close()
  return step or 0


def checkpoint_manager(workdir: str, config) -> ocp.CheckpointManager:
  """Orbax manager writing {workdir}/checkpoint_{step}, keeping the newest
  `config.keep_checkpoints`."""
  return ocp.CheckpointManager(os.path.abspath(workdir),
                               options=_manager_options(config, create=True))


def restore_or_keep(manager: ocp.CheckpointManager, state: Any,
                    shardings: Any) -> Any:
  """The latest complete checkpoint of `manager`, restored with the shapes
  of `state` (a TrainState) and `shardings` (the same tree of shardings);
  `state` itself when there is none."""
  step = manager.latest_step()
  if step is None:
    return state
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      state, shardings)
  logging.info('Resuming from the checkpoint of step %d.', step)
  return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _write_json(path: str, obj: Dict[str, Any]) -> None:
  checkpoint.atomic_write(path, lambda f: json.dump(obj, f, indent=2),
                          binary=False)


def record_config(workdir: str, config, *, resuming: bool) -> str:
  """Writes {workdir}/config.json (process 0); on resume, warns about the
  fields that differ from the recorded ones. Returns the path."""
  path = os.path.join(workdir, CONFIG_JSON)
  flat = dict(common.flatten(config.to_dict()))
  flat = {k: v if isinstance(v, (int, float, str, bool, type(None)))
          else repr(v) for k, v in flat.items()}
  if resuming and os.path.exists(path):
    with open(path) as f:
      before = json.load(f)
    changed = [f'{k}: {before.get(k)!r} -> {flat.get(k)!r}'
               for k in sorted(set(before) | set(flat))
               if before.get(k) != flat.get(k)]
    if changed:
      logging.warning(
          'Resuming %s with a config that differs from the one it was '
          'started with (%s):\n  %s', workdir, path, '\n  '.join(changed))
  if jax.process_index() == 0:
    _write_json(path, flat)
  return path


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
    _write_json(os.path.join(workdir, MODEL_JSON), {
        'model_name': config_validation.model_name(config),
        'model': config.model.to_dict(),
        'num_classes': info.num_classes,
        'class_names': list(info.class_names),
        'resolution': config.pp.crop,
        'dataset': config.dataset,
    })
  return path


def export_untrained(workdir: str, *, config, info, seed: int = 0) -> str:
  """Exports a freshly initialised model of `config` like a finished run.

  The offline stand-in for a trained model (the notebooks use it when there
  is neither a workdir nor the network): `predict`, `inspect` and
  fine-tuning read the result as they read a training workdir.

  Args:
    workdir: where model.npz and model.json are written.
    config: a training config (its model, model_name, pp.crop, dataset).
    info: the dataset's `datasets.DatasetInfo` (classes and names).
    seed: initialisation seed.

  Returns:
    The path of model.npz.
  """
  model = models.build_model(config.model, num_classes=info.num_classes)
  params = models.init_params(model, config.pp.crop, seed=seed)
  return export_model(workdir, params=params, config=config, info=info)


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
  problem = None
  try:
    with open(path) as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    problem = f'{type(e).__name__}: {e}'
  else:
    if not isinstance(meta, dict):
      problem = f'a JSON {type(meta).__name__}, not an object'
    elif missing := [k for k in _META_KEYS if k not in meta]:
      problem = f'no {", ".join(missing)}'
    elif not isinstance(meta['model'], dict):
      problem = '"model" is not an object'
  if problem:
    raise checkpoint.CheckpointError(
        f'Cannot read {path} ({problem}): expected the JSON that export '
        f'writes, with keys {", ".join(_META_KEYS)}.')
  meta['model'] = _to_config(meta['model'])
  return meta


def load_exported(path: str, **model_kwargs) -> Tuple[Any, Any, Dict]:
  """(model, params, metadata) from a workdir or an exported model.npz."""
  meta = read_metadata(path)
  params = checkpoint.load(npz_path(path))
  model = models.build_model(meta['model'], num_classes=meta['num_classes'],
                             **model_kwargs)
  return model, params, meta


def npz_path(path: str) -> str:
  """The model.npz of a workdir, or of its model.json; else `path`."""
  if os.path.isdir(path):
    return os.path.join(path, MODEL_NPZ)
  return path[:-len('.json')] + '.npz' if path.endswith('.json') else path


def _exported_meta(path: str) -> Optional[Dict[str, Any]]:
  """model.json of a workdir / exported model.npz; None for other files."""
  if os.path.isdir(path):
    return read_metadata(path)  # Raises if model.json is missing.
  if path.endswith('.npz') and os.path.isfile(path[:-len('.npz')] + '.json'):
    return read_metadata(path)
  return None


def _head_fields(params) -> Dict[str, Any]:
  """num_classes (None: no head) and representation_size of the file."""
  head = params.get('head')
  fields = {'num_classes': None if head is None else int(
      np.shape(head['kernel'])[-1])}
  if 'pre_logits' in params:
    fields['representation_size'] = int(
        np.shape(params['pre_logits']['kernel'])[-1])
  return fields


def native_resolution(model_config, params) -> int:
  """The input side the file was trained at: posemb grid x patch stride."""
  posemb = checkpoint.get_posemb(params)
  if posemb is None:
    return DEFAULT_RESOLUTION
  patches = np.shape(posemb)[1] - int(models.has_class_token(model_config))
  side = int(np.sqrt(patches))
  if side * side != patches:
    return DEFAULT_RESOLUTION  # Not square: let the shape check explain.
  return side * models.patch_stride(model_config)[0]


def _fit_resolution(model, model_config, params, resolution: int,
                    source: str):
  """Params checked against the model at `resolution`, posemb resized."""
  sh, sw = models.patch_stride(model_config)
  if resolution < 1 or resolution % sh or resolution % sw:
    raise LoadError(f'--resolution={resolution} must be a positive multiple '
                    f'of the patch stride {sh}x{sw} (input pixels per '
                    'token).')
  expected = models.abstract_params(model, resolution)
  checkpoint.fit_posemb(params, expected,
                        has_class_token=models.has_class_token(model_config),
                        grid_shape=(resolution // sh, resolution // sw),
                        source=source)
  return checkpoint.inspect_params(params=params, expected=expected,
                                   source=source)


def add_load_model_flags(parser) -> None:
  """--checkpoint, --model and --resolution: `load_model`'s arguments, for
  the commands that load a model (predict, fewshot, export)."""
  parser.add_argument('--checkpoint', required=True,
                      help='training workdir, its model.npz, or an official '
                      '.npz file')
  parser.add_argument('--model', default=None,
                      help='registered model name (e.g. ViT-B_16); required '
                      'for official .npz files')
  parser.add_argument('--resolution', type=int, default=None,
                      help="input side in pixels (default: the checkpoint's)")


def load_model(checkpoint_path: str, model_name: Optional[str] = None,
               resolution: Optional[int] = None) -> LoadedModel:
  """Builds the model and its checked params from a workdir or `.npz` file.

  Args:
    checkpoint_path: training workdir, its model.npz, or an official-layout
      `.npz` (local, gs:// or https://).
    model_name: registered config name; required for official files,
      optional for exported models (must then match model.json).
    resolution: square input side in pixels; default: model.json's, else
      the file's own (see `native_resolution`). Position embeddings are
      resized to it as fine-tuning does (`checkpoint.interpolate_posembed`).

  Returns:
    LoadedModel; its model has `num_classes=None` when the file has no head.

  Raises:
    LoadError, checkpoint.CheckpointError (both ValueErrors): with a message
      saying what was wrong and what to do.
  """
  path = os.fspath(checkpoint_path)
  meta = _exported_meta(path)
  if meta is not None:
    if model_name and model_name != meta['model_name']:
      raise LoadError(
          f'--model={model_name} disagrees with {path}, whose model.json '
          f'says {meta["model_name"]}; drop --model.')
    model_name, config = meta['model_name'], meta['model']
    npz = npz_path(path)
    resolution = resolution or meta.get('resolution')
  else:
    if not model_name:
      raise LoadError(
          f'{path} is not an exported model (no model.json beside it): '
          'pass --model (e.g. ViT-B_16) to say which architecture it holds.')
    try:
      config = models.get_model_config(model_name)
    except KeyError as e:
      raise LoadError(str(e.args[0])) from None
    checkpoint.check_exists(path, model_name=model_name)
    npz = path
  params = checkpoint.load(npz)
  model = models.build_model(config, **_head_fields(params))
  resolution = int(resolution or native_resolution(config, params))
  params = _fit_resolution(
      model, config, params, resolution,
      f'Checkpoint {npz} (as {model_name} at {resolution} px)')
  names = meta.get('class_names') if meta else None
  return LoadedModel(model, params, model_name, resolution, names)
