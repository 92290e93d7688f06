r"""Short form of `python -m vit_jax.main` (the original release's command).

  python main.py --config=configs/b16_cifar10.py --workdir=/tmp/b16 \
      --config.pretrained_dir=checkpoints

See vit_jax/main.py for the flags.
"""

from vit_jax import main

if __name__ == '__main__':
  main.command()
