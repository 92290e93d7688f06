"""Adapting a checkpoint to a model: check, resize posemb, load_pretrained.

- `inspect_params` compares two trees and says what differs;
- `interpolate_posembed` resizes a position embedding as the original does
  (`fit_posemb` applies it to a tree; `get_posemb` finds it);
- `load_pretrained` adapts a file to a fine-tuning model (new head, resized
  position embedding, pre_logits kept or dropped).
"""

import collections.abc
import math
import os
from typing import Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np
import scipy.ndimage

from vit_jax import models
from vit_jax.checkpoint import npz

Params = npz.Params
_shape = npz.shape_of
POSEMB_PATH = ('Transformer', 'posembed_input', 'pos_embedding')


def _listing(title: str, items, limit: int = 10) -> str:
  shown = ', '.join(items[:limit])
  more = f', ... and {len(items) - limit} more' if len(items) > limit else ''
  return f'{title}: {shown}{more}'


def inspect_params(*, params, expected, fail_if_extra: bool = True,
                   fail_if_missing: bool = True,
                   source: str = 'The checkpoint') -> Params:
  """Checks that `params` has the keys and shapes of `expected`.

  Args:
    params: nested dict of arrays (e.g. from `load`).
    expected: nested dict of arrays or `jax.ShapeDtypeStruct`s (the model's).
    fail_if_extra: raise on keys only in `params`; otherwise drop them.
    fail_if_missing: raise on keys only in `expected`; otherwise log them.
    source: how the message names `params`, e.g. 'Checkpoint x.npz'.

  Returns:
    `params` as a nested dict, without extra keys when fail_if_extra=False.

  Raises:
    CheckpointError: listing missing keys, unexpected keys and shape
      mismatches (`key: file shape (a, b) vs model shape (c, d)`), at most 10
      of each.
  """
  have, want = npz.flatten(params), npz.flatten(expected)
  # Shallow keys first: cls, embedding and head tell most about a model.
  order = lambda keys: sorted(keys, key=lambda k: (k.count('/'),
                                                   npz.natural_key(k)))
  missing = order(want.keys() - have.keys())
  extra = order(have.keys() - want.keys())
  mismatched = [
      f'{k}: file shape {_shape(have[k])} vs model shape {_shape(want[k])}'
      for k in order(have.keys() & want.keys())
      if _shape(have[k]) != _shape(want[k])]
  problems = []
  if missing and fail_if_missing:
    problems.append(_listing(f'{len(missing)} missing keys', missing))
  elif missing:
    logging.info('inspect_params: missing keys %s', missing)
  if extra and fail_if_extra:
    problems.append(_listing(f'{len(extra)} unexpected keys', extra))
  elif extra:
    logging.info('inspect_params: dropping extra keys %s', extra)
  if mismatched:
    problems.append(_listing(f'{len(mismatched)} shape mismatches',
                             mismatched))
  if problems:
    raise npz.CheckpointError(
        f'{source} does not match the model: ' + '; '.join(problems) +
        '. Is it a checkpoint of another model (hidden size, depth, patch '
        'size, hybrid or Mixer)? Compare its keys with `python -m '
        'vit_jax.checkpoint inspect FILE`.')
  return npz.unflatten({k: v for k, v in have.items() if k in want})


def interpolate_posembed(posemb, num_tokens: int, has_class_token: bool, *,
                         grid_shape: Optional[Tuple[int, int]] = None
                         ) -> np.ndarray:
  """Resizes a position embedding as the original release does.

  The class row (if any) is passed through unchanged; the square grid of the
  remaining rows is resized with `scipy.ndimage.zoom(order=1)`, i.e. bilinear
  interpolation with aligned corners (corner values are copied exactly).

  Args:
    posemb: (1, N_old, D) with N_old = [1 +] g * g, rows in row-major order.
    num_tokens: N_new, including the class row if there is one.
    has_class_token: whether row 0 is the class token's.
    grid_shape: target (gh, gw); e.g. (24, 16) for 384x256 px with patch
      16. None: the grid of N_new must be square.

  Returns:
    float32 array of shape (1, num_tokens, D).
  """
  posemb = np.asarray(posemb, np.float32)
  if posemb.ndim != 3 or posemb.shape[0] != 1:
    raise ValueError(f'expected a (1, tokens, dim) array, got {posemb.shape}')
  n_prefix = 1 if has_class_token else 0
  prefix, grid = posemb[:, :n_prefix], posemb[0, n_prefix:]
  gs_old = math.isqrt(len(grid))
  if not len(grid):
    raise ValueError('it holds no grid rows (saved from an image smaller '
                     'than the patch stride), so there is nothing to resize')
  if gs_old * gs_old != len(grid):
    raise ValueError(f'{len(grid)} grid rows do not form a square grid')
  if grid_shape is None:
    gs_new = math.isqrt(max(num_tokens - n_prefix, 0))
    if gs_new * gs_new != num_tokens - n_prefix:
      raise ValueError(
          f'{num_tokens - n_prefix} target grid rows do not form a square '
          'grid; pass grid_shape=(height, width) in patches')
    grid_shape = (gs_new, gs_new)
  gh, gw = grid_shape
  if gh * gw + n_prefix != num_tokens:
    raise ValueError(f'grid_shape {grid_shape} does not give {num_tokens} '
                     f'tokens (class row: {has_class_token})')
  grid = grid.reshape(gs_old, gs_old, -1)
  grid = scipy.ndimage.zoom(grid, (gh / gs_old, gw / gs_old, 1), order=1)
  assert grid.shape[:2] == (gh, gw), (grid.shape, grid_shape)
  return np.concatenate([prefix, grid.reshape(1, gh * gw, -1)], axis=1)


def get_path(tree, path: Sequence[str]):
  """tree[path[0]][path[1]]...; None where a level is missing."""
  for name in path:
    if not isinstance(tree, collections.abc.Mapping) or name not in tree:
      return None
    tree = tree[name]
  return tree


def get_posemb(tree):
  """The position embedding (1, N, D) of a params tree, or None (Mixer,
  no posemb)."""
  return get_path(tree, POSEMB_PATH)


def fit_posemb(params: Params, expected, *, has_class_token: bool,
               grid_shape: Optional[Tuple[int, int]] = None,
               source: str = 'The checkpoint') -> None:
  """Resizes params' position embedding, in place, to expected's length.

  Does nothing when either has none, the lengths agree, or the widths
  differ (then `inspect_params` reports the mismatch). See
  `interpolate_posembed` for `has_class_token` and `grid_shape`.

  Raises:
    CheckpointError: the embedding cannot be resized to that length.
  """
  posemb, target = get_posemb(params), get_posemb(expected)
  if (posemb is None or target is None or _shape(posemb) == _shape(target)
      or len(_shape(target)) != 3 or _shape(posemb)[-1] != _shape(target)[-1]):
    return
  logging.info('%s: resizing the position embedding %s to %s', source,
               _shape(posemb), _shape(target))
  try:
    params['Transformer']['posembed_input']['pos_embedding'] = (
        interpolate_posembed(posemb, _shape(target)[1], has_class_token,
                             grid_shape=grid_shape))
  except ValueError as e:
    raise npz.CheckpointError(
        f'{source}: cannot resize the position embedding from '
        f'{_shape(posemb)} to {_shape(target)}: {e}.') from None


def load_pretrained(*, pretrained_path, init_params, model_config,
                    grid_shape: Optional[Tuple[int, int]] = None) -> Params:
  """Loads a checkpoint and adapts it to a fine-tuning model.

  - `head` always comes from `init_params` (the new task's fresh head);
  - a `pre_logits` layer in the file is dropped when the model has
    `representation_size=None` ("drop-head variant"), kept otherwise;
  - the position embedding is resized with `interpolate_posembed` when the
    model's token count differs (e.g. 224 px file, 384 px fine-tuning).

  Args:
    pretrained_path: path or URL of the `.npz` (see `load`).
    init_params: the model's params (nested dict of numpy or jax arrays).
    model_config: the model's ConfigDict (`classifier`,
      `representation_size`).
    grid_shape: (gh, gw) patch grid of the model, needed only when it is not
      square (e.g. (24, 16) for 384x256 images and patch 16).

  Returns:
    Nested dict of numpy arrays with exactly the structure and shapes of
    `init_params`.

  Raises:
    CheckpointError: if the file cannot be read or does not fit the model.
  """
  name = os.fspath(pretrained_path)
  restored = npz.load(name)
  if model_config.get('representation_size') is None:
    if restored.pop('pre_logits', None) is not None:
      logging.info('load_pretrained: drop-head variant (pre_logits dropped)')
  if 'head' in init_params:
    restored['head'] = jax.device_get(dict(init_params['head']))
  elif restored.pop('head', None) is not None:
    logging.info('load_pretrained: model has no head; dropped the file\'s')
  fit_posemb(restored, init_params, has_class_token=models.has_class_token(
      model_config), grid_shape=grid_shape, source=name)
  # Lenient on extra keys (dropped, logged), as the original; strict on
  # missing keys and shapes, which the original let fail later in apply.
  return inspect_params(params=restored, expected=init_params,
                        fail_if_extra=False, source=f'Checkpoint {name}')


def recover_tree(keys, values) -> Params:
  """Nested dict from '/'-separated `keys` and their `values` (the
  original's helper, e.g. to read a checkpoint's sub-trees by hand)."""
  return npz.unflatten(dict(zip(keys, values)))


