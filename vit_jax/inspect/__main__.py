"""`python -m vit_jax.inspect --checkpoint=... --out=...` (inspect/cli.py).

Flags are defined here, not in inspect/cli.py, so that importing the library
never registers global absl flags that could clash with another program's. The
prologue and epilogue are vit_jax.cli's: `--cpu_tuning`, and bad input as
one line `vit_jax.inspect: message` with exit status 1.
"""

import sys

from absl import flags

from vit_jax import cli
from vit_jax.inspect import cli as inspect_cli

_MODEL = flags.DEFINE_string(
    'model', None, 'Registered model name, e.g. ViT-B_16; optional when '
    '--checkpoint is a workdir (its model.json wins).')
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None, 'Official-layout .npz file or training workdir.')
_IMAGES = flags.DEFINE_string(
    'images', '', 'Comma-separated image files and/or folders (needed for '
    'distance and rollout).')
_OUT = flags.DEFINE_string('out', None, 'Output folder (created).')
_FIGURES = flags.DEFINE_list(
    'figures', None, 'Subset of filters,position,distance,rollout; default: '
    'all four with --images, else filters,position.')
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

def _main(argv):
  if len(argv) > 1:
    raise cli.FlagsError(f'unexpected arguments {" ".join(argv[1:])}: all '
                         'options are --flags.')
  opts = inspect_cli.Options(
      checkpoint=_CHECKPOINT.value, out=_OUT.value, model=_MODEL.value,
      images=_IMAGES.value,
      figures=None if _FIGURES.value is None else tuple(_FIGURES.value),
      resolution=_RESOLUTION.value, max_images=_MAX_IMAGES.value,
      batch_size=_BATCH_SIZE.value, rollout_images=_ROLLOUT_IMAGES.value,
      renormalize=_RENORMALIZE.value)
  return inspect_cli.command(opts)


if __name__ == '__main__':
  sys.exit(cli.main('vit_jax.inspect', cli.absl_body(_main)))
