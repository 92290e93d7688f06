"""Reading what `inspect` analyses: a checkpoint or workdir, and images.

A checkpoint is an official-layout `.npz` (the model name comes from the
caller) or a training workdir holding `model.npz` and `model.json` with keys
`model_name`, `model` (config fields), `num_classes`, `class_names` and
`resolution`. Images are decoded with PIL, converted to RGB, resized to a
square resolution and mapped to [-1, 1] with (x - 127.5) / 127.5.
"""

import json
import os
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import scipy.ndimage

from vit_jax import models

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp', '.tif',
                    '.tiff')
DEFAULT_RESOLUTION = 224


class InspectError(ValueError):
  """A user-facing problem with the inputs (bad file, wrong model, ...)."""


class LoadedModel(NamedTuple):
  model: Any  # models.VisionTransformer or models.MlpMixer.
  params: Any  # Nested dict of float32 arrays (Linen names).
  model_name: str
  resolution: int
  class_names: Optional[List[str]]


def load_params(path: str):
  """Nested Linen params from an `.npz` via `vit_jax.checkpoint.load`."""
  try:
    from vit_jax import checkpoint  # pylint: disable=g-import-not-at-top
  except ImportError:
    checkpoint = None
  if checkpoint is not None:
    try:
      return checkpoint.load(path)
    except checkpoint.CheckpointError as e:
      raise InspectError(f'cannot load checkpoint {path}: {e}') from e
  # Until checkpoint.py lands: a flat npz with '/'-joined Linen names.
  try:
    with np.load(path, allow_pickle=False) as data:
      flat = {tuple(k.split('/')): np.asarray(data[k], np.float32)
              for k in data.files}
  except (OSError, ValueError, KeyError) as e:
    raise InspectError(f'cannot load checkpoint {path}: {e}') from e
  return traverse_util.unflatten_dict(flat)


def _read_workdir(path: str):
  """(model config dict, params, model.json contents) of a workdir."""
  meta_path = os.path.join(path, 'model.json')
  npz_path = os.path.join(path, 'model.npz')
  for p in (meta_path, npz_path):
    if not os.path.isfile(p):
      raise InspectError(f'{path} is a directory but has no {os.path.basename(p)}'
                         ': expected a training workdir with model.npz and '
                         'model.json.')
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    config = meta['model']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise InspectError(f'cannot read {meta_path}: {e}') from e
  return config, load_params(npz_path), meta


def _official_config(model_name: Optional[str], path: str):
  if not model_name:
    raise InspectError(f'{path} is an .npz file: pass --model (e.g. '
                       'ViT-B_16) to say which architecture it holds.')
  try:
    return models.get_model_config(model_name).to_dict()
  except KeyError as e:
    raise InspectError(str(e.args[0])) from e


def _head_fields(params) -> dict:
  """num_classes and representation_size implied by the parameter tree."""
  fields = {'num_classes': None}
  if 'head' in params:
    fields['num_classes'] = int(np.shape(params['head']['kernel'])[-1])
  if 'pre_logits' in params:
    fields['representation_size'] = int(
        np.shape(params['pre_logits']['kernel'])[-1])
  return fields


def load_model(checkpoint: str, model_name: Optional[str] = None,
               resolution: Optional[int] = None) -> LoadedModel:
  """Builds the model and its params from an `.npz` file or a workdir.

  Args:
    checkpoint: path of an official-layout `.npz` or a training workdir.
    model_name: registered config name; required for `.npz`, optional for a
      workdir (must then agree with model.json).
    resolution: square input size in pixels; defaults to the workdir's or
      224. Position embeddings are resized to it when needed.
  """
  class_names = None
  if os.path.isdir(checkpoint):
    config, params, meta = _read_workdir(checkpoint)
    saved_name = meta.get('model_name') or config.get('model_name')
    if model_name and saved_name and model_name != saved_name:
      raise InspectError(f'--model={model_name} disagrees with the workdir '
                         f'{checkpoint}, whose model.json says {saved_name}.')
    model_name = saved_name or model_name or 'unknown'
    class_names = meta.get('class_names')
    resolution = resolution or meta.get('resolution')
  elif os.path.isfile(checkpoint):
    config = _official_config(model_name, checkpoint)
    params = load_params(checkpoint)
  else:
    raise InspectError(f'checkpoint {checkpoint} does not exist.')
  resolution = int(resolution or DEFAULT_RESOLUTION)
  model = models.build_model(config, **_head_fields(params))
  params = _adapt_posembed(model, params, resolution)
  _check_params(model, params, resolution, model_name)
  return LoadedModel(model, params, model_name, resolution, class_names)


def _expected_params(model, resolution: int):
  x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)['params']


def _check_params(model, params, resolution: int, name: str) -> None:
  """Raises InspectError naming the first mismatching parameters."""
  want = traverse_util.flatten_dict(_expected_params(model, resolution))
  got = traverse_util.flatten_dict(params)
  problems = [f'{"/".join(k)}: missing' for k in want if k not in got]
  problems += [f'{"/".join(k)}: shape {tuple(np.shape(got[k]))}, model '
               f'wants {tuple(v.shape)}' for k, v in want.items()
               if k in got and tuple(np.shape(got[k])) != tuple(v.shape)]
  if problems:
    raise InspectError(
        f'the checkpoint does not fit {name} at {resolution} px: '
        + '; '.join(problems[:4]) + (' ...' if len(problems) > 4 else ''))


def _adapt_posembed(model, params, resolution: int):
  """Resizes the position embedding when the file's grid differs."""
  tree = params.get('Transformer', {}).get('posembed_input')
  if tree is None or getattr(model, 'transformer', None) is None:
    return params
  want = _expected_params(model, resolution)
  target = want['Transformer']['posembed_input']['pos_embedding'].shape
  posemb = np.asarray(tree['pos_embedding'])
  if posemb.shape == target:
    return params
  prefix = 1 if model.classifier == 'token' else 0
  resized = resize_posembed(posemb, target[1], prefix)
  params = dict(params)
  params['Transformer'] = dict(params['Transformer'])
  params['Transformer']['posembed_input'] = {'pos_embedding': resized}
  return params


def resize_posembed(posemb: np.ndarray, num_tokens: int,
                    num_prefix_tokens: int) -> np.ndarray:
  """(1, T_old, D) -> (1, num_tokens, D), linear on a square grid.

  Uses `vit_jax.checkpoint.interpolate_posembed` when it exists; otherwise
  the official recipe (prefix rows kept, `scipy.ndimage.zoom(order=1)`).
  """
  try:
    from vit_jax import checkpoint  # pylint: disable=g-import-not-at-top
    return np.asarray(checkpoint.interpolate_posembed(
        posemb, num_tokens=num_tokens,
        has_class_token=num_prefix_tokens == 1))
  except (ImportError, AttributeError):
    pass
  prefix, grid = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
  old, new = (int(round(np.sqrt(n))) for n in
              (len(grid), num_tokens - num_prefix_tokens))
  if old * old != len(grid) or new * new != num_tokens - num_prefix_tokens:
    raise InspectError('position embeddings can only be resized between '
                       f'square grids; got {len(grid)} -> '
                       f'{num_tokens - num_prefix_tokens} patch tokens.')
  grid = scipy.ndimage.zoom(grid.reshape(old, old, -1),
                            (new / old, new / old, 1), order=1)
  return np.concatenate([prefix, grid.reshape(1, new * new, -1)], axis=1)


def list_images(spec: str) -> List[str]:
  """Files named in a comma-separated list of files and folders, in order."""
  paths = []
  for item in (s for s in spec.split(',') if s):
    if os.path.isdir(item):
      for root, _, names in sorted(os.walk(item)):
        paths += [os.path.join(root, n) for n in sorted(names)
                  if n.lower().endswith(IMAGE_EXTENSIONS)]
    elif os.path.isfile(item):
      paths.append(item)
    else:
      raise InspectError(f'image path {item} does not exist.')
  if not paths:
    raise InspectError(f'no images found in {spec!r} (extensions: '
                       f'{", ".join(IMAGE_EXTENSIONS)}).')
  return paths


def load_images(paths: Sequence[str], resolution: int) -> np.ndarray:
  """(B, R, R, 3) float32 in [-1, 1]; raises InspectError naming bad files."""
  out = np.empty((len(paths), resolution, resolution, 3), np.float32)
  for i, path in enumerate(paths):
    try:
      with Image.open(path) as img:
        img = img.convert('RGB').resize((resolution, resolution),
                                        Image.Resampling.BILINEAR)
        pixels = np.asarray(img, np.float32)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
      raise InspectError(f'cannot decode image {path}: {e}') from e
    # The project's one normalisation (input_pipeline.normalize).
    out[i] = (pixels - 127.5) / 127.5
  return out
