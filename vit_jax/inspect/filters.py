"""Principal components of the patch-embedding filters (paper Fig. 7 left).

The patch embedding is a conv kernel K of shape (P, P, C, D) (HWIO, the
official layout). Its D output filters are the samples: row d of the data
matrix X (D, P*P*C) is K[:, :, :, d] flattened in C order over (y, x, c).

Decisions (the paper is silent, see spec/inspect.md §6.1):
  * PCA is centred (the sklearn `PCA` convention): X_c = X - mean over filters.
  * Sign: each component is flipped so that its entry of largest magnitude
    is positive; ties go to the first index (sklearn >= 1.5, `svd_flip` with
    `u_based_decision=False`). This makes the output deterministic.
  * Explained variance uses ddof=1 (sigma^2 / (D - 1)); the ratio divides by
    the total variance over all components (the squared Frobenius norm).
  * Computed with `eigh` of the Gram/covariance matrix, not `svd` (same
    components up to float32 rounding, several times faster on CPU).
  * Display: joint min-max per component over all P*P*C values (the figure's
    tiles each reach exactly 0 and 255), so flipping a component's sign gives
    exactly the photographic negative.
"""

import functools
from typing import NamedTuple, Tuple

import jax
import jax.numpy as jnp

Array = jax.Array


class EmbeddingFilters(NamedTuple):
  """PCA of the embedding filters.

  components: (k, P, P, C) unit-norm principal directions as images, in
    decreasing order of variance.
  explained_variance_ratio: (k,) share of the total variance, in [0, 1].
  explained_variance: (k,) variance along each component (ddof=1), in
    squared kernel units.
  """
  components: Array
  explained_variance_ratio: Array
  explained_variance: Array


def _check_kernel(kernel: Array, num_components: int) -> None:
  if kernel.ndim != 4:
    raise ValueError(
        'embedding kernel must have rank 4 (P, P, C, D) in HWIO order, got '
        f'shape {tuple(kernel.shape)}. PyTorch ports store (D, C, P, P): '
        'transpose with (2, 3, 1, 0) first.')
  ph, pw, c, d = kernel.shape
  max_k = min(d, ph * pw * c)
  if not 1 <= num_components <= max_k:
    raise ValueError(
        f'num_components={num_components} must be in [1, {max_k}] for a '
        f'kernel of shape {tuple(kernel.shape)} (min of filters and '
        'filter size).')


def _fix_signs(vt: Array) -> Array:
  """Flips each row of vt so that its largest-|entry| is positive."""
  # argmax returns the first maximum, which is the documented tie rule.
  idx = jnp.argmax(jnp.abs(vt), axis=1)
  signs = jnp.sign(jnp.take_along_axis(vt, idx[:, None], axis=1))
  return vt * jnp.where(signs == 0, 1.0, signs)


def embedding_filters(kernel: Array,
                      num_components: int = 28) -> EmbeddingFilters:
  """Top principal components of the patch-embedding filters.

  Args:
    kernel: (P, P, C, D) patch-embedding kernel (`params['embedding']
      ['kernel']`); P may differ per axis (ph, pw).
    num_components: k, how many components to keep (the paper shows 28).

  Returns:
    `EmbeddingFilters` with components (k, ph, pw, C), ratios (k,) and
    variances (k,), all float32.
  """
  _check_kernel(kernel, num_components)
  return _embedding_filters(jnp.asarray(kernel, jnp.float32), num_components)


def _top_directions(x: Array, k: int) -> Tuple[Array, Array]:
  """Top-k right singular vectors (k, F) and squared singular values (k,).

  Uses `eigh` of the smaller of the Gram (D x D) and covariance (F x F)
  matrices: on CPU it is 3x (ViT-B/16) to 12x (ViT-L/32) faster than
  `svd`, and the leading components, the only ones shown, are accurate.
  """
  d, f = x.shape
  hi = jax.lax.Precision.HIGHEST  # TPUs would otherwise use bf16 passes.
  if d <= f:
    lam, u = jnp.linalg.eigh(jnp.matmul(x, x.T, precision=hi))
    u = u[:, ::-1][:, :k]
    v = jnp.matmul(u.T, x, precision=hi)  # sigma_k * v_k.
    norm = jnp.linalg.norm(v, axis=1, keepdims=True)
    v = v / jnp.where(norm > 0, norm, 1.0)
  else:
    lam, vecs = jnp.linalg.eigh(jnp.matmul(x.T, x, precision=hi))
    v = vecs[:, ::-1][:, :k].T
  return v, jnp.maximum(lam[::-1][:k], 0.0)


@functools.partial(jax.jit, static_argnums=(1,))
def _embedding_filters(kernel: Array, k: int) -> EmbeddingFilters:
  ph, pw, c, d = kernel.shape
  # (D, ph*pw*C): move the filter axis first; the rest flattens in C order.
  x = jnp.moveaxis(kernel, -1, 0).reshape(d, ph * pw * c)
  x = x - jnp.mean(x, axis=0, keepdims=True)
  vt, s2 = _top_directions(x, k)
  ddof = max(d - 1, 1)  # ddof=1; a single filter has no variance.
  total = jnp.sum(x * x) / ddof  # Trace: the variance of all components.
  variance = s2 / ddof
  ratio = variance / jnp.where(total > 0, total, 1.0)
  components = _fix_signs(vt).reshape(k, ph, pw, c)
  return EmbeddingFilters(components, ratio, variance)


@jax.jit
def normalize_filters(components: Array) -> Array:
  """Display normalisation: joint min-max per component to [0, 1].

  Args:
    components: (k, ...) one image per component, e.g. (k, P, P, C).

  Returns:
    Same shape, float32; each component spans exactly [0, 1] over all of its
    values (a constant component maps to 0).
  """
  axes = tuple(range(1, components.ndim))
  lo = jnp.min(components, axis=axes, keepdims=True)
  hi = jnp.max(components, axis=axes, keepdims=True)
  span = hi - lo
  safe = jnp.where(span > 0, span, 1.0)
  return jnp.where(span > 0, (components - lo) / safe, 0.0).astype(jnp.float32)
