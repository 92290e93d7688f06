r"""Fine-tunes ImageNet-21k ViT-B/16 on CIFAR-10 at 384 px (the README run).

  python main.py --config=configs/b16_cifar10.py --workdir=/tmp/b16_cifar10 \
      --config.pretrained_dir=checkpoints

Needs `checkpoints/ViT-B_16.npz` (python -m vit_jax.checkpoint download
ViT-B_16 --dir=checkpoints) and CIFAR-10 prepared by tfds (downloaded on first
use when a network is there).

Hardware and time: published 2.2 h on 8 A100 (dropout 0.0), 7.8 h on 8 V100
(dropout 0.1); far too slow for a CPU. Published accuracy (original README,
gs://vit_models/imagenet21k ViT-B_16, 10k steps, batch 512): 99.02%
(dropout 0.0), 98.76% (dropout 0.1). Shorter published schedules: 500 steps /
50 warmup 98.59% (17 min), 1000 / 100 98.86% (39 min). Not measured here.
"""

from vit_jax.configs import common
from vit_jax.configs import models


def get_config():
  """ViT-B_16 on cifar10 with the original defaults (base_lr 0.01)."""
  config = common.with_dataset(common.get_config(), 'cifar10')
  config.model = models.MODEL_CONFIGS['ViT-B_16'].copy_and_resolve_references()
  config.base_lr = 0.01  # The original's override for b16 + cifar10.
  return config.lock()
