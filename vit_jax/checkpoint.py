"""Official `.npz` checkpoints: load, save, inspect, adapt to a new model.

The files in gs://vit_models and gs://mixer_models are NumPy `.npz` archives
holding one float32 array per parameter, keyed by its `/`-joined path, e.g.
`Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel`. The ViT files use the
pre-Linen numbering (one counter shared by all submodules of a block:
`LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`)
and the hybrids store GroupNorm parameters as (1, 1, 1, C).

- `load` reads a file (local, gs:// or https://) into the Linen tree of
  `models.VisionTransformer` / `models.MlpMixer`;
- `save` writes such a tree back in the official layout;
- `load_pretrained` adapts a file to a fine-tuning model (new head, resized
  position embedding, pre_logits kept or dropped);
- `inspect_params` compares two trees and says what differs;
- `interpolate_posembed` resizes a position embedding as the original does.

Errors: every problem with a file (missing, not an `.npz`, truncated or
corrupt, pickled objects, non-float or non-finite weights, the keys or shapes
of another model) raises `CheckpointError`, a `ValueError` whose one-paragraph
message names the file and the problem.

Command line (implemented in `checkpoint_download`):
  python -m vit_jax.checkpoint download ViT-B_16 --dir=checkpoints
  python -m vit_jax.checkpoint inspect checkpoints/ViT-B_16.npz
"""

import collections.abc
import contextlib
import http.client
import math
import os
import re
import shutil
import sys
import tempfile
from typing import Any, Dict, Optional, Tuple
import urllib.error
import urllib.request
import zipfile
import zlib

from absl import logging
import jax
import numpy as np
import scipy.ndimage

from vit_jax import checkpoint_names
from vit_jax import errors
from vit_jax import models

Params = Dict[str, Any]  # Nested dict of arrays.


class CheckpointError(errors.UserError):
  """A checkpoint file is missing, unreadable or does not fit the model."""


# GroupNorm modules of the hybrid ResNet root: gn1..3, gn_root, gn_proj.
_GROUPNORM_PARENT = re.compile(r'gn(\d+|_root|_proj)$')
_NUMBERED = re.compile(r'^(.*)_(\d+)$')
_ENCODER_BLOCK = re.compile(r'^encoderblock_\d+$')
# Linen -> pre-Linen names inside a ViT block: the old flax.nn API numbered
# LayerNorm, attention, LayerNorm, MLP with one shared counter.
_PRE_LINEN_BLOCK = {
    'LayerNorm_0': 'LayerNorm_0',
    'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
    'LayerNorm_1': 'LayerNorm_2',
    'MlpBlock_0': 'MlpBlock_3',
}
# Wrappers some writers put around the parameters (optimizer target,
# big_vision); the official buckets use none.
_PREFIXES = ('opt/target/', 'params/')
_POSEMB = ('Transformer', 'posembed_input', 'pos_embedding')


def _natural_key(name: str):
  """Sort key that compares digit runs as numbers: block_2 < block_10."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def _flatten(tree, prefix: str = '') -> Dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}; empty dicts (no params) vanish."""
  flat = {}
  for name, value in tree.items():
    key = f'{prefix}{name}'
    if isinstance(value, collections.abc.Mapping):
      flat.update(_flatten(value, key + '/'))
    else:
      flat[key] = value
  return flat


def _unflatten(flat: Dict[str, Any]) -> Params:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree = {}
  for key, value in flat.items():
    *parents, leaf = key.split('/')
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def _shape(x) -> Tuple[int, ...]:
  return tuple(getattr(x, 'shape', np.shape(x)))


def _linen_names(tree):
  """Renumbers `<prefix>_<k>` names per prefix, in natural order, per level.

  Pre-Linen `LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
  MlpBlock_3` become `LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0`; names that are already Linen stay unchanged.
  Natural order matters: a lexicographic sort would map encoderblock_10 to
  encoderblock_2 and silently scramble every model with more than 10 blocks.
  """
  if not isinstance(tree, dict):
    return tree
  counters = collections.Counter()
  renamed = {}
  for name in sorted(tree, key=_natural_key):
    match = _NUMBERED.match(name)
    new_name = name
    if match:
      prefix = match.group(1)
      new_name = f'{prefix}_{counters[prefix]}'
      counters[prefix] += 1
    renamed[new_name] = _linen_names(tree[name])
  return renamed


def _is_groupnorm_leaf(key: str) -> bool:
  parts = key.split('/')
  return (len(parts) >= 2 and parts[-1] in ('scale', 'bias')
          and bool(_GROUPNORM_PARENT.search(parts[-2])))


def _how_to_get(path: str, model_name: Optional[str] = None) -> str:
  return checkpoint_names.how_to_get(path, model_name=model_name)


def check_exists(path, *, model_name: Optional[str] = None) -> None:
  """Raises CheckpointError, saying how to get the file, if `path` is missing.

  Cheap (nothing is read), so that training can fail before it compiles.
  `model_name` improves the download hint when the file name is not a model
  name. https:// addresses are not checked here.
  """
  path = os.fspath(path)
  if path.startswith(('http://', 'https://')):
    return
  if path.startswith('gs://'):
    exists = _gcs_exists(path, model_name)
  else:
    exists = os.path.isfile(path)
  if not exists:
    raise CheckpointError(f'Checkpoint file {path} does not exist. '
                          f'{_how_to_get(path, model_name)}')


_GCS_HOST = 'storage.googleapis.com'


def _gcs_exists(path: str, model_name: Optional[str]) -> bool:
  """tf.io.gfile.exists for gs://, failing fast and readably when offline.

  (Offline, TensorFlow's GCS client retries for ~30 s and then raises an
  error whose text is a libcurl message.)
  """
  from vit_jax import utils  # pylint: disable=g-import-not-at-top
  if not utils.network_available(_GCS_HOST):
    raise CheckpointError(
        f'Cannot read {path}: no network (could not reach {_GCS_HOST}). '
        'Download the file where there is network and point '
        f'--config.pretrained_dir at its folder. '
        f'{_how_to_get(path, model_name)}')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    return tf.io.gfile.exists(path)
  except tf.errors.OpError as e:
    raise CheckpointError(
        f'Cannot read {path}: {e.message.splitlines()[0]}. '
        f'{_how_to_get(path, model_name)}') from None


@contextlib.contextmanager
def _open(path: str):
  """Yields a seekable binary file for a local, gs:// or https:// path."""
  if path.startswith(('http://', 'https://')):
    with tempfile.TemporaryFile() as tmp:
      try:
        with urllib.request.urlopen(path, timeout=60) as response:
          shutil.copyfileobj(response, tmp, 1 << 20)
      except (OSError, http.client.HTTPException) as e:
        raise CheckpointError(
            f'Could not fetch checkpoint {path}: {e}. {_how_to_get(path)}'
        ) from None
      tmp.seek(0)
      yield tmp
  elif path.startswith('gs://'):
    check_exists(path)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.io.gfile.GFile(path, 'rb') as f:
      yield f
  else:
    check_exists(path)
    with open(path, 'rb') as f:
      yield f


def _read_npz(f, path: str) -> Dict[str, np.ndarray]:
  """Reads every array of an open `.npz`, turning failures into messages."""
  magic = f.read(6)
  f.seek(0)
  if magic.startswith(b'\x93NUMPY'):
    raise CheckpointError(
        f'{path} is a single .npy array, not an .npz archive of named '
        'parameters; write checkpoints with vit_jax.checkpoint.save.')
  if not magic.startswith((b'PK\x03\x04', b'PK\x05\x06')):  # Empty ZIP.
    raise CheckpointError(
        f'{path} is not an .npz checkpoint (it does not start with a ZIP '
        f'signature; first bytes {magic!r}). Check the path, or download the '
        'file again if an error page was saved in its place.')
  corrupt = (f'{path} is truncated or corrupt; delete it and download it '
             'again (an interrupted download leaves such files).')
  arrays = {}
  try:
    with np.load(f, allow_pickle=False) as npz:
      for key in npz.files:
        try:
          arrays[key] = npz[key]
        except ValueError as e:
          if 'pickle' not in str(e):
            raise
          raise CheckpointError(
              f'{path}: entry {key!r} is a pickled (object) array, which is '
              'never loaded (it could run arbitrary code); official '
              'checkpoints hold only float32 arrays.') from None
  except CheckpointError:
    raise
  except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
          KeyError) as e:
    raise CheckpointError(f'{corrupt} ({type(e).__name__}: {e})') from None
  if not arrays:
    raise CheckpointError(f'{path} is an empty .npz archive: no parameters.')
  return arrays


def _strip_prefixes(flat: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  for prefix in _PREFIXES:
    if any(k.startswith(prefix) for k in flat):
      dropped = [k for k in flat if not k.startswith(prefix)]
      if dropped:
        logging.info('checkpoint: ignoring %d entries outside %s',
                     len(dropped), prefix)
      return {k[len(prefix):]: v for k, v in flat.items()
              if k.startswith(prefix)}
  return flat


def _checked_float32(flat: Dict[str, Any], path: str) -> Dict[str, Any]:
  """float32 copies of the arrays; raises on non-float or non-finite ones."""
  out = {}
  for key, x in flat.items():
    if not np.issubdtype(x.dtype, np.floating):
      raise CheckpointError(
          f'{path}: parameter {key!r} has dtype {x.dtype} (shape '
          f'{x.shape}); checkpoints hold float32 weights, so this is not a '
          'parameter file of this project or the official release.')
    x = np.asarray(x, np.float32)
    finite = np.isfinite(x)
    if not finite.all():
      raise CheckpointError(
          f'{path}: parameter {key!r} (shape {x.shape}) has '
          f'{x.size - np.count_nonzero(finite)} NaN or Inf values; the file '
          'comes from a diverged run or is damaged.')
    out[key] = x
  return out


def read_stored(path) -> Dict[str, np.ndarray]:
  """Every array of an `.npz`, keyed as stored in the file (no renaming).

  Args:
    path: local path, `gs://` path or `https://` URL.

  Raises:
    CheckpointError: missing, not an `.npz`, corrupt, pickled or empty.
  """
  path = os.fspath(path)
  with _open(path) as f:
    return _read_npz(f, path)


def loaded_names(keys) -> Dict[str, str]:
  """Stored key -> the `/`-joined key `load` gives that array.

  Keys outside a stripped prefix (see `load`) are absent: `load` drops
  them. E.g. 'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel' ->
  'Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel'.
  """
  # Renaming a tree whose leaves are their own stored keys gives the map.
  stripped = _strip_prefixes({k: k for k in keys})
  renamed = _flatten(_linen_names(_unflatten(stripped)))
  return {stored: new for new, stored in renamed.items()}


def load(path) -> Params:
  """Loads an official (or `save`d) `.npz` into a nested dict in Linen names.

  Args:
    path: local path, `gs://` path (read with tf.io.gfile) or `https://` URL.

  Returns:
    Nested dict of float32 numpy arrays with the structure of the model's
    params, e.g. `['Transformer']['encoderblock_0']['MlpBlock_0']['Dense_0']
    ['kernel']` of shape (hidden, mlp). Pre-Linen names are renumbered
    (`loaded_names`), GroupNorm (1, 1, 1, C) leaves are squeezed to (C,),
    and `opt/target/` or `params/` prefixes are stripped.

  Raises:
    CheckpointError: for any problem with the file; the message says which.
  """
  path = os.fspath(path)
  return from_stored(read_stored(path), source=path)


def from_stored(stored: Dict[str, np.ndarray], *, source: str) -> Params:
  """`load`'s conversion of `read_stored` arrays; `source` names the file."""
  flat = _checked_float32(_strip_prefixes(stored), source)
  flat = _flatten(_linen_names(_unflatten(flat)))
  for key, x in flat.items():
    if _is_groupnorm_leaf(key) and x.ndim > 1:
      flat[key] = x.reshape(x.shape[-1:])
  return _unflatten(flat)


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
  have, want = _flatten(params), _flatten(expected)
  # Shallow keys first: cls, embedding and head tell most about a model.
  order = lambda keys: sorted(keys, key=lambda k: (k.count('/'),
                                                   _natural_key(k)))
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
    raise CheckpointError(
        f'{source} does not match the model: ' + '; '.join(problems) +
        '. Is it a checkpoint of another model (hidden size, depth, patch '
        'size, hybrid or Mixer)? Compare its keys with `python -m '
        'vit_jax.checkpoint inspect FILE`.')
  return _unflatten({k: v for k, v in have.items() if k in want})


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


def _get(tree, path):
  for name in path:
    if not isinstance(tree, collections.abc.Mapping) or name not in tree:
      return None
    tree = tree[name]
  return tree


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
  posemb, target = _get(params, _POSEMB), _get(expected, _POSEMB)
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
    raise CheckpointError(
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
  restored = load(name)
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
  return _unflatten(dict(zip(keys, values)))


def copy(src: str, dst: str, progress: bool = True,
         block_size: int = 1024 * 1024 * 10) -> None:
  """Copies `src` to `dst` (both local or gs://) in blocks, with a progress
  bar (the original's helper)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tqdm  # pylint: disable=g-import-not-at-top
  blocks = math.ceil(tf.io.gfile.stat(src).length / block_size)
  with tf.io.gfile.GFile(src, 'rb') as fin, tf.io.gfile.GFile(dst,
                                                               'wb') as fout:
    for _ in tqdm.trange(blocks, disable=not progress):
      fout.write(fin.read(block_size))


def get_augreg_df(directory: str = 'gs://vit_models/augreg'):
  """The AugReg index (`{directory}/index.csv`) as a pandas DataFrame.

  One row per (pre-training, fine-tuning) checkpoint pair; columns as in
  the original's docstring (name, ds, lr, aug, wd, do, sd, best_val,
  final_val, final_test, adapt_*, params, infer_samples_per_sec, filename,
  adapt_filename). Needs pandas and, for gs://, network.
  """
  import pandas as pd  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with tf.io.gfile.GFile(f'{directory}/index.csv') as f:
    return pd.read_csv(f)


def to_official_layout(params) -> Dict[str, np.ndarray]:
  """Flat `{'a/b/c': float32 array}` in the names and shapes of the files.

  ViT blocks get their pre-Linen names back and GroupNorm leaves become
  (1, 1, 1, C); Mixer and ResNet names are the same in both numberings.
  Float32 inputs are not copied.
  """
  flat = {}
  for key, x in _flatten(jax.device_get(params)).items():
    parts = key.split('/')
    for i in range(len(parts) - 1):
      if _ENCODER_BLOCK.match(parts[i]):
        parts[i + 1] = _PRE_LINEN_BLOCK.get(parts[i + 1], parts[i + 1])
    x = np.asarray(x, np.float32)
    if _is_groupnorm_leaf(key) and x.ndim == 1:
      x = x.reshape(1, 1, 1, -1)
    if not np.isfinite(x).all():
      raise CheckpointError(
          f'Refusing to save: parameter {key!r} has NaN or Inf values.')
    flat['/'.join(parts)] = x
  return flat


def save(params, path) -> None:
  """Writes params as an official-layout `.npz` (see `to_official_layout`).

  Uncompressed `np.savez`, one float32 array per parameter, as the released
  files. The file appears atomically: it is written to a temporary file in
  the same directory and renamed, so a crash never leaves half a file.

  Args:
    params: nested dict of arrays (numpy or possibly sharded jax arrays).
    path: local destination, conventionally `<model_name>.npz`.
  """
  flat = to_official_layout(params)
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp',
                             prefix=os.path.basename(path) + '.')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **flat)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600 files.
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


if __name__ == '__main__':
  # Run the CLI from the imported modules so that exception classes match.
  from vit_jax import checkpoint_download  # pylint: disable=g-import-not-at-top
  sys.exit(checkpoint_download.main(sys.argv[1:]))
