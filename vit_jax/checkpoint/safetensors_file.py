"""Reads and writes `.safetensors` files with NumPy alone (no torch).

The format: an 8-byte little-endian header length n, n bytes of JSON
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
"__metadata__": {str: str}}`, then the raw little-endian tensor bytes, the
offsets counted from the end of the header. Parsing it here (about as long
as wrapping a library) lets every failure name the file and the tensor.
"""

import json
import os
import struct
from typing import Dict, Optional, Tuple

import numpy as np

from vit_jax.checkpoint import files
from vit_jax.checkpoint import npz

_DTYPES = {'F64': np.float64, 'F32': np.float32, 'F16': np.float16,
           'BF16': np.uint16, 'I64': np.int64, 'I32': np.int32,
           'I16': np.int16, 'I8': np.int8, 'U8': np.uint8, 'BOOL': np.bool_}
_MAX_HEADER = 100 << 20  # The reference reader's limit.


def _bad(path: str, what: str) -> npz.CheckpointError:
  return npz.CheckpointError(
      f'{path} is not a readable .safetensors file: {what}. Download or '
      'convert it again (an interrupted copy leaves such files).')


def _header(f, path: str, size: int) -> Tuple[dict, int]:
  """The parsed JSON header and the offset where the tensor bytes start."""
  if size < 8:
    raise _bad(path, f'{size} bytes, shorter than the 8-byte header length')
  (n,) = struct.unpack('<Q', f.read(8))
  if n > min(_MAX_HEADER, size - 8):
    raise _bad(path, f'header length {n} exceeds the file ({size} bytes)')
  try:
    header = json.loads(f.read(n))
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    raise _bad(path, f'header is not JSON ({e})') from None
  if not isinstance(header, dict):
    raise _bad(path, 'header is not a JSON object')
  return header, 8 + n


def _to_float32_or_keep(raw: np.ndarray, dtype: str) -> np.ndarray:
  if dtype == 'BF16':  # bfloat16 is the upper half of a float32.
    return (raw.astype(np.uint32) << 16).view(np.float32)
  return raw


def read(path) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
  """({name: array}, metadata) of a .safetensors file.

  BF16 tensors come back as float32 (exactly); other dtypes as stored.

  Raises:
    CheckpointError: truncated, malformed, or an unknown dtype; the message
      names the file and the first bad tensor.
  """
  path = os.fspath(path)
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    header, start = _header(f, path, size)
    metadata = header.pop('__metadata__', None) or {}
    arrays = {}
    for name, info in header.items():
      try:
        dtype, shape = info['dtype'], tuple(info['shape'])
        begin, end = info['data_offsets']
      except (TypeError, KeyError, ValueError):
        raise _bad(path, f'tensor {name!r} has a malformed entry') from None
      if dtype not in _DTYPES:
        raise _bad(path, f'tensor {name!r} has unknown dtype {dtype}')
      item = np.dtype(_DTYPES[dtype]).itemsize
      if end - begin != item * int(np.prod(shape)) or begin > end:
        raise _bad(path, f'tensor {name!r}: offsets {begin}..{end} do not '
                   f'hold shape {list(shape)} of {dtype}')
      if start + end > size:
        raise _bad(path, f'truncated: tensor {name!r} ends at byte '
                   f'{start + end} of a {size}-byte file')
      f.seek(start + begin)
      little = np.dtype(_DTYPES[dtype]).newbyteorder('<')
      raw = np.frombuffer(f.read(end - begin), little)
      raw = raw.astype(raw.dtype.newbyteorder('='))
      arrays[name] = _to_float32_or_keep(raw, dtype).reshape(shape)
  return arrays, metadata


def write(path, arrays: Dict[str, np.ndarray],
          metadata: Optional[Dict[str, str]] = None) -> None:
  """Writes float32 `arrays` as a .safetensors file, atomically."""
  header, offset, blobs = {}, 0, []
  for name, x in arrays.items():
    x = np.ascontiguousarray(x, np.float32)
    blob = x.astype('<f4').tobytes()
    header[name] = {'dtype': 'F32', 'shape': list(x.shape),
                    'data_offsets': [offset, offset + len(blob)]}
    offset += len(blob)
    blobs.append(blob)
  if metadata:
    header['__metadata__'] = dict(metadata)
  text = json.dumps(header, separators=(',', ':')).encode()
  text += b' ' * (-len(text) % 8)  # Tensor bytes start 8-aligned.

  def write_fn(f):
    f.write(struct.pack('<Q', len(text)))
    f.write(text)
    for blob in blobs:
      f.write(blob)

  files.atomic_write(path, write_fn)
