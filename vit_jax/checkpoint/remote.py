"""Downloads official checkpoints (`python -m vit_jax.checkpoint download`).

Files come from `https://storage.googleapis.com/<bucket>/<path>`; `--base_url`
or $VIT_JAX_CHECKPOINT_BASE_URL replaces the host (a mirror, or a local
server in tests). A download is written to `<file>.part`, resumed with an
HTTP Range request when that file exists, checked against the registered
model config (keys and shapes; head size, position-embedding length and
pre_logits may differ, as they do in the official files) and only then
renamed to `<file>`.
"""

import http.client
import os
import re
from typing import Optional
import urllib.error
import urllib.parse
import urllib.request

from absl import logging
import jax
import jax.numpy as jnp
import tqdm

from vit_jax import models
from vit_jax.checkpoint import files
from vit_jax.checkpoint import names
from vit_jax.checkpoint import npz
from vit_jax.checkpoint import pretrained

CheckpointError = npz.CheckpointError
_CHUNK = 1 << 20


def reachable(base_url: Optional[str] = None, *,
              timeout: float = 3.0) -> bool:
  """True if the checkpoint host accepts a connection within `timeout` s.

  A quick online check before `download` (e.g. in the notebooks); the host
  is the one `download` would use (`base_url`, $VIT_JAX_CHECKPOINT_BASE_URL
  or storage.googleapis.com).
  """
  base = (base_url or os.environ.get(names.BASE_URL_ENV)
          or names.DEFAULT_BASE_URL)
  parts = urllib.parse.urlsplit(base)
  port = parts.port or (443 if parts.scheme == 'https' else 80)
  return files.network_available(parts.hostname, port, timeout=timeout)


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
        f'--base_url (or set ${names.BASE_URL_ENV}) to use a mirror.') from None
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
  params = npz.load(path)
  if model_name is None:
    logging.warning('%s: no registered config; only checked that it loads.',
                    source)
    return
  expected = expected_shapes(model_name, params)
  pretrained.inspect_params(params=params, expected=expected,
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
  source = names.resolve(name, dataset)
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
  files.install(part, dest)
  return dest


