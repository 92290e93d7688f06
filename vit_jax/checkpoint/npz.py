"""The official `.npz` format: read, check, convert names, save.

The files in gs://vit_models and gs://mixer_models are NumPy `.npz` archives
holding one float32 array per parameter, keyed by its `/`-joined path, e.g.
`Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel`. The ViT files use the
pre-Linen numbering (one counter shared by all submodules of a block:
`LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2`, `MlpBlock_3`)
and the hybrids store GroupNorm parameters as (1, 1, 1, C).

- `load` reads a file (local, gs:// or https://) into the Linen tree of
  `models.VisionTransformer` / `models.MlpMixer` (pre-Linen names renumbered as
  flax's `convert_pre_linen` does; GroupNorm squeezed);
- `save` writes such a tree back in the official layout, atomically.

Errors: every problem with a file (missing, not an `.npz`, truncated or
corrupt, pickled objects, non-float or non-finite weights, the keys or shapes
of another model) raises `CheckpointError`, a `ValueError` whose one-paragraph
message names the file and the problem.

Adapting a file to a fine-tuning model is `pretrained.py`'s.
"""

import collections
import collections.abc
import contextlib
import http.client
import math
import os
import re
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple
import urllib.error
import urllib.request
import zipfile
import zlib

from absl import logging
import jax
import numpy as np

from vit_jax import errors
from vit_jax.checkpoint import files
from vit_jax.checkpoint import names

Params = Dict[str, Any]  # Nested dict of arrays.


class CheckpointError(errors.UserError):
  """A checkpoint file is missing, unreadable or does not fit the model."""


# GroupNorm modules of the hybrid ResNet root: gn1..3, gn_root, gn_proj.
_GROUPNORM_PARENT = re.compile(r'gn(\d+|_root|_proj)$')
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


def natural_key(name: str):
  """Sort key that compares digit runs as numbers: block_2 < block_10."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def flatten(tree, prefix: str = '') -> Dict[str, Any]:
  """{'a': {'b': x}} -> {'a/b': x}; empty dicts (no params) vanish."""
  flat = {}
  for name, value in tree.items():
    key = f'{prefix}{name}'
    if isinstance(value, collections.abc.Mapping):
      flat.update(flatten(value, key + '/'))
    else:
      flat[key] = value
  return flat


def unflatten(flat: Dict[str, Any]) -> Params:
  """{'a/b': x} -> {'a': {'b': x}}."""
  tree = {}
  for key, value in flat.items():
    *parents, leaf = key.split('/')
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def shape_of(x) -> Tuple[int, ...]:
  """Shape of an array, ShapeDtypeStruct or nested list."""
  return tuple(getattr(x, 'shape', np.shape(x)))


_NUMBERED = re.compile(r'^(.*)_(\d+)$')


def _natural_key(name: str):
  """Sort key that compares digit runs as numbers: block_2 < block_10."""
  return [int(t) if t.isdigit() else t for t in re.split(r'(\d+)', name)]


def _linen_names(tree):
  """Renumbers `<prefix>_<k>` names per prefix, in natural order, per level.

  Pre-Linen `LayerNorm_0, MultiHeadDotProductAttention_1, LayerNorm_2,
  MlpBlock_3` become `LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0`; Linen names come back unchanged. This is what
  flax's `convert_pre_linen` does, written here because that function lives
  in `flax.training.checkpoints`, whose import pulls in orbax and (through
  flax.io) TensorFlow into every process that loads a file.
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
  return names.how_to_get(path, model_name=model_name)


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


def _gcs_exists(path: str, model_name: Optional[str]) -> bool:
  """tf.io.gfile.exists for gs://, failing fast and readably when offline.

  (Offline, TensorFlow's GCS client retries for a long while and then
  raises an error whose text is a libcurl message.)
  """
  if not files.network_available(names.GCS_HOST):
    raise CheckpointError(
        f'Cannot read {path}: no network (could not reach {names.GCS_HOST}). '
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
  renamed = flatten(_linen_names(unflatten(stripped)))
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
  flat = flatten(_linen_names(unflatten(flat)))
  for key, x in flat.items():
    if _is_groupnorm_leaf(key) and x.ndim > 1:
      flat[key] = x.reshape(x.shape[-1:])
  return unflatten(flat)


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
  for key, x in flatten(jax.device_get(params)).items():
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
  files, written with `files.atomic_write` (never half a file).

  Args:
    params: nested dict of arrays (numpy or possibly sharded jax arrays).
    path: local destination, conventionally `<model_name>.npz`.
  """
  save_flat(to_official_layout(params), path)


def save_flat(flat: Dict[str, np.ndarray], path) -> None:
  """Writes `{'a/b': array}` as an uncompressed `.npz`, atomically."""
  files.atomic_write(path, lambda f: np.savez(f, **flat))
