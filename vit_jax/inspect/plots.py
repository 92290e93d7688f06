"""Matplotlib figures of the paper's inspection panels (Fig. 6, Fig. 7).

Figures are built with the object-oriented API on an Agg canvas, so this
module never touches pyplot's global state or the user's backend (notebooks
keep theirs). Every function returns the `Figure` and, given `path`, also
writes it as PNG atomically (temporary file, then rename).
"""

import math
import os
from typing import Optional, Sequence

from matplotlib import colormaps
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from vit_jax.inspect import filters
from vit_jax.inspect import overlay
from vit_jax.inspect import position

_DPI = 100


def save_figure(fig: Figure, path: str) -> str:
  """Writes `fig` as PNG to `path` via a temporary file; returns the path."""
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    fig.savefig(tmp, format='png', dpi=_DPI)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _new_figure(width: float, height: float) -> Figure:
  fig = Figure(figsize=(width, height), dpi=_DPI)
  FigureCanvasAgg(fig)  # Agg for this figure only.
  return fig


def _finish(fig: Figure, path: Optional[str]) -> Figure:
  if path is not None:
    save_figure(fig, path)
  return fig


def plot_filters(components, path: Optional[str] = None, columns: int = 7,
                 title: str = 'RGB embedding filters\n'
                 '(first {k} principal components)') -> Figure:
  """Fig. 7 left: components as RGB tiles, row-major, 4 x 7 for k = 28.

  Args:
    components: (k, P, P, 3) raw components (normalised here, jointly per
      tile to [0, 1]); other channel counts are shown as their first 3 or
      as grey.
    path: optional PNG path.
    columns: tiles per row.
    title: `{k}` is replaced by the number of components.
  """
  tiles = np.asarray(filters.normalize_filters(np.asarray(components)))
  k = tiles.shape[0]
  cols = min(columns, k)
  rows = math.ceil(k / cols)
  fig = _new_figure(1.0 * cols, 1.0 * rows + 0.6)
  grid = fig.add_gridspec(rows, cols, wspace=0.08, hspace=0.08,
                          top=1 - 0.6 / (rows + 0.6), bottom=0.02,
                          left=0.02, right=0.98)
  for i in range(k):
    ax = fig.add_subplot(grid[i // cols, i % cols])
    tile = tiles[i]
    if tile.shape[-1] != 3:
      tile = tile[..., :3] if tile.shape[-1] > 3 else tile[..., 0]
    ax.imshow(tile, interpolation='nearest', cmap='gray', vmin=0, vmax=1)
    ax.set_axis_off()
  fig.suptitle(title.format(k=k))
  return _finish(fig, path)


def plot_position_similarity(sim, grid_shape: Sequence[int],
                             path: Optional[str] = None,
                             title: str = 'Position embedding similarity'
                             ) -> Figure:
  """Fig. 7 centre: the tiled cosine-similarity mosaic.

  Args:
    sim: (N, N) from `posemb_similarity`.
    grid_shape: (gh, gw).
    path: optional PNG path.
    title: panel title.
  """
  gh, gw = (int(g) for g in grid_shape)
  mosaic = np.asarray(position.similarity_mosaic(np.asarray(sim), (gh, gw)))
  cmap = colormaps['viridis'].with_extremes(bad='black')  # NaN borders.
  fig = _new_figure(4.6, 4.0)
  ax = fig.add_subplot(1, 1, 1)
  image = ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, vmin=-1, vmax=1,
                    interpolation='nearest')
  # One tick per tile, at the tile centre, numbered from 1.
  ax.set_xticks((np.arange(gw) + 0.5) * (gw + 2) - 0.5,
                [str(i + 1) for i in range(gw)])
  ax.set_yticks((np.arange(gh) + 0.5) * (gh + 2) - 0.5,
                [str(i + 1) for i in range(gh)])
  ax.set_xlabel('Input patch column')
  ax.set_ylabel('Input patch row')
  ax.set_title(title)
  bar = fig.colorbar(image, ax=ax, ticks=[-1, 1])
  bar.set_label('Cosine similarity')
  return _finish(fig, path)


def plot_attention_distance(mean_distance, path: Optional[str] = None,
                            title: str = '') -> Figure:
  """Fig. 7 right: one dot per (layer, head), heads coloured by tab10.

  Args:
    mean_distance: (L, H) in pixels.
    path: optional PNG path.
    title: panel title (the paper uses the model name).
  """
  dist = np.asarray(mean_distance)
  if dist.ndim != 2:
    raise ValueError(f'mean_distance must be (layers, heads), got {dist.shape}')
  layers, heads = dist.shape
  fig = _new_figure(4.6, 4.0)
  ax = fig.add_subplot(1, 1, 1)
  colors = [f'C{h % 10}' for h in range(heads)]  # The tab10 cycle.
  for h in range(heads):
    ax.scatter(np.arange(layers), dist[:, h], s=12, color=colors[h],
               label=f'Head {h + 1}')
  ax.set_xlabel('Network depth (layer)')
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_ylabel('Mean attention distance (pixels)')
  ax.set_ylim(bottom=0)
  ax.set_title(title)
  ax.legend(fontsize='x-small', ncol=2 if heads > 8 else 1, loc='lower right')
  return _finish(fig, path)


def plot_rollout(images, maps, patch_size: int, path: Optional[str] = None,
                 pairs_per_row: int = 4) -> Figure:
  """Fig. 6 / Fig. 14: (input | attention) pairs.

  Args:
    images: (B, H, W, 3) RGB in [0, 1].
    maps: (B, gh, gw) rollout maps.
    patch_size: pixels per token, used as the blur radius.
    path: optional PNG path.
    pairs_per_row: pairs per row of the figure.
  """
  images, maps = np.asarray(images), np.asarray(maps)
  if images.ndim != 4 or maps.ndim != 3 or len(images) != len(maps):
    raise ValueError(f'images (B, H, W, 3) and maps (B, gh, gw) must match, '
                     f'got {images.shape} and {maps.shape}.')
  n = len(images)
  cols = min(pairs_per_row, n)
  rows = math.ceil(n / cols)
  fig = _new_figure(2.0 * cols * 2, 2.0 * rows + 0.3)
  grid = fig.add_gridspec(rows, 2 * cols, wspace=0.04, hspace=0.12,
                          left=0.01, right=0.99, bottom=0.01,
                          top=1 - 0.3 / (2.0 * rows + 0.3))
  for i in range(n):
    r, c = divmod(i, cols)
    shown = overlay.attention_overlay(images[i], maps[i], patch_size)
    for j, (img, label) in enumerate(((images[i], 'Input'),
                                      (shown, 'Attention'))):
      ax = fig.add_subplot(grid[r, 2 * c + j])
      ax.imshow(np.clip(img, 0, 1))
      ax.set_axis_off()
      if r == 0:
        ax.set_title(label, fontsize='small')
  return _finish(fig, path)
