"""Reading what `inspect` analyses: a checkpoint or workdir, and images.

A checkpoint is an official-layout `.npz` (the model name comes from the
caller) or a training workdir holding `model.npz` and `model.json` with keys
`model_name`, `model` (config fields), `num_classes`, `class_names` and
`resolution`. Images are decoded with PIL, converted to RGB, resized to a
square resolution and mapped to [-1, 1] with (x - 127.5) / 127.5.
"""

import json
import os
from typing import Any, List, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vit_jax import checkpoint
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
  """Nested Linen params (float32 numpy) of an official-layout `.npz`.

  Raises:
    checkpoint.CheckpointError: a ValueError naming the file and problem.
  """
  return checkpoint.load(path)


def _read_workdir(path: str):
  """(model config dict, params, model.json contents) of a workdir."""
  meta_path = os.path.join(path, 'model.json')
  npz_path = os.path.join(path, 'model.npz')
  for p in (meta_path, npz_path):
    if not os.path.isfile(p):
      raise InspectError(
          f'{path} is a directory but has no {os.path.basename(p)}: expected '
          'a training workdir with model.npz and model.json.')
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


def load_model(checkpoint_path: str, model_name: Optional[str] = None,
               resolution: Optional[int] = None) -> LoadedModel:
  """Builds the model and its params from an `.npz` file or a workdir.

  Args:
    checkpoint_path: official-layout `.npz` (local, gs:// or https://) or a
      training workdir.
    model_name: registered config name; required for `.npz`, optional for a
      workdir (must then agree with model.json).
    resolution: square input size in pixels; defaults to the workdir's or
      224. Position embeddings are resized to it when needed.
  """
  class_names = None
  if os.path.isdir(checkpoint_path):
    config, params, meta = _read_workdir(checkpoint_path)
    saved_name = meta.get('model_name') or config.get('model_name')
    if model_name and saved_name and model_name != saved_name:
      raise InspectError(f'--model={model_name} disagrees with the workdir '
                         f'{checkpoint_path}, whose model.json says '
                         f'{saved_name}.')
    model_name = saved_name or model_name or 'unknown'
    class_names = meta.get('class_names')
    resolution = resolution or meta.get('resolution')
  else:
    checkpoint.check_exists(checkpoint_path, model_name=model_name)
    config = _official_config(model_name, checkpoint_path)
    params = load_params(checkpoint_path)
  resolution = int(resolution or DEFAULT_RESOLUTION)
  model = models.build_model(config, **_head_fields(params))
  expected = _expected_params(model, resolution)
  params = _adapt_posembed(model, params, expected)
  params = checkpoint.inspect_params(
      params=params, expected=expected,
      source=f'Checkpoint {checkpoint_path} (as {model_name} at {resolution} '
      'px)')
  return LoadedModel(model, params, model_name, resolution, class_names)


def _expected_params(model, resolution: int):
  x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)['params']


def _adapt_posembed(model, params, expected):
  """Resizes the position embedding when the file's grid differs."""
  tree = params.get('Transformer', {}).get('posembed_input')
  want = expected.get('Transformer', {}).get('posembed_input')
  if tree is None or want is None:
    return params
  target = want['pos_embedding'].shape
  posemb = np.asarray(tree['pos_embedding'])
  if posemb.shape == target:
    return params
  # The official recipe (linear, square grids); the class row is kept.
  resized = checkpoint.interpolate_posembed(
      posemb, num_tokens=target[1],
      has_class_token=model.classifier in ('token', 'token_unpooled'))
  params = dict(params)
  params['Transformer'] = dict(params['Transformer'])
  params['Transformer']['posembed_input'] = {'pos_embedding': resized}
  return params


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
