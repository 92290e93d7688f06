"""`python -m vit_jax.checkpoint inspect`: a file's keys, and what load does.

`inspect_file` prints the arrays as stored, their size, then
`load_changes`: the renames (pre-Linen numbering, stripped prefixes) and
reshapes (GroupNorm) that `npz.load` applies.
"""

import collections
import os
from typing import List

from flax import traverse_util

from vit_jax import workdir as workdir_lib
from vit_jax.checkpoint import npz


def inspect_file(path: str) -> None:
  """Prints a checkpoint's keys and shapes as stored, then what loading does.

  Args:
    path: an `.npz` (local, gs://, https://) or a training workdir (its
      model.npz), as `predict` and `inspect` accept.
  """
  npz_file = workdir_lib.npz_path(path)
  if os.path.isdir(path) and not os.path.isfile(npz_file):
    raise npz.CheckpointError(
        f'{path} is a directory without {workdir_lib.MODEL_NPZ}: training '
        'writes it into its workdir when it finishes (config.export=True). '
        'Pass a finished workdir or an .npz file.')
  stored = npz.read_stored(npz_file)
  loaded = traverse_util.flatten_dict(
      npz.from_stored(stored, source=npz_file), sep='/')
  width = max(len(k) for k in stored)
  print(f'{npz_file}: keys as stored in the file')
  for key, x in stored.items():
    print(f'  {key:<{width}}  {x.shape}')
  floats = sum(x.size for x in stored.values())
  print(f'{len(stored)} arrays, {floats:,} parameters '
        f'({floats * 4 / 2**20:.2f} MiB as float32).')
  print('\n'.join(load_changes(stored, loaded)))


def _keys(n: int) -> str:
  return f'{n} key' if n == 1 else f'{n} keys'


def load_changes(stored, loaded) -> List[str]:
  """Lines saying how `checkpoint.load` renames and reshapes `stored`.

  Args:
    stored: {key as in the file: array}, from `checkpoint.read_stored`.
    loaded: the same flattened as `checkpoint.load` returns it.
  """
  names = npz.loaded_names(stored)
  renames = collections.Counter()
  reshapes = collections.Counter()
  for key, new in names.items():
    old_parts, new_parts = key.split('/'), new.split('/')
    if len(old_parts) > len(new_parts):
      cut = len(old_parts) - len(new_parts)
      renames['/'.join(old_parts[:cut]) + '/', ''] += 1
    for old_part, new_part in zip(old_parts[-len(new_parts):], new_parts):
      if old_part != new_part:
        renames[old_part, new_part] += 1
    shape = tuple(loaded[new].shape)
    if shape != stored[key].shape:
      reshapes[stored[key].shape, shape] += 1
  if not renames and not reshapes and len(names) == len(stored):
    return ['checkpoint.load keeps these names and shapes.']
  lines = ['checkpoint.load (so predict, inspect and fine-tuning) changes:']
  for (old, new), n in sorted(renames.items()):
    change = f'drops the prefix {old}' if not new else f'{old} -> {new}'
    lines.append(f'  {change}  ({_keys(n)})')
  for (old, new), n in sorted(reshapes.items()):
    lines.append(f'  shape {old} -> {new}  ({_keys(n)}, GroupNorm)')
  if len(names) < len(stored):
    lines.append(f'  ignores {_keys(len(stored) - len(names))} outside '
                 'that prefix')
  return lines
