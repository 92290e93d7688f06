"""Model facade: `VisionTransformer`, `MlpMixer`, `get_model`, geometry.

The facts about a model's geometry live here, next to the models, and work
on a model config (ConfigDict or dict) or a built model alike:
`patch_stride`, `token_grid`, `has_class_token`; `abstract_params` gives
the parameter shapes without allocating anything, `init_params` the one
initialisation at a given input size.
"""

from typing import Any, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

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


def _field(model_or_config, name: str, default=None):
  if isinstance(model_or_config, nn.Module):
    return getattr(model_or_config, name, default)
  return model_or_config.get(name, default)


def patch_stride(model_or_config) -> Tuple[int, int]:
  """Input pixels per token along (height, width).

  For hybrids the ResNet root downsamples 4x, each further stage 2x, then
  the patch embedding applies its own stride on the feature map.
  """
  ph, pw = tuple(_field(model_or_config, 'patches')['size'])
  resnet = _field(model_or_config, 'resnet')
  if resnet is None:
    return ph, pw
  factor = 4 * 2**max(len(tuple(resnet['num_layers'])) - 1, 0)
  return ph * factor, pw * factor


def token_grid(model_or_config, height: int,
               width: Optional[int] = None) -> Tuple[int, int]:
  """(gh, gw): the patch grid at height x width pixels (floor division)."""
  sh, sw = patch_stride(model_or_config)
  return height // sh, (height if width is None else width) // sw


def has_class_token(model_or_config) -> bool:
  """Whether the model prepends a class token (posemb has one more row)."""
  return (_field(model_or_config, 'classifier', 'token') in
          models_vit.CLASS_TOKEN_CLASSIFIERS and
          _field(model_or_config, 'transformer') is not None)


def init_params(model: nn.Module, height: int, width: Optional[int] = None,
                *, seed: int = 0, shardings: Any = None) -> Any:
  """Freshly initialised parameters at height x width input pixels, from
  `PRNGKey(seed)`, in one jitted call (created directly with `shardings`,
  a matching tree of shardings, when given)."""
  x = jnp.zeros((1, height, width or height, 3), jnp.float32)
  init = lambda rng: model.init(rng, x, train=False)['params']
  return jax.jit(init, out_shardings=shardings)(jax.random.PRNGKey(seed))


def abstract_params(model: nn.Module, height: int,
                    width: Optional[int] = None) -> Any:
  """The model's parameters as `jax.ShapeDtypeStruct`s at height x width
  input pixels (`jax.eval_shape`: nothing is allocated)."""
  return jax.eval_shape(lambda: init_params(model, height, width))


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
