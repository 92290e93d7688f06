"""Renders the four inspection figures from synthetic inputs with known
structure, to check layouts without a checkpoint:

  python docs/inspect/make_synthetic_figures.py   # writes docs/inspect/*.png

filters.png: PCA of a 32x32 kernel spanned by smooth 2-D cosines (smooth
tiles, decreasing variance). position.png: 2-D sinusoidal embeddings on a
7x7 grid (bright self-similarity at (r, c) of tile (r, c), row/column
stripes). distance.png: Gaussian-local attention whose width grows with
depth. rollout.png: class-token attention on one blob (top right; the second
image flips it to the bottom).
"""

import os

import numpy as np

from vit_jax import inspect as vi
from vit_jax.inspect import plots

OUT = os.path.dirname(os.path.abspath(__file__))


def filters_figure(rng):
  p, d = 32, 256
  yy, xx = np.mgrid[0:p, 0:p] / p
  basis = np.stack([np.cos(np.pi * (a * yy + b * xx))[..., None]
                    * rng.normal(size=3) for a in range(6) for b in range(6)],
                   -1)  # (P, P, 3, 36)
  coef = rng.normal(size=(36, d)) * np.geomspace(1, .05, 36)[:, None]
  kernel = basis @ coef + 0.01 * rng.normal(size=(p, p, 3, d))
  pcs = vi.embedding_filters(kernel.astype(np.float32), 28)
  plots.plot_filters(pcs.components, os.path.join(OUT, 'filters.png'))


def position_figure(rng):
  g = 7
  r, c = np.divmod(np.arange(g * g), g)
  f = np.geomspace(0.3, 2, 8)
  pe = np.concatenate([np.sin(np.outer(r, f)), np.cos(np.outer(r, f)),
                       np.sin(np.outer(c, f)), np.cos(np.outer(c, f))], 1)
  pe = np.concatenate([rng.normal(size=(1, 32)), pe])[None]
  plots.plot_position_similarity(vi.posemb_similarity(pe, (g, g)), (g, g),
                                 os.path.join(OUT, 'position.png'))


def distance_figure(rng):
  g, layers, heads = 14, 12, 8
  d = np.asarray(vi.distance_matrix((g, g), 16))
  att = np.empty((layers, 1, heads, g * g + 1, g * g + 1), np.float32)
  for l in range(layers):
    for h in range(heads):
      a = np.pad(np.exp(-d / (10 + (l + 1) * rng.uniform(2, 25))),
                 ((1, 0), (1, 0)), constant_values=0.05)
      att[l, 0, h] = a / a.sum(-1, keepdims=True)
  plots.plot_attention_distance(vi.mean_attention_distance(att, (g, g), 16),
                                os.path.join(OUT, 'distance.png'),
                                title='synthetic')


def rollout_figure():
  g, t = 14, 197
  image = np.empty((224, 224, 3), np.float32)
  image[..., 0] = np.linspace(0, 1, 224)[None]
  image[..., 1] = np.linspace(0, 1, 224)[:, None]
  image[..., 2] = .5
  rr, cc = np.divmod(np.arange(g * g), g)
  blob = np.exp(-((rr - 4.0)**2 + (cc - 9.0)**2) / 6)
  a = np.full((t, t), 1 / t)
  a[0] = np.concatenate([[0.1], 0.9 * blob / blob.sum()])
  att = np.broadcast_to(a, (4, 1, 2, t, t)).astype(np.float32)
  m = np.asarray(vi.rollout_map(att, (g, g)))
  plots.plot_rollout(np.stack([image, image[::-1]]),
                     np.concatenate([m, m[:, ::-1]]), 16,
                     os.path.join(OUT, 'rollout.png'))


if __name__ == '__main__':
  generator = np.random.default_rng(0)
  filters_figure(generator)
  position_figure(generator)
  distance_figure(generator)
  rollout_figure()
