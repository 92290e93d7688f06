"""`python -m vit_jax.checkpoint download|inspect|convert`.

  python -m vit_jax.checkpoint download ViT-B_16 --dir=checkpoints
  python -m vit_jax.checkpoint download ViT-B_16 \
      --dataset=imagenet21k+imagenet2012
  python -m vit_jax.checkpoint download \
      B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0
  python -m vit_jax.checkpoint download Mixer-B_16 --dataset=imagenet1k
  python -m vit_jax.checkpoint inspect checkpoints/ViT-B_16.npz
  python -m vit_jax.checkpoint inspect /tmp/quickstart  # A workdir.
  python -m vit_jax.checkpoint convert model.safetensors --to=ViT-B_16.npz

The prologue and epilogue are vit_jax/cli.py's: bad input (a `UserError`)
prints one line `vit_jax.checkpoint: message` and exits 1. Only `inspect`
starts no JAX backend (it reads the file as stored).
"""

import sys
from typing import Optional, Sequence

from vit_jax import cli
from vit_jax.checkpoint import convert
from vit_jax.checkpoint import listing
from vit_jax.checkpoint import names
from vit_jax.checkpoint import remote

PROG = 'vit_jax.checkpoint'


def _parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog='python -m ' + PROG, description='Download, inspect or import '
      'ViT / Mixer checkpoints.')
  commands = parser.add_subparsers(dest='command', required=True)
  get = commands.add_parser('download', help='download a checkpoint')
  get.add_argument('name', help='ViT-B_16, R50+ViT-B_16, Mixer-B_16, an '
                   'AugReg file name, ... (see checkpoints/README.md)')
  get.add_argument('--dir', default='checkpoints', help='destination folder')
  get.add_argument('--dataset', default=None, help='bucket folder: '
                   f'{", ".join(names.VIT_DATASETS)} (ViT); '
                   f'{", ".join(names.MIXER_DATASETS)} (Mixer)')
  get.add_argument('--base_url', default=None,
                   help=f'host to use instead of {names.DEFAULT_BASE_URL} '
                   f'(or set ${names.BASE_URL_ENV})')
  get.add_argument('--force', action='store_true', help='download again')
  show = commands.add_parser(
      'inspect', help='print keys and shapes as stored, size, and the '
      'renames loading applies')
  show.add_argument('file', help='an .npz file or a training workdir')
  imp = commands.add_parser(
      'convert', help='import a timm state dict or a Hugging Face ViT '
      'folder as an official .npz')
  imp.add_argument('src', help='.safetensors / .pth / .bin, or a folder '
                   'with config.json + model.safetensors')
  imp.add_argument('--to', required=True, help='destination .npz')
  imp.add_argument('--model', default=None, help='registered model name '
                   '(default: derived from the shapes)')
  return parser


def checkpoint_command(args: Sequence[str]) -> None:
  """The command's body: parses `args` (without the program name), then
  downloads, lists or converts."""
  args = _parser().parse_args(args)
  if args.command != 'inspect':  # Both check shapes with jax.eval_shape.
    import jax  # pylint: disable=g-import-not-at-top
    jax.devices()
  if args.command == 'download':
    path = remote.download(args.name, directory=args.dir,
                           dataset=args.dataset, base_url=args.base_url,
                           force=args.force)
    print(f'Saved {path}')
  elif args.command == 'inspect':
    listing.inspect_file(args.file)
  else:
    model_name = convert.convert(args.src, to=args.to, model_name=args.model)
    print(f'Saved {args.to} (model {model_name})')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of `python -m vit_jax.checkpoint`; returns the exit code.
  `argv`: the arguments without the program name (default sys.argv[1:])."""
  try:
    return cli.main(PROG, checkpoint_command, argv, start_backends=False)
  except KeyboardInterrupt:
    print('interrupted; run the same command again to resume.',
          file=sys.stderr)
    return 130
