r"""Fine-tunes any ViT/hybrid/Mixer on any dataset: `vit.py:MODEL,DATASET`.

  python main.py --config=vit_jax/configs/vit.py:b16,cifar10 --workdir=DIR
  python main.py --config=vit_jax/configs/vit.py:R50+ViT-B_16,cifar100 \
      --workdir=DIR --config.pretrained_dir=checkpoints

MODEL is a registered name (ViT-B_16, R50+ViT-B_16, Mixer-B_16, ...) or the
short form of the original release (b16, l32, r50_b16, mixer_b16, ...);
DATASET a preset of configs/common.py (cifar10, cifar100, imagenet2012,
oxford_iiit_pet, oxford_flowers102, digits) or an image folder.

Time and accuracy: see the published table in the README (e.g. ViT-B_32 on
cifar10: 98.88% in 0.8 h on 8 A100, ViT-L_16 on imagenet2012: 84.47%).
"""

from vit_jax.configs import common
from vit_jax.configs import models


def model_config(name: str):
  """A registered config by full name or the original's short name."""
  if name in models.MODEL_CONFIGS:
    return models.MODEL_CONFIGS[name].copy_and_resolve_references()
  getter = getattr(models, f'get_{name}_config', None)
  if getter is None:
    raise ValueError(
        f'Unknown model {name!r}: use a registered name '
        f'({", ".join(sorted(models.MODEL_CONFIGS))}) or a short name such '
        'as b16, l32, r50_b16, mixer_b16.')
  return getter()


def get_config(model_dataset: str = 'b16,cifar10'):
  """Returns the config for 'MODEL,DATASET'."""
  if model_dataset.count(',') != 1:
    raise ValueError(f'Expected "MODEL,DATASET" after vit.py:, got '
                     f'{model_dataset!r} (e.g. vit.py:b16,cifar10).')
  model, dataset = model_dataset.split(',')
  config = common.with_dataset(common.get_config(), dataset)
  config.model = model_config(model)
  if config.model.model_name.startswith('Mixer'):
    config.pp.crop = 224  # As the original Mixer config.
  if config.model.model_name == 'ViT-B_16' and dataset == 'cifar10':
    config.base_lr = 0.01  # The original's override.
  return config.lock()
