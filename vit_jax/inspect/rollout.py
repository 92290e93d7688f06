"""Attention rollout (Abnar & Zuidema 2020; paper Fig. 6, Fig. 14, App. D.8).

Per the paper: average the attention over all heads, add the identity for
the residual connection and renormalise rows,
  Ã_l = (Ā_l + I) / rowsum(Ā_l + I),
then multiply through all layers with later layers on the left,
  R = Ã_L ... Ã_1   (computed with `lax.scan`, carry R <- Ã_l R).
No head is discarded and no entries are dropped. Rows are renormalised
per layer (not by the matrix total, which underflows in float32 for deep
models).

The map shown in the figures is the class token's row of R over the patch
keys, reshaped to the grid and divided by its maximum; an all-zero map (e.g.
identity attention) stays zero instead of 0/0. Models without a class token
(GAP, num_prefix_tokens=0) use the mean of all query rows instead. The map
needs only that row, so `rollout_map` and the fused analysis compute
v^T Ã_L ... Ã_1 as a chain of vector-matrix products (O(L T^2) per image
instead of O(L T^3)); `attention_rollout` returns the full R.
"""

import functools
from typing import Sequence, Tuple

import jax
import jax.numpy as jnp

from vit_jax.inspect import distance
from vit_jax.inspect import position

Array = jax.Array


def residual_rows(mean_attention: Array) -> Array:
  """(..., T, T) head-averaged attention -> row-stochastic (A + I)/rowsum."""
  t = mean_attention.shape[-1]
  a = mean_attention.astype(jnp.float32) + jnp.eye(t, dtype=jnp.float32)
  return a / jnp.sum(a, axis=-1, keepdims=True)


def rollout_from_mean(mean_attention: Array) -> Array:
  """Rollout from head-averaged attention (L, B, T, T) -> (B, T, T)."""
  layers = residual_rows(mean_attention)
  t = layers.shape[-1]
  start = jnp.broadcast_to(jnp.eye(t, dtype=jnp.float32), layers.shape[1:])

  def step(r, a):
    return jnp.einsum('bij,bjk->bik', a, r), None

  result, _ = jax.lax.scan(step, start, layers)
  return result


def query_vector(batch: int, num_tokens: int, num_prefix_tokens: int
                 ) -> Array:
  """(B, T) weights of the query rows the map reads: e_0, or the mean row."""
  if num_prefix_tokens > 0:
    v = jnp.zeros((num_tokens,), jnp.float32).at[0].set(1.0)
  else:
    v = jnp.full((num_tokens,), 1.0 / num_tokens, jnp.float32)
  return jnp.broadcast_to(v, (batch, num_tokens))


def rollout_row(mean_attention: Array, num_prefix_tokens: int) -> Array:
  """The map's row of R without forming R: (L, B, T, T) -> (B, T).

  v^T R = v^T Ã_L ... Ã_1 is a chain of vector-matrix products applied from
  the left (last layer first): O(L T^2) per image instead of O(L T^3).
  With u = v / rowsum(Ā + I), v^T Ã = u^T Ā + u^T, so Ã is never formed.
  """
  layers, batch, t, _ = mean_attention.shape
  a = mean_attention.astype(jnp.float32)

  def step(v, a_l):
    u = v / (jnp.sum(a_l, axis=-1) + 1.0)
    return jnp.einsum('bi,bij->bj', u, a_l) + u, None

  v, _ = jax.lax.scan(step, query_vector(batch, t, num_prefix_tokens), a,
                      reverse=True)
  return v


def map_from_row(row: Array, grid_shape: Tuple[int, int],
                 num_prefix_tokens: int) -> Array:
  """(B, T) row of R -> (B, gh, gw) patch map scaled to max 1 (traceable)."""
  m = row[:, num_prefix_tokens:].reshape(row.shape[0], *grid_shape)
  peak = jnp.max(m, axis=(1, 2), keepdims=True)
  return jnp.where(peak > 0, m / jnp.where(peak > 0, peak, 1.0), 0.0)


def attention_rollout(attention: Array, num_prefix_tokens: int = 1) -> Array:
  """Attention rollout over all layers.

  Args:
    attention: (L, B, H, T, T) attention weights, rows summing to 1.
    num_prefix_tokens: leading non-patch tokens (only validated here; kept
      for symmetry with `rollout_map`).

  Returns:
    R: (B, T, T) float32, row-stochastic; R[b, i, j] is how much output
    token i draws from input token j.
  """
  distance.check_attention(attention, 5, 'attention_rollout')
  if not 0 <= num_prefix_tokens < attention.shape[-1]:
    raise ValueError(f'num_prefix_tokens={num_prefix_tokens} out of range '
                     f'for {attention.shape[-1]} tokens.')
  return _rollout(attention)


@jax.jit
def _rollout(attention: Array) -> Array:
  return rollout_from_mean(jnp.mean(attention.astype(jnp.float32), axis=2))


def rollout_map(attention: Array, grid_shape: Sequence[int],
                num_prefix_tokens: int = 1) -> Array:
  """Class-token rollout map over the patch grid (what Fig. 6 overlays).

  Args:
    attention: (L, B, H, T, T) attention weights.
    grid_shape: (gh, gw); T must equal gh*gw + num_prefix_tokens.
    num_prefix_tokens: leading non-patch tokens; the map is row 0 of R over
      the patch keys (prefix keys dropped). 0: mean over all query rows.

  Returns:
    (B, gh, gw) float32 in [0, 1], max 1 per image unless all zero.
  """
  distance.check_attention(attention, 5, 'rollout_map')
  grid = position.check_grid(grid_shape, attention.shape[-1],
                             num_prefix_tokens, 'attention')
  return _rollout_map(attention, grid, int(num_prefix_tokens))


@functools.partial(jax.jit, static_argnums=(1, 2))
def _rollout_map(attention, grid, prefix):
  heads_mean = jnp.mean(attention.astype(jnp.float32), axis=2)
  return map_from_row(rollout_row(heads_mean, prefix), grid, prefix)
