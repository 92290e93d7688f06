"""Computes every requested analysis for a loaded model and a set of images.

`run_analyses` returns the JSON-ready summary plus the arrays the figures
need; it writes nothing, so a failure leaves no files behind.
"""

from typing import Any, Dict, NamedTuple, Optional, Sequence

import numpy as np

from vit_jax import models
from vit_jax.inspect import analysis
from vit_jax.inspect import capture
from vit_jax.inspect import filters
from vit_jax.inspect import loading
from vit_jax.inspect import position

FIGURES = ('filters', 'position', 'distance', 'rollout')
ATTENTION_FIGURES = ('distance', 'rollout')
MAX_COMPONENTS = 28


class Results(NamedTuple):
  summary: Dict[str, Any]  # JSON-ready.
  arrays: Dict[str, np.ndarray]  # Inputs of the figures.


def _filters(params, mixer: bool):
  kernel = np.asarray(params['stem' if mixer else 'embedding']['kernel'])
  if kernel.shape[2] != 3:
    raise loading.InspectError(
        f'the embedding kernel has shape {kernel.shape}: hybrids embed ResNet '
        'features, not RGB pixels, so their filters are not images. Leave '
        '"filters" out of --figures.')
  k = min(MAX_COMPONENTS, kernel.shape[-1], int(np.prod(kernel.shape[:3])))
  out = filters.embedding_filters(kernel, k)
  summary = {
      'num_components': k,
      'explained_variance_ratio': np.asarray(
          out.explained_variance_ratio).tolist(),
      'explained_variance': np.asarray(out.explained_variance).tolist(),
  }
  return summary, np.asarray(out.components)


def _position(params, geo: capture.Geometry):
  pe = params['Transformer']['posembed_input']['pos_embedding']
  sim = np.asarray(position.posemb_similarity(pe, geo.grid,
                                              geo.num_prefix_tokens))
  off = sim[~np.eye(len(sim), dtype=bool)]
  summary = {
      'shape': list(sim.shape),
      'min': float(sim.min()), 'max': float(sim.max()),
      'mean_off_diagonal': float(off.mean()) if off.size else None,
      # Row of the top-left patch, reshaped like the figure's first tile.
      'tile_0_0': sim[0].reshape(geo.grid).tolist(),
  }
  return summary, sim


def _chunks(fn, params, images: np.ndarray, batch_size: int):
  """Runs `fn` over fixed-size chunks (last one padded); concatenates."""
  n = len(images)
  size = min(batch_size, n)
  parts = []
  for start in range(0, n, size):
    chunk = images[start:start + size]
    pad = size - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:],
                                              chunk.dtype)])
    out = fn(params, chunk)
    parts.append([np.asarray(x)[:size - pad] for x in out])
  return [np.concatenate(xs) for xs in zip(*parts)]


def _attention(loaded, geo, images: np.ndarray, batch_size: int,
               renormalize: bool, class_names: Optional[Sequence[str]]):
  fn = analysis.make_analysis_fn(loaded.model, images.shape[1:3], renormalize)
  logits, dist, maps = _chunks(fn, loaded.params, images, batch_size)
  mean = dist.mean(axis=0)  # (L, H): mean over images.
  peaks = [list(np.unravel_index(np.argmax(m), m.shape)) for m in maps]
  top1 = logits.argmax(-1).tolist() if loaded.model.num_classes else None
  summary = {
      'distance': {
          'renormalize': renormalize, 'num_images': len(images),
          'units': 'pixels', 'shape': list(mean.shape),
          'mean_distance': mean.tolist(),
          'per_layer': {s: getattr(np, s)(mean, axis=1).tolist()
                        for s in ('min', 'median', 'mean', 'max')},
      },
      'rollout': {
          'shape': list(maps.shape),
          'mean_map': maps.mean(axis=0).tolist(),
          'peak_row_col': [[int(r), int(c)] for r, c in peaks],
          'map_mean': maps.mean(axis=(1, 2)).tolist(),
      },
      'top1': top1,
      'top1_names': ([class_names[i] for i in top1]
                     if class_names and top1 is not None else None),
  }
  return summary, {'distance': mean, 'rollout_maps': maps}


def run_analyses(loaded: loading.LoadedModel, figures: Sequence[str],
                 image_paths: Sequence[str], *, batch_size: int = 32,
                 renormalize: bool = False) -> Results:
  """All requested analyses; raises InspectError on unusable inputs."""
  mixer = isinstance(loaded.model, models.MlpMixer)
  wanted = [f for f in figures if f != 'filters']
  if mixer and wanted:
    raise loading.InspectError(
        f'{loaded.model_name} is an MLP-Mixer: it has no attention and no '
        f'position embedding, so {", ".join(wanted)} cannot be computed. '
        'Use --figures=filters for Mixer checkpoints.')
  res = loaded.resolution
  summary = {'model_name': loaded.model_name, 'resolution': res,
             'figures': list(figures)}
  arrays = {}
  if 'filters' in figures:
    summary['filters'], arrays['components'] = _filters(loaded.params, mixer)
  if wanted:
    geo = capture.geometry(loaded.model, (res, res))
    summary.update(grid=list(geo.grid), patch_pixels=list(geo.patch),
                   num_prefix_tokens=geo.num_prefix_tokens)
    arrays['geometry'] = geo
  if 'position' in figures:
    summary['position'], arrays['similarity'] = _position(loaded.params, geo)
  if any(f in figures for f in ATTENTION_FIGURES):
    images = loading.load_images(image_paths, res)
    summary['images'] = list(image_paths)
    att, att_arrays = _attention(loaded, geo, images, batch_size,
                                 renormalize, loaded.class_names)
    summary.update(att)
    arrays.update(att_arrays, images=(images + 1) / 2)
  return Results(summary, arrays)
