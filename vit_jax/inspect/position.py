"""Cosine similarity of position embeddings (paper Fig. 7 centre, Fig. 10).

Only the patch rows of the learned position embedding take part: the first
`num_prefix_tokens` rows (class token) are dropped, the remaining N = gh*gw
rows are patches in raster (row-major) order. There is no centring.

The mosaic puts the similarity of patch (r, c) to every patch into tile
(r, c) of a gh x gw grid of gh x gw tiles, each framed by a NaN border
(drawn black). Non-square grids are supported: gh rows of tiles, gw columns.
"""

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array

_EPS = 1e-12  # Guards zero-norm embeddings against 0/0.


def check_grid(grid_shape: Sequence[int], num_tokens: int,
               num_prefix_tokens: int, what: str) -> Tuple[int, int]:
  """Validates that gh*gw + prefix == tokens; returns the grid as a tuple."""
  if len(grid_shape) != 2 or min(grid_shape) < 1:
    raise ValueError(f'grid_shape must be (rows, cols) >= 1, got {grid_shape}')
  gh, gw = (int(g) for g in grid_shape)
  if num_prefix_tokens < 0:
    raise ValueError(f'num_prefix_tokens must be >= 0, got {num_prefix_tokens}')
  expected = gh * gw + num_prefix_tokens
  if num_tokens != expected:
    raise ValueError(
        f'{what}: grid {gh}x{gw} with {num_prefix_tokens} prefix token(s) '
        f'expects {expected} tokens, got {num_tokens}.')
  return gh, gw


def posemb_similarity(pos_embedding: Array, grid_shape: Sequence[int],
                      num_prefix_tokens: int = 1) -> Array:
  """Cosine similarity between the position embeddings of all patch pairs.

  Args:
    pos_embedding: (1, T, D) or (T, D) learned position embedding
      (`Transformer/posembed_input/pos_embedding`).
    grid_shape: (gh, gw) patch grid; T must equal gh*gw + num_prefix_tokens.
    num_prefix_tokens: leading non-patch rows to drop (1 for the class token,
      0 for GAP models).

  Returns:
    S: (N, N) float32, N = gh*gw, S[i, j] = cos(q_i, q_j) in [-1, 1], raster
    order on both axes.
  """
  pe = jnp.asarray(pos_embedding)
  if pe.ndim == 3 and pe.shape[0] == 1:
    pe = pe[0]
  if pe.ndim != 2:
    raise ValueError('pos_embedding must have shape (1, T, D) or (T, D), got '
                     f'{tuple(jnp.shape(pos_embedding))}.')
  check_grid(grid_shape, pe.shape[0], num_prefix_tokens, 'pos_embedding')
  return _cosine(pe[num_prefix_tokens:].astype(jnp.float32))


@jax.jit
def _cosine(q: Array) -> Array:
  norm = jnp.linalg.norm(q, axis=-1, keepdims=True)
  q = q / jnp.maximum(norm, _EPS)
  return jnp.clip(q @ q.T, -1.0, 1.0)


def similarity_mosaic(sim: Array, grid_shape: Sequence[int],
                      border: int = 1) -> Array:
  """Tiles the similarity matrix as in the paper's figure.

  M[r*(gh+2b) + b + r', c*(gw+2b) + b + c'] = sim[r*gw + c, r'*gw + c'];
  border pixels are NaN.

  Args:
    sim: (N, N) similarity matrix from `posemb_similarity`.
    grid_shape: (gh, gw) with gh*gw == N.
    border: b, width in pixels of the NaN frame around every tile.

  Returns:
    (gh*(gh+2b), gw*(gw+2b)) float32 array, e.g. 63x63 for a 7x7 grid.
  """
  if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
    raise ValueError(f'sim must be square (N, N), got {tuple(sim.shape)}.')
  if border < 0:
    raise ValueError(f'border must be >= 0, got {border}.')
  grid = check_grid(grid_shape, sim.shape[0], 0, 'similarity matrix')
  return _mosaic(jnp.asarray(sim, jnp.float32), grid, int(border))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _mosaic(sim: Array, grid: Tuple[int, int], b: int) -> Array:
  gh, gw = grid
  tiles = sim.reshape(gh, gw, gh, gw)  # [r, c, r', c']
  tiles = jnp.pad(tiles, ((0, 0), (0, 0), (b, b), (b, b)),
                  constant_values=jnp.nan)
  # [r, r', c, c'] so that rows of tiles stack over rows inside tiles.
  tiles = tiles.transpose(0, 2, 1, 3)
  return tiles.reshape(gh * (gh + 2 * b), gw * (gw + 2 * b))
