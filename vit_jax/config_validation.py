"""Checks a fine-tuning config before anything is built or compiled.

Every error says which field is wrong and what to set instead, so a bad
`--config.x=y` fails in a second rather than after minutes of compilation.
"""

from typing import Optional, Tuple

import jax
import ml_collections

from vit_jax import models
from vit_jax import partitioning
from vit_jax.configs import models as model_configs

TRAINERS = ('train', 'inference_time')
DTYPES = ('float32', 'bfloat16', 'float16')


class ConfigError(ValueError):
  """A config value is invalid; the message says what to change."""


def patch_stride(model_config) -> Tuple[int, int]:
  """Input pixels per token along (height, width).

  For hybrids the ResNet root downsamples 4x, each further stage 2x, then
  the patch embedding applies its own stride on the feature map.
  """
  ph, pw = tuple(model_config.patches.size)
  resnet = model_config.get('resnet')
  if resnet is None:
    return ph, pw
  factor = 4 * 2**max(len(tuple(resnet.num_layers)) - 1, 0)
  return ph * factor, pw * factor


def token_grid(config) -> Tuple[int, int]:
  """(gh, gw) patch grid of the model at `config.pp.crop`."""
  sh, sw = patch_stride(config.model)
  return config.pp.crop // sh, config.pp.crop // sw


def _resolve_model(config) -> None:
  """Fills config.model from the registry when only model_name is set."""
  if config.model_name and not config.model:
    try:
      config.model = models.get_model_config(
          config.model_name).copy_and_resolve_references()
    except KeyError as e:
      raise ConfigError(
          f'--config.model_name={config.model_name!r} is not a registered '
          f'model. Known: {", ".join(sorted(model_configs.MODEL_CONFIGS))}.'
      ) from e
  if not config.model:
    raise ConfigError('No model: set --config.model_name (e.g. ViT-B_16).')
  if not config.model_name:
    config.model_name = config.model.get('model_name') or 'custom'


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def _check_batches(config, data_axis: int) -> None:
  processes = jax.process_count()
  per_step = config.accum_steps * data_axis
  _check(config.accum_steps >= 1, '--config.accum_steps must be >= 1.')
  _check(config.batch % per_step == 0,
         f'--config.batch={config.batch} must be divisible by accum_steps '
         f'({config.accum_steps}) x data-parallel devices ({data_axis}) = '
         f'{per_step}; e.g. use --config.batch='
         f'{max(per_step, config.batch // per_step * per_step)}.')
  _check(config.batch % processes == 0 and
         config.batch_eval % processes == 0,
         f'--config.batch and --config.batch_eval must be divisible by the '
         f'number of processes ({processes}).')
  _check(config.batch_eval % data_axis == 0,
         f'--config.batch_eval={config.batch_eval} must be divisible by the '
         f'data-parallel devices ({data_axis}).')


def _check_model(config) -> None:
  sh, sw = patch_stride(config.model)
  crop = config.pp.crop
  _check(crop % sh == 0 and crop % sw == 0,
         f'--config.pp.crop={crop} is not divisible by the patch stride '
         f'{sh}x{sw} of {config.model_name}; use a multiple of {sh}, e.g. '
         f'{max(sh, crop // sh * sh)}.')
  _check(config.dtype in DTYPES,
         f'--config.dtype={config.dtype!r}; use one of {DTYPES}.')
  _check(config.optim_dtype in DTYPES,
         f'--config.optim_dtype={config.optim_dtype!r}; use one of {DTYPES}.')


def resolve_and_validate(
    config: ml_collections.ConfigDict, *,
    num_devices: Optional[int] = None) -> ml_collections.ConfigDict:
  """Returns a resolved copy of `config`, or raises ConfigError.

  Resolves the model fields from `model_name` and checks trainer, dataset,
  model/crop compatibility, batch divisibility, schedule and mesh. The mesh
  is checked against `num_devices` (default: `jax.device_count()`; the
  planner passes the device count of a TPU topology it compiles for).
  """
  config = config.copy_and_resolve_references()
  with config.unlocked():
    _resolve_model(config)
  _check(config.trainer in TRAINERS,
         f'--config.trainer={config.trainer!r}; use one of {TRAINERS}.')
  _check(bool(config.dataset), 'No dataset: set --config.dataset (a tfds '
         'name such as cifar10, "digits", or an image folder).')
  _check_model(config)
  _check(config.total_steps is not None and config.total_steps > 0,
         '--config.total_steps must be a positive number of steps.')
  _check(0 <= config.warmup_steps < config.total_steps or
         config.total_steps == 0,
         f'--config.warmup_steps={config.warmup_steps} must be smaller than '
         f'total_steps={config.total_steps}.')
  _check(config.decay_type in ('cosine', 'linear'),
         f"--config.decay_type={config.decay_type!r}; use 'cosine' or "
         "'linear'.")
  _check(config.optimizer in ('sgd', 'adam'),
         f"--config.optimizer={config.optimizer!r}; use 'sgd' or 'adam'.")
  _check(config.nonfinite_loss in ('raise', 'skip'),
         f"--config.nonfinite_loss={config.nonfinite_loss!r}; use 'raise' or "
         "'skip'.")
  try:
    data, _ = partitioning.mesh_shape(config.mesh.data, config.mesh.model,
                                      num_devices or jax.device_count())
  except partitioning.MeshError as e:
    raise ConfigError(str(e)) from e
  _check_batches(config, data)
  return config
