"""Command line: the paper's inspection figures for a checkpoint.

  python -m vit_jax.inspect --model=ViT-B_16 --checkpoint=ViT-B_16.npz \
      --images=path/to/folder --out=/tmp/inspect

writes `filters.png`, `position.png`, `distance.png`, `rollout.png` (those
selected with --figures) and `inspect.json` into --out. Without --images
and --figures it writes the two figures that need no images (filters,
position) and says that distance and rollout need --images. Everything is
computed before anything is written, and files are staged in a temporary
folder inside --out and renamed into place, so a failure leaves no
half-written files. Bad input (a UserError) prints one line
`vit_jax.inspect: message` and exits with status 1 (vit_jax/cli.py).
"""

import json
import os
import shutil
import tempfile
from typing import NamedTuple, Optional, Sequence

from vit_jax.inspect import loading
from vit_jax.inspect import plots
from vit_jax.inspect import report

class Options(NamedTuple):
  """The command line's options (see the flags in `__main__.py`)."""
  checkpoint: str
  out: str
  model: Optional[str] = None
  images: str = ''
  figures: Optional[Sequence[str]] = None  # None: all the inputs allow.
  resolution: Optional[int] = None
  max_images: int = 128
  batch_size: int = 32
  rollout_images: int = 16
  renormalize: bool = False


def _figures(opts: Options) -> Sequence[str]:
  """--figures, or by default all four (only filters, position without
  images, which the attention figures need)."""
  if opts.figures is not None:
    return tuple(opts.figures)
  if opts.images:
    return report.FIGURES
  return tuple(f for f in report.FIGURES
               if f not in report.ATTENTION_FIGURES)


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


def write_report(opts: Options) -> dict:
  """Computes, renders and writes everything; returns the JSON summary."""
  opts = opts._replace(figures=_figures(opts))
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


def command(opts: Options) -> int:
  """The command's body: writes everything, says what; returns 0. Bad input
  raises a UserError (vit_jax.cli prints it), before anything is written."""
  summary = write_report(opts)
  print(f'Wrote {", ".join(summary["files"].values())} and inspect.json to '
        f'{opts.out}')
  if not opts.images and opts.figures is None:
    print(f'{" and ".join(report.ATTENTION_FIGURES)} need images: pass '
          '--images=FOLDER_OR_FILES to write them too.')
  return 0
