"""Downloads official checkpoints; the `python -m vit_jax.checkpoint` CLI.

  python -m vit_jax.checkpoint download ViT-B_16 --dir=checkpoints
  python -m vit_jax.checkpoint download ViT-B_16 \
      --dataset=imagenet21k+imagenet2012
  python -m vit_jax.checkpoint download \
      B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0
  python -m vit_jax.checkpoint download Mixer-B_16 --dataset=imagenet1k
  python -m vit_jax.checkpoint inspect checkpoints/ViT-B_16.npz
  python -m vit_jax.checkpoint inspect /tmp/quickstart  # A workdir.

Files come from `https://storage.googleapis.com/<bucket>/<path>`; `--base_url`
or $VIT_JAX_CHECKPOINT_BASE_URL replaces the host (a mirror, or a local
server in tests). A download is written to `<file>.part`, resumed with an
HTTP Range request when that file exists, checked against the registered
model config (keys and shapes; head size, position-embedding length and
pre_logits may differ, as they do in the official files) and only then
renamed to `<file>`.
"""

import argparse
import collections
import http.client
import os
import re
import socket
import sys
from typing import List, Optional
import urllib.error
import urllib.parse
import urllib.request

from absl import logging
from flax import traverse_util
import jax
import jax.numpy as jnp
import tqdm

from vit_jax import checkpoint
from vit_jax import checkpoint_names
from vit_jax import export
from vit_jax import models

CheckpointError = checkpoint.CheckpointError

# Names and addresses live in checkpoint_names; re-exported for callers.
DEFAULT_BASE_URL = checkpoint_names.DEFAULT_BASE_URL
BASE_URL_ENV = checkpoint_names.BASE_URL_ENV
VIT_DATASETS = checkpoint_names.VIT_DATASETS
MIXER_DATASETS = checkpoint_names.MIXER_DATASETS
AUGREG_RECOMMENDED = checkpoint_names.AUGREG_RECOMMENDED
Source = checkpoint_names.Source
resolve = checkpoint_names.resolve
how_to_get = checkpoint_names.how_to_get
_CHUNK = 1 << 20


def reachable(base_url: Optional[str] = None, *,
              timeout: float = 3.0) -> bool:
  """True if the checkpoint host accepts a connection within `timeout` s.

  A quick online check before `download` (e.g. in the notebooks); the host
  is the one `download` would use (`base_url`, $VIT_JAX_CHECKPOINT_BASE_URL
  or storage.googleapis.com).
  """
  base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
  parts = urllib.parse.urlsplit(base)
  port = parts.port or (443 if parts.scheme == 'https' else 80)
  try:
    socket.create_connection((parts.hostname, port), timeout=timeout).close()
  except OSError:
    return False
  return True


def _total_from_content_range(value: Optional[str]) -> Optional[int]:
  """'bytes 100-199/200' or 'bytes */200' -> 200."""
  match = re.search(r'/(\d+)\s*$', value or '')
  return int(match.group(1)) if match else None


def _open_url(url: str, have: int):
  """Opens `url`, asking for bytes from `have` on; returns (response, have).

  `have` in the result is 0 when the server sends the whole file instead.
  """
  headers = {'Range': f'bytes={have}-'} if have else {}
  try:
    response = urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), timeout=60)
  except urllib.error.HTTPError as e:
    if e.code == 416 and have:  # Nothing after `have`: complete or too long.
      if _total_from_content_range(e.headers.get('Content-Range')) == have:
        return None, have
      logging.info('%s: partial file is longer than the file; restarting',
                   url)
      return _open_url(url, 0)
    raise CheckpointError(
        f'Download of {url} failed: HTTP {e.code} {e.reason}. Check the '
        'name and --dataset (see checkpoints/README.md).') from None
  except (OSError, http.client.HTTPException) as e:
    raise CheckpointError(
        f'Download of {url} failed: {e}. Check your network, or pass '
        f'--base_url (or set ${BASE_URL_ENV}) to use a mirror.') from None
  start = _content_range_start(response.headers.get('Content-Range'))
  if have and (response.status != 206 or start != have):
    logging.info('%s: server ignored the Range request; restarting', url)
    have = 0
  return response, have


def _content_range_start(value: Optional[str]) -> Optional[int]:
  match = re.match(r'bytes (\d+)-', value or '')
  return int(match.group(1)) if match else None


def fetch(url: str, part_path: str, *, progress: bool = True) -> None:
  """Downloads `url` into `part_path`, resuming from the bytes it has.

  Raises:
    CheckpointError: on HTTP or network errors, and when the transfer stops
      early (the partial file is kept so that a second run resumes).
  """
  have = os.path.getsize(part_path) if os.path.exists(part_path) else 0
  response, have = _open_url(url, have)
  if response is None:
    return
  with response:
    length = response.headers.get('Content-Length')
    total = have + int(length) if length is not None else None
    with open(part_path, 'ab' if have else 'wb') as f, tqdm.tqdm(
        total=total, initial=have, unit='B', unit_scale=True,
        unit_divisor=1024, desc=os.path.basename(part_path),
        disable=not progress) as bar:
      try:
        while chunk := response.read(_CHUNK):
          f.write(chunk)
          bar.update(len(chunk))
      except (OSError, http.client.HTTPException) as e:
        raise CheckpointError(
            f'Download of {url} was interrupted ({e}); run the command '
            f'again to resume from {part_path}.') from None
  size = os.path.getsize(part_path)
  if total is not None and size != total:
    raise CheckpointError(
        f'Download of {url} stopped at {size} of {total} bytes; run the '
        f'command again to resume from {part_path}.')


def expected_shapes(model_name: str, params) -> dict:
  """Abstract params of `model_name` fitted to the file's free dimensions.

  The official files differ from the registered configs in the head size
  (21843, 1000, ...), the position-embedding length (224 or 384 px) and an
  optional pre_logits layer; those are taken from `params`, the rest comes
  from `jax.eval_shape` of the model at 224 px (nothing is allocated).
  """
  config = models.get_model_config(model_name)
  kwargs = {'num_classes': 1}
  if 'head' in params:
    kwargs['num_classes'] = params['head']['kernel'].shape[-1]
  if not models.is_mixer(config) and 'pre_logits' in params:
    kwargs['representation_size'] = params['pre_logits']['kernel'].shape[-1]
  model = models.build_model(config, **kwargs)
  shapes = models.abstract_params(model, 224)
  posemb = params.get('Transformer', {}).get('posembed_input', {})
  target = shapes.get('Transformer', {}).get('posembed_input', {})
  if 'pos_embedding' in posemb and 'pos_embedding' in target:
    have, want = posemb['pos_embedding'].shape, target['pos_embedding'].shape
    if len(have) == 3 and have[::2] == want[::2]:
      target['pos_embedding'] = jax.ShapeDtypeStruct(have, jnp.float32)
  return shapes


def validate(path: str, model_name: Optional[str], *, source: str) -> None:
  """Loads `path` and checks its keys and shapes against `model_name`."""
  params = checkpoint.load(path)
  if model_name is None:
    logging.warning('%s: no registered config; only checked that it loads.',
                    source)
    return
  expected = expected_shapes(model_name, params)
  checkpoint.inspect_params(params=params, expected=expected,
                            source=f'{source} (model {model_name})')


def download(name: str, *, directory: str = 'checkpoints',
             dataset: Optional[str] = None, base_url: Optional[str] = None,
             force: bool = False, progress: bool = True) -> str:
  """Downloads, validates and atomically installs an official checkpoint.

  Args:
    name: model or file name, see `resolve`.
    directory: destination folder (created if needed).
    dataset: bucket sub-folder, see `resolve`.
    base_url: host replacing https://storage.googleapis.com.
    force: download again even if the file exists.
    progress: show a tqdm progress bar.

  Returns:
    Path of the installed file, `<directory>/<filename>`.
  """
  source = resolve(name, dataset)
  url = source.url(base_url)
  os.makedirs(directory, exist_ok=True)
  dest = os.path.join(directory, source.filename)
  if os.path.exists(dest) and not force:
    print(f'{dest} exists; pass --force to download it again.')
    return dest
  part = dest + '.part'
  if force and os.path.exists(part):
    os.remove(part)
  print(f'Downloading {url} to {dest}')
  fetch(url, part, progress=progress)
  try:
    validate(part, source.model_name, source=f'Downloaded file {url}')
  except CheckpointError as e:
    os.remove(part)  # Resuming would only reproduce the same bad file.
    raise CheckpointError(f'{e} The download was deleted.') from None
  os.replace(part, dest)
  return dest


def inspect_file(path: str) -> None:
  """Prints a checkpoint's keys and shapes as stored, then what loading does.

  Args:
    path: an `.npz` (local, gs://, https://) or a training workdir (its
      model.npz), as `predict` and `inspect` accept.
  """
  npz = export.npz_path(path)
  if os.path.isdir(path) and not os.path.isfile(npz):
    raise CheckpointError(
        f'{path} is a directory without {export.MODEL_NPZ}: training writes '
        'it into its workdir when it finishes (config.export=True). Pass a '
        'finished workdir or an .npz file.')
  stored = checkpoint.read_stored(npz)
  loaded = traverse_util.flatten_dict(
      checkpoint.from_stored(stored, source=npz), sep='/')
  width = max(len(k) for k in stored)
  print(f'{npz}: keys as stored in the file')
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
  names = checkpoint.loaded_names(stored)
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


def main(argv=None) -> int:
  """Entry point of `python -m vit_jax.checkpoint`; returns the exit code."""
  parser = argparse.ArgumentParser(
      prog='python -m vit_jax.checkpoint',
      description='Download or inspect official ViT / Mixer checkpoints.')
  commands = parser.add_subparsers(dest='command', required=True)
  get = commands.add_parser('download', help='download a checkpoint')
  get.add_argument('name', help='ViT-B_16, R50+ViT-B_16, Mixer-B_16, an '
                   'AugReg file name, ... (see checkpoints/README.md)')
  get.add_argument('--dir', default='checkpoints', help='destination folder')
  get.add_argument('--dataset', default=None, help='bucket folder: '
                   f'{", ".join(VIT_DATASETS)} (ViT); '
                   f'{", ".join(MIXER_DATASETS)} (Mixer)')
  get.add_argument('--base_url', default=None,
                   help=f'host to use instead of {DEFAULT_BASE_URL} '
                   f'(or set ${BASE_URL_ENV})')
  get.add_argument('--force', action='store_true', help='download again')
  show = commands.add_parser(
      'inspect', help='print keys and shapes as stored, size, and the '
      'renames loading applies')
  show.add_argument('file', help='an .npz file or a training workdir')
  args = parser.parse_args(argv)
  try:
    if args.command == 'download':
      path = download(args.name, directory=args.dir, dataset=args.dataset,
                      base_url=args.base_url, force=args.force)
      print(f'Saved {path}')
    else:
      inspect_file(args.file)
  except (ValueError, KeyError) as e:  # CheckpointError is a ValueError.
    print(f'error: {e.args[0] if e.args else e}', file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    print('interrupted; run the same command again to resume.',
          file=sys.stderr)
    return 130
  return 0
