r"""Fine-tunes ImageNet-21k Mixer-B/16 on CIFAR-10 at 224 px (the original's).

  python -m vit_jax.main --workdir=/tmp/mixer \
      --config=$(pwd)/vit_jax/configs/mixer_base16_cifar10.py \
      --config.pretrained_dir=checkpoints

Needs `Mixer-B_16.npz` (python -m vit_jax.checkpoint download Mixer-B_16
--dir=checkpoints, or --config.pretrained_dir=gs://mixer_models/imagenet21k
with network). Published (original README): 96.82% on CIFAR-10 from the
ImageNet-21k upstream, 9.6 h (8 V100). Not measured here (no accelerator).
"""

from vit_jax.configs import common
from vit_jax.configs import models


def get_config():
  """Mixer-B_16 on cifar10, 10k steps, 224 px, the common defaults."""
  config = common.with_dataset(common.get_config(), 'cifar10')
  config.model_type = 'Mixer'  # The original's field (checked, see train).
  config.model = models.get_mixer_b16_config()
  config.total_steps = 10_000
  config.pp.crop = 224
  return config.lock()
