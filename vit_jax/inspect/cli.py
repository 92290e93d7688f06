"""Command line: the paper's inspection figures for a checkpoint.

  python -m vit_jax.inspect --model=ViT-B_16 --checkpoint=ViT-B_16.npz \
      --images=path/to/folder --out=/tmp/inspect

writes `filters.png`, `position.png`, `distance.png`, `rollout.png` (those
selected with --figures) and `inspect.json` into --out. Everything is
computed before anything is written, and files are staged in a temporary
folder inside --out and renamed into place, so a failure leaves no
half-written files. Errors print one paragraph and exit with status 1.
"""

import json
import os
import shutil
import sys
import tempfile
from typing import NamedTuple, Optional, Sequence

from absl import flags

from vit_jax.inspect import loading
from vit_jax.inspect import plots
from vit_jax.inspect import report

_MODEL = flags.DEFINE_string(
    'model', None, 'Registered model name, e.g. ViT-B_16; optional when '
    '--checkpoint is a workdir (its model.json wins).')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Official-layout .npz file or training workdir.')
_IMAGES = flags.DEFINE_string(
    'images', '', 'Comma-separated image files and/or folders (needed for '
    'distance and rollout).')
_OUT = flags.DEFINE_string('out', None, 'Output folder (created).')
_FIGURES = flags.DEFINE_list('figures', list(report.FIGURES),
                             'Subset of filters,position,distance,rollout.')
_RESOLUTION = flags.DEFINE_integer(
    'resolution', None, 'Square input size in pixels (default: the '
    "workdir's, else 224).")
_MAX_IMAGES = flags.DEFINE_integer('max_images', 128,
                                   'Use at most this many images.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 32,
                                   'Images per jitted forward pass.')
_ROLLOUT_IMAGES = flags.DEFINE_integer(
    'rollout_images', 16, 'Images shown in rollout.png (all are analysed).')
_RENORMALIZE = flags.DEFINE_bool(
    'renormalize', False, 'Renormalise attention rows over patch tokens for '
    'the mean attention distance.')
_TRACEBACK = flags.DEFINE_bool('traceback', False,
                               'Show the full traceback on errors.')


class Options(NamedTuple):
  checkpoint: str
  out: str
  model: Optional[str] = None
  images: str = ''
  figures: Sequence[str] = report.FIGURES
  resolution: Optional[int] = None
  max_images: int = 128
  batch_size: int = 32
  rollout_images: int = 16
  renormalize: bool = False


def _check_options(opts: Options) -> None:
  if not opts.checkpoint or not opts.out:
    raise loading.InspectError('--checkpoint and --out are required.')
  unknown = [f for f in opts.figures if f not in report.FIGURES]
  if unknown or not opts.figures:
    raise loading.InspectError(
        f'--figures={",".join(opts.figures)}: choose from '
        f'{",".join(report.FIGURES)}.')
  needs_images = set(opts.figures) & set(report.ATTENTION_FIGURES)
  if needs_images and not opts.images:
    raise loading.InspectError(
        f'{", ".join(sorted(needs_images))} need images: pass --images.')
  if opts.max_images < 1 or opts.batch_size < 1:
    raise loading.InspectError('--max_images and --batch_size must be >= 1.')


def _render(results: report.Results, figures, stage: str,
            rollout_images: int):
  """Writes the figures into `stage`; returns {figure: file name}."""
  arrays, summary = results.arrays, results.summary
  names = {}
  for figure in figures:
    name = f'{figure}.png'
    path = os.path.join(stage, name)
    if figure == 'filters':
      plots.plot_filters(arrays['components'], path)
    elif figure == 'position':
      plots.plot_position_similarity(arrays['similarity'],
                                     arrays['geometry'].grid, path)
    elif figure == 'distance':
      plots.plot_attention_distance(arrays['distance'], path,
                                    title=summary['model_name'])
    else:
      n = rollout_images
      plots.plot_rollout(arrays['images'][:n], arrays['rollout_maps'][:n],
                         max(arrays['geometry'].patch), path)
    names[figure] = name
  return names


def _publish(stage: str, out: str) -> None:
  # JSON last: its presence means the figures beside it are complete.
  files = sorted(os.listdir(stage), key=lambda f: f == 'inspect.json')
  for name in files:
    os.replace(os.path.join(stage, name), os.path.join(out, name))


def run(opts: Options) -> dict:
  """Computes, renders and writes everything; returns the JSON summary."""
  _check_options(opts)
  paths = []
  if set(opts.figures) & set(report.ATTENTION_FIGURES):
    paths = loading.list_images(opts.images)[:opts.max_images]
  loaded = loading.load_model(opts.checkpoint, opts.model, opts.resolution)
  results = report.run_analyses(loaded, opts.figures, paths,
                                batch_size=opts.batch_size,
                                renormalize=opts.renormalize)
  os.makedirs(opts.out, exist_ok=True)
  stage = tempfile.mkdtemp(prefix='.inspect-', dir=opts.out)
  try:
    summary = dict(results.summary, checkpoint=opts.checkpoint)
    summary['files'] = _render(results, opts.figures, stage,
                               opts.rollout_images)
    with open(os.path.join(stage, 'inspect.json'), 'w') as f:
      json.dump(summary, f, indent=1)
    _publish(stage, opts.out)
  finally:
    shutil.rmtree(stage, ignore_errors=True)
  return summary


def main(argv: Sequence[str]) -> int:
  """absl entry point; returns the exit status."""
  if len(argv) > 1:
    print(f'Unexpected arguments: {" ".join(argv[1:])}', file=sys.stderr)
    return 2
  opts = Options(
      checkpoint=_CHECKPOINT.value, out=_OUT.value, model=_MODEL.value,
      images=_IMAGES.value, figures=tuple(_FIGURES.value),
      resolution=_RESOLUTION.value, max_images=_MAX_IMAGES.value,
      batch_size=_BATCH_SIZE.value, rollout_images=_ROLLOUT_IMAGES.value,
      renormalize=_RENORMALIZE.value)
  try:
    summary = run(opts)
  except Exception as e:  # pylint: disable=broad-except
    if _TRACEBACK.value:
      raise
    # One paragraph, no traceback: the message names the file or option.
    # ValueErrors (InspectError, checkpoint.CheckpointError, bad shapes)
    # describe the input; anything else is named by its type.
    kind = '' if isinstance(e, ValueError) else f'{type(e).__name__}: '
    print(f'vit_jax.inspect failed: {kind}{e} (nothing was written to '
          f'{opts.out}; rerun with --traceback for details.)',
          file=sys.stderr)
    return 1
  print(f'Wrote {", ".join(summary["files"].values())} and inspect.json to '
        f'{opts.out}')
  return 0
