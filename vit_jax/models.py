"""Model facade: `VisionTransformer`, `MlpMixer` and `get_model`."""

from typing import Union

import flax.linen as nn

from vit_jax import models_mixer
from vit_jax import models_vit
from vit_jax.configs import models as model_configs

AddPositionEmbs = models_vit.AddPositionEmbs
MlpBlock = models_vit.MlpBlock
Encoder1DBlock = models_vit.Encoder1DBlock
Encoder = models_vit.Encoder
VisionTransformer = models_vit.VisionTransformer
MlpMixer = models_mixer.MlpMixer

Model = Union[VisionTransformer, MlpMixer]


def is_mixer(model_config) -> bool:
  """True for Mixer configs (they have `num_blocks` instead of a transformer)."""
  return 'num_blocks' in model_config


def get_model_config(name: str):
  """Returns the registered config for a model or AugReg name (a ConfigDict).

  Raises:
    KeyError: with the list of known names when `name` is not registered.
  """
  if name in model_configs.MODEL_CONFIGS:
    return model_configs.MODEL_CONFIGS[name]
  if name in model_configs.AUGREG_CONFIGS:
    return model_configs.AUGREG_CONFIGS[name]
  if name.startswith('LiT-'):
    raise KeyError(
        f'{name}: LiT models are not part of this package (they need '
        'flaxformer and tensorflow_text); see README, "Differences from the '
        'original release".')
  known = sorted(model_configs.MODEL_CONFIGS)
  raise KeyError(
      f'Unknown model name {name!r}. Known names: {", ".join(known)} '
      f'(AugReg names: {", ".join(sorted(model_configs.AUGREG_CONFIGS))}).')


def get_model(name: str, **kwargs) -> nn.Module:
  """Builds the model registered as `name` (e.g. 'ViT-B_16', 'Mixer-B_16').

  Args:
    name: a key of `MODEL_CONFIGS` or `AUGREG_CONFIGS`.
    **kwargs: module fields, e.g. `num_classes=10`, `dtype=jnp.bfloat16`.
  """
  config = get_model_config(name)
  return build_model(config, **kwargs)


def build_model(model_config, **kwargs) -> nn.Module:
  """Builds a ViT or Mixer from a model ConfigDict plus extra fields."""
  cls = MlpMixer if is_mixer(model_config) else VisionTransformer
  # Shallow copy: nested ConfigDicts (patches, transformer, resnet) stay as
  # they are; the modules read them by key, so plain dicts work as well.
  fields = {k: model_config[k] for k in model_config.keys()}
  fields.update(kwargs)
  return cls(**fields)
