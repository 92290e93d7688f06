"""Few-shot linear regression on frozen features: sampling and the solver.

Pure array code, no model or dataset: `fewshot_accuracy` draws k examples
per class with `np.random.default_rng(seed)` (`sample_fewshot`), fits a
ridge regression from their features to {-1, +1}^K targets (`fit_ridge`:
standardised with the few-shot mean and std + 1e-5, a constant feature
100.0 appended as an almost unregularised bias) and scores the argmax on
the test features (`ridge_accuracy`). `fit_ridge` diagonalises the smaller
of X^T X and X X^T once, so every lambda of a list costs only a matmul.
`vit_jax.fewshot` feeds it model features and re-exports these names.
"""

import functools
from typing import NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import errors

BIAS_FEATURE = 100.0  # Constant feature: a bias that is barely regularised.
STD_EPS = 1e-5  # Added to the few-shot std before standardising.
DEFAULT_L2_REG = 2.0**10  # big_vision's default lambda.
DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = 3  # Seeds 0, 1, 2.
_TEST_CHUNK = 4096  # Test rows scored per jitted call (bounds the memory).
_HIGHEST = jax.lax.Precision.HIGHEST  # No bfloat16 passes on TPU/GPU.


class FewshotError(errors.UserError):
  """Few-shot settings that the model or the dataset cannot serve."""


class RidgeCache(NamedTuple):
  """One eigendecomposition from which ridge weights follow for any lambda.

  With X the standardised features plus the bias column (n, d + 1), Y the
  targets (n, K) and eigvals/Q of the (m, m) Gram matrix, the weights are
  W(lambda) = left @ (right / (eigvals + lambda)).
  """
  mean: jax.Array  # (d,) feature mean of the few-shot images.
  std: jax.Array  # (d,) their std + STD_EPS.
  eigvals: jax.Array  # (m,) m = d + 1 (X^T X) or n (X X^T).
  left: jax.Array  # (d + 1, m): Q, or X^T Q.
  right: jax.Array  # (m, K): Q^T X^T Y, or Q^T Y.


class FewshotResult(NamedTuple):
  """Accuracies (fractions in [0, 1]) of `fewshot_accuracy`."""
  shots: Tuple[int, ...]
  seeds: Tuple[int, ...]
  l2_regs: Tuple[float, ...]
  accuracy: np.ndarray  # (len(shots), len(seeds), len(l2_regs)).
  mean: np.ndarray  # (len(shots), len(l2_regs)): mean over seeds.


def check_shots(labels: np.ndarray, shots: Sequence[int], *,
                num_classes: int, where: str = 'the train split',
                class_names: Optional[Sequence[str]] = None) -> None:
  """Raises FewshotError unless every class has max(shots) examples."""
  if not shots or min(shots) < 1:
    raise FewshotError(f'shots={list(shots)}: give one or more counts >= 1.')
  counts = np.bincount(np.asarray(labels), minlength=num_classes)
  short = np.flatnonzero(counts < max(shots))
  if len(short):
    names = class_names or [str(c) for c in range(num_classes)]
    listed = ', '.join(f'{names[c]!r} ({counts[c]})' for c in short[:10])
    fix = (f'Use at most {counts.min()} shots.' if counts.min() else
           'Every class needs training images.')
    raise FewshotError(
        f'{max(shots)} shots need {max(shots)} images in every class, but '
        f'{where} has fewer in {len(short)} of {num_classes} classes: '
        f'{listed}. {fix}')


def sample_fewshot(labels: np.ndarray, *, shots: int, seed: int,
                   num_classes: int) -> np.ndarray:
  """Indices of `shots` examples per class, class by class (k * K,).

  Each class's members are permuted with one `np.random.default_rng(seed)`
  in class order, and the first `shots` kept: the same seed gives nested
  draws (the 1-shot images are among the 5-shot ones).
  """
  check_shots(labels, [shots], num_classes=num_classes)
  rng = np.random.default_rng(seed)
  return np.concatenate([
      rng.permutation(np.flatnonzero(labels == c))[:shots]
      for c in range(num_classes)])


def needed_indices(labels: np.ndarray, *, shots: Sequence[int],
                   seeds: Sequence[int], num_classes: int) -> np.ndarray:
  """Sorted union of the draws of every (shots, seed): what to decode."""
  draws = [sample_fewshot(labels, shots=max(shots), seed=s,
                          num_classes=num_classes) for s in seeds]
  return np.unique(np.concatenate(draws))


def _standardize(x, mean, std):
  """(x - mean) / std with the constant BIAS_FEATURE column appended."""
  x = (x.astype(jnp.float32) - mean) / std
  return jnp.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_FEATURE)


@functools.partial(jax.jit, static_argnames=('num_classes', 'gram'))
def fit_ridge(features: jax.Array, labels: jax.Array, *, num_classes: int,
              gram: Optional[str] = None) -> RidgeCache:
  """Eigendecomposes the few-shot problem once for `ridge_weights`.

  Args:
    features: (n, d) pre-logits features of the few-shot images.
    labels: int (n,) their classes in [0, num_classes).
    num_classes: K, the number of target columns.
    gram: 'features' (X^T X, (d+1)^2) or 'examples' (X X^T, n^2); None
      picks the smaller. Both give the same weights.
  """
  x = features.astype(jnp.float32)
  mean, std = x.mean(0), x.std(0) + STD_EPS
  x = _standardize(x, mean, std)
  y = 2.0 * jax.nn.one_hot(labels, num_classes, dtype=jnp.float32) - 1.0
  n, d = x.shape
  if gram not in (None, 'features', 'examples'):
    raise ValueError(f"gram={gram!r}: use 'features', 'examples' or None.")
  if gram == 'features' or (gram is None and d <= n):
    eigvals, q = jnp.linalg.eigh(jnp.matmul(x.T, x, precision=_HIGHEST))
    right = jnp.matmul(q.T, jnp.matmul(x.T, y, precision=_HIGHEST),
                       precision=_HIGHEST)
    return RidgeCache(mean, std, eigvals, q, right)
  eigvals, q = jnp.linalg.eigh(jnp.matmul(x, x.T, precision=_HIGHEST))
  left = jnp.matmul(x.T, q, precision=_HIGHEST)
  return RidgeCache(mean, std, eigvals, left,
                    jnp.matmul(q.T, y, precision=_HIGHEST))


@jax.jit
def ridge_weights(cache: RidgeCache, l2_regs: jax.Array) -> jax.Array:
  """(L, d + 1, K) weights minimising |X W - Y|^2 + lambda |W|^2 per lambda.

  The last row multiplies the BIAS_FEATURE column (see `_standardize`).
  """
  l2_regs = jnp.asarray(l2_regs, jnp.float32)
  scaled = cache.right[None] / (cache.eigvals[None, :, None]
                                + l2_regs[:, None, None])
  return jnp.einsum('dm,lmk->ldk', cache.left, scaled, precision=_HIGHEST)


@jax.jit
def _count_correct(cache: RidgeCache, weights: jax.Array,
                   features: jax.Array, labels: jax.Array) -> jax.Array:
  """(L,) number of rows whose argmax is their label (-1: padding)."""
  x = _standardize(features, cache.mean, cache.std)
  scores = jnp.einsum('nd,ldk->lnk', x, weights, precision=_HIGHEST)
  return (jnp.argmax(scores, -1) == labels[None]).sum(-1)


def ridge_accuracy(cache: RidgeCache, features: np.ndarray,
                   labels: np.ndarray, l2_regs: Sequence[float]) -> np.ndarray:
  """(L,) test accuracy per lambda; features (N, d) scored in chunks."""
  weights = ridge_weights(cache, jnp.asarray(l2_regs, jnp.float32))
  chunk = min(_TEST_CHUNK, len(labels))
  correct = np.zeros(len(l2_regs), np.int64)
  for start in range(0, len(labels), chunk):  # Fixed shape: one compile.
    x = np.zeros((chunk, features.shape[1]), np.float32)
    y = np.full((chunk,), -1, np.int32)
    part = slice(start, start + chunk)
    n = len(labels[part])
    x[:n], y[:n] = features[part], labels[part]
    correct += np.asarray(_count_correct(cache, weights, x, y))
  return correct / len(labels)


def fewshot_accuracy(
    *, train_features: np.ndarray, train_labels: np.ndarray,
    test_features: np.ndarray, test_labels: np.ndarray,
    shots: Sequence[int] = DEFAULT_SHOTS,
    seeds: Sequence[int] = tuple(range(DEFAULT_SEEDS)),
    l2_regs: Sequence[float] = (DEFAULT_L2_REG,),
    num_classes: Optional[int] = None,
    train_rows: Optional[np.ndarray] = None) -> FewshotResult:
  """Few-shot linear accuracy for every (shots, seed, lambda).

  Args:
    train_features: (m, d) features of the train pool, or only of the
      examples `train_rows` lists.
    train_labels: int (n,) labels of the whole train pool; the draws are
      made from these (`sample_fewshot`).
    test_features: (N, d); test_labels: int (N,).
    shots: images per class; seeds: one draw each; l2_regs: lambdas, all
      solved from one eigendecomposition per (shots, seed).
    num_classes: default max(label) + 1 over both splits.
    train_rows: sorted positions in train_labels of the rows of
      train_features (e.g. `needed_indices`); None: all, in order.

  Returns:
    FewshotResult with accuracies in [0, 1].
  """
  train_labels = np.asarray(train_labels)
  if num_classes is None:
    num_classes = int(max(train_labels.max(), np.max(test_labels))) + 1
  check_shots(train_labels, shots, num_classes=num_classes)
  rows = (np.arange(len(train_labels)) if train_rows is None
          else np.asarray(train_rows))
  if len(rows) != len(train_features):
    raise FewshotError(f'{len(train_features)} train features for '
                       f'{len(rows)} train rows.')
  acc = np.zeros((len(shots), len(seeds), len(l2_regs)))
  for i, k in enumerate(shots):
    for j, seed in enumerate(seeds):
      picks = sample_fewshot(train_labels, shots=k, seed=seed,
                             num_classes=num_classes)
      where = np.searchsorted(rows, picks)
      if np.any(where >= len(rows)) or np.any(
          rows[np.minimum(where, len(rows) - 1)] != picks):
        raise FewshotError('train_rows lacks drawn examples: compute the '
                           'features of `needed_indices(...)`.')
      cache = fit_ridge(train_features[where], train_labels[picks],
                        num_classes=num_classes)
      acc[i, j] = ridge_accuracy(cache, test_features, test_labels, l2_regs)
  return FewshotResult(tuple(shots), tuple(seeds), tuple(l2_regs), acc,
                       acc.mean(axis=1))
