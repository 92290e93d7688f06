"""Mean attention distance (paper Fig. 7 right, Fig. 11).

For layer l, head h and image b, with the patch-to-patch block A of the
attention weights (queries and keys of the class/prefix tokens dropped):

  MAD[b, l, h] = (1/N) sum_i sum_j A[i, j] * d[i, j]

where d[i, j] is the distance in pixels between the centres of patches i and
j: sqrt((ph * dr)^2 + (pw * dc)^2). The reported value is the mean over
images. This is the reference formula (keras-io `probing_vits`, credited to
S. Kornblith).

Decisions (spec/inspect.md §6.2):
  * Prefix tokens are dropped; rows are NOT renormalised by default, so a
    query that attends to the class token counts as attending "nowhere".
    `renormalize=True` divides each row by its patch mass instead; a query
    with no patch mass (0/0) then contributes 0, like without
    renormalisation.
  * Distances are between patch centres, not pixel pairs (attention to the
    own patch counts as 0 px).
  * Non-square grids and patches are supported.
"""

import functools
from typing import Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.inspect import position

Array = jax.Array
PatchSize = Union[int, Sequence[int]]


def patch_pixels(patch_size: PatchSize) -> Tuple[int, int]:
  """(ph, pw) from an int or a pair; validates positivity."""
  ph, pw = ((patch_size, patch_size) if np.ndim(patch_size) == 0
            else tuple(patch_size))
  if ph <= 0 or pw <= 0:
    raise ValueError(f'patch_size must be positive, got {patch_size}.')
  return int(ph), int(pw)


def distance_matrix(grid_shape: Sequence[int], patch_size: PatchSize) -> Array:
  """Centre-to-centre distances between patches in pixels.

  Args:
    grid_shape: (gh, gw).
    patch_size: P or (ph, pw), pixels per patch along each axis.

  Returns:
    (N, N) float32, N = gh*gw, raster order.
  """
  gh, gw = (int(g) for g in grid_shape)
  ph, pw = patch_pixels(patch_size)
  rows, cols = jnp.divmod(jnp.arange(gh * gw), gw)
  dy = ph * (rows[:, None] - rows[None, :])
  dx = pw * (cols[:, None] - cols[None, :])
  return jnp.sqrt((dy**2 + dx**2).astype(jnp.float32))


def per_image_distance(attention: Array, grid_shape: Tuple[int, int],
                       patch_size: Tuple[int, int], num_prefix_tokens: int,
                       renormalize: bool) -> Array:
  """MAD per image: (..., B, H, T, T) -> (..., B, H) in pixels (traceable).

  Works on one layer (B, H, T, T) or a stack (L, B, H, T, T), so the fused
  analysis can reduce each layer without stacking them.
  """
  p = num_prefix_tokens
  a = attention[..., p:, p:].astype(jnp.float32)
  d = distance_matrix(grid_shape, patch_size)
  # Elementwise product and sum over keys: XLA fuses it into one pass over
  # the weights (an einsum here lowers to a slow batched mat-vec on CPU).
  weighted = jnp.sum(a * d, axis=-1)
  if renormalize:
    mass = jnp.sum(a, axis=-1)
    weighted = jnp.where(mass > 0, weighted / jnp.where(mass > 0, mass, 1), 0)
  return jnp.mean(weighted, axis=-1)  # Mean over queries.


def check_attention(attention: Array, rank: int, what: str) -> None:
  """Raises unless attention has the given rank and square last axes."""
  if attention.ndim != rank or attention.shape[-1] != attention.shape[-2]:
    names = '(layers, batch, heads, T, T)' if rank == 5 else '(..., T, T)'
    raise ValueError(f'{what}: attention must have shape {names}, got '
                     f'{tuple(attention.shape)}.')


def mean_attention_distance(attention: Array, grid_shape: Sequence[int],
                            patch_size: PatchSize, num_prefix_tokens: int = 1,
                            renormalize: bool = False) -> Array:
  """Mean attention distance per layer and head, averaged over images.

  Args:
    attention: (L, B, H, T, T) attention weights (rows = queries, sum to 1),
      e.g. from `attention_weights`.
    grid_shape: (gh, gw); T must equal gh*gw + num_prefix_tokens.
    patch_size: P or (ph, pw) in pixels (for hybrids, the total stride).
    num_prefix_tokens: leading non-patch tokens (1 class token; 2 for
      distilled models; 0 for GAP models).
    renormalize: divide each query row by its mass on patch tokens.

  Returns:
    (L, H) float32 distances in pixels.
  """
  check_attention(attention, 5, 'mean_attention_distance')
  grid = position.check_grid(grid_shape, attention.shape[-1],
                             num_prefix_tokens, 'attention')
  return _mean_distance(attention, grid, patch_pixels(patch_size),
                        int(num_prefix_tokens), bool(renormalize))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _mean_distance(attention, grid, patch, prefix, renormalize):
  per_image = per_image_distance(attention, grid, patch, prefix, renormalize)
  return jnp.mean(per_image, axis=1)  # (L, B, H) -> (L, H)
