"""`python -m vit_jax.inspect --checkpoint=... --out=...` (see cli.py)."""

from absl import app

from vit_jax.inspect import cli


def _main(argv):
  raise SystemExit(cli.main(argv))


if __name__ == '__main__':
  app.run(_main)
