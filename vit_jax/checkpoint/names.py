"""Names and addresses of the official checkpoints (a leaf module).

`resolve(name, dataset)` maps a model or file name to its bucket path and
registered model config; `how_to_get(path)` writes the sentence that error
messages use to say how to obtain a missing file. `GCS_HOST` is the one
spelling of the buckets' host (also the host tfds looks up first). It
imports nothing of the package but the model-config registry.
"""

import dataclasses
import os
import re
from typing import Optional
import urllib.parse

from vit_jax.configs import models as model_configs

GCS_HOST = 'storage.googleapis.com'
DEFAULT_BASE_URL = f'https://{GCS_HOST}'
BASE_URL_ENV = 'VIT_JAX_CHECKPOINT_BASE_URL'
VIT_DATASETS = ('imagenet21k', 'imagenet21k+imagenet2012', 'sam', 'gsam')
MIXER_DATASETS = ('imagenet1k', 'imagenet21k', 'sam', 'gsam')
AUGREG_RECOMMENDED = model_configs.AUGREG_RECOMMENDED


@dataclasses.dataclass(frozen=True)
class Source:
  """Where an official file lives and which config describes it."""
  bucket_path: str  # e.g. 'vit_models/imagenet21k/ViT-B_16.npz'.
  filename: str  # e.g. 'ViT-B_16.npz'.
  model_name: Optional[str]  # Key for models.get_model; None: unregistered.

  def url(self, base_url: Optional[str] = None) -> str:
    """Public address; `+` is percent-encoded (as %2B)."""
    base = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return f'{base.rstrip("/")}/{urllib.parse.quote(self.bucket_path)}'


def _augreg_model(stem: str) -> Optional[str]:
  """'B_16-i21k-300ep-...' -> 'B_16' (the longest matching AugReg name)."""
  names = [k for k in model_configs.AUGREG_CONFIGS if stem.startswith(k + '-')]
  return max(names, key=len) if names else None


def _registered_model(stem: str) -> Optional[str]:
  """'ViT-B_16' or 'ViT-B_16-224' -> 'ViT-B_16'; None when not registered."""
  if stem in model_configs.MODEL_CONFIGS:
    return stem
  match = re.fullmatch(r'(.*)-\d+', stem)
  if match and match.group(1) in model_configs.MODEL_CONFIGS:
    return match.group(1)
  return None


def resolve(name: str, dataset: Optional[str] = None) -> Source:
  """Maps a model or file name (+ upstream dataset) to its bucket address.

  Args:
    name: 'ViT-B_16', 'ViT-B_16-224', 'R50+ViT-B_16', 'Mixer-B_16', an AugReg
      file name ('B_16-i21k-300ep-...', with or without '.npz') or a bare
      AugReg model name ('B_16': the README's recommended upstream file).
    dataset: sub-folder of the bucket; default 'imagenet21k' ('gsam' for the
      '-gap-norep' models). Not used for AugReg names.
  """
  stem = name[:-len('.npz')] if name.endswith('.npz') else name
  stem = AUGREG_RECOMMENDED.get(stem, stem)
  augreg = _augreg_model(stem)
  if augreg is not None:
    if dataset not in (None, 'augreg'):
      raise ValueError(f'{name} is an AugReg file; it has no --dataset.')
    return Source(f'vit_models/augreg/{stem}.npz', f'{stem}.npz', augreg)
  is_mixer = stem.startswith('Mixer-')
  datasets = MIXER_DATASETS if is_mixer else VIT_DATASETS
  if dataset is None:
    dataset = 'gsam' if stem.endswith('-gap-norep') else 'imagenet21k'
  if dataset not in datasets:
    raise ValueError(f'Unknown dataset {dataset!r} for {name}; one of '
                     f'{", ".join(datasets)}.')
  bucket = 'mixer_models' if is_mixer else 'vit_models'
  return Source(f'{bucket}/{dataset}/{stem}.npz', f'{stem}.npz',
                _registered_model(stem))


def how_to_get(path: str, model_name: Optional[str] = None) -> str:
  """A sentence on how to obtain the checkpoint `path` (for messages).

  The file name decides what to download; `model_name` is the fallback when
  the file name is not an official one.
  """
  stem = os.path.basename(path)
  stem = stem[:-len('.npz')] if stem.endswith('.npz') else stem
  parent = os.path.basename(os.path.dirname(path))
  dataset = parent if parent in VIT_DATASETS + MIXER_DATASETS else None
  source = None
  for candidate in (stem, model_name):
    try:
      source = resolve(candidate, dataset) if candidate else None
    except ValueError:
      source = None
    if source is not None and source.model_name is not None:
      stem = candidate
      break
  if source is None or source.model_name is None:
    return ('See checkpoints/README.md for the official files and how to '
            'download them.')
  flags = f' --dataset={dataset}' if dataset else ''
  directory = os.path.dirname(path) or '.'
  if '://' not in path:
    flags += f' --dir={directory}'
  renamed = ''
  if source.filename != os.path.basename(path):
    renamed = f' (it is saved as {source.filename})'
  return (f'Download it with `python -m vit_jax.checkpoint download {stem}'
          f'{flags}`{renamed} or from {source.url(DEFAULT_BASE_URL)} (see '
          'checkpoints/README.md).')
