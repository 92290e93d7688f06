"""Checks a fine-tuning config before anything is built or compiled.

Every error says which field is wrong and what to set instead, so a bad
`--config.x=y` fails in a second rather than after minutes of compilation.
"""

from typing import Optional, Tuple

from absl import logging
import jax
import ml_collections

from vit_jax import errors
from vit_jax import models
from vit_jax import partitioning
from vit_jax import utils
from vit_jax.configs import common
from vit_jax.configs import models as model_configs

TRAINERS = ('train', 'inference_time')
DTYPES = ('float32', 'bfloat16', 'float16')


class ConfigError(errors.UserError):
  """A config value is invalid; the message says what to change."""


def token_grid(config) -> Tuple[int, int]:
  """(gh, gw) patch grid of the model at `config.pp.crop`."""
  return models.token_grid(config.model, config.pp.crop)


def model_name(config) -> str:
  """The model's name: `config.model.model_name` (also the file stem)."""
  return config.model.get('model_name') or 'custom'


def _fill_defaults(config, defaults) -> None:
  """Adds every field of `defaults` that `config` lacks, recursively.

  Configs written for the original release (e.g. `config.pp =
  ConfigDict({'crop': 224})`) lack this project's extra fields.
  """
  for key, value in defaults.items():
    if key not in config:
      config[key] = value
    elif (isinstance(value, ml_collections.ConfigDict) and
          isinstance(config[key], ml_collections.ConfigDict) and
          key != 'model'):
      _fill_defaults(config[key], value)


def _resolve_model(config) -> None:
  """Fills config.model from the registry when only a name is given.

  A top-level `model_name` (the inference_time config's field) names a
  registered model; it must agree with `config.model.model_name` if both
  are set, so the model built and the file loaded cannot differ.
  """
  name = config.get('model_name')
  if name and not config.model:
    try:
      config.model = models.get_model_config(
          name).copy_and_resolve_references()
    except KeyError as e:
      raise ConfigError(
          f'--config.model_name={name!r} is not a registered model. Known: '
          f'{", ".join(sorted(model_configs.MODEL_CONFIGS))}.') from e
  if not config.model:
    raise ConfigError('No model: use a config such as vit.py:b16,cifar10 '
                      'or set --config.model_name (e.g. ViT-B_16).')
  if name and name != config.model.get('model_name'):
    raise ConfigError(
        f'--config.model_name={name!r} disagrees with config.model '
        f'({config.model.get("model_name")!r}). The model is chosen by the '
        'config file: use e.g. --config=vit_jax/configs/vit.py:l16,cifar10 '
        'rather than overriding model_name.')
  model_type = config.get('model_type')
  if model_type and (model_type == 'Mixer') != models.is_mixer(config.model):
    raise ConfigError(
        f'--config.model_type={model_type!r} does not match config.model '
        f'({model_name(config)}).')


def _check(condition: bool, message: str) -> None:
  if not condition:
    raise ConfigError(message)


def validate_data(config, *, process_count: Optional[int] = None) -> None:
  """Raises ConfigError naming every data field to change, if any.

  The one check of the data fields (dataset, batch sizes against the
  `process_count` processes, default jax.process_count(), crop, shuffle
  buffer); `resolve_and_validate` and `input_pipeline.get_datasets` call it.
  """
  count = jax.process_count() if process_count is None else process_count
  problems = []
  if not config.dataset:
    problems.append(
        'config.dataset is empty: set --config.dataset to a tfds name '
        "(e.g. cifar10), 'digits' or an image folder")
  for field in ('batch', 'batch_eval'):
    value = config[field]
    if value <= 0 or value % count:
      fixed = max(count, value // count * count)
      problems.append(
          f'config.{field}={value} must be a positive multiple of the '
          f'process count ({count}), e.g. --config.{field}={fixed}')
  if config.pp.crop <= 0:
    problems.append(f'config.pp.crop={config.pp.crop} must be positive')
  if not 0.0 < config.pp.crop_area_min <= 1.0:
    problems.append(
        f'config.pp.crop_area_min={config.pp.crop_area_min} must be in '
        '(0, 1]')
  if config.shuffle_buffer < 1:
    problems.append(
        f'config.shuffle_buffer={config.shuffle_buffer} must be >= 1')
  if problems:
    raise ConfigError('Invalid data config:\n  - ' + '\n  - '.join(problems))


def _check_batches(config, data_axis: int) -> None:
  # 0 and 1 both mean no accumulation, as in the original.
  _check(config.accum_steps >= 0, '--config.accum_steps must be >= 0.')
  per_step = max(config.accum_steps, 1) * data_axis
  _check(config.batch % per_step == 0,
         f'--config.batch={config.batch} must be divisible by accum_steps '
         f'({config.accum_steps}) x data-parallel devices ({data_axis}) = '
         f'{per_step}; e.g. use --config.batch='
         f'{max(per_step, config.batch // per_step * per_step)}.')
  _check(config.batch_eval % data_axis == 0,
         f'--config.batch_eval={config.batch_eval} must be divisible by the '
         f'data-parallel devices ({data_axis}).')


def _check_model(config) -> None:
  sh, sw = models.patch_stride(config.model)
  crop = config.pp.crop
  gh, gw = models.token_grid(config.model, crop)
  _check(gh >= 1 and gw >= 1,
         f'--config.pp.crop={crop} is smaller than the patch stride '
         f'{sh}x{sw} of {model_name(config)}.')
  if crop % sh or crop % sw:  # A VALID patch conv floors, as the original.
    logging.warning(
        'pp.crop=%d is not a multiple of the patch stride %dx%d: %dx%d '
        'patches, the last %d rows and %d columns of pixels are unused.',
        crop, sh, sw, gh, gw, crop - gh * sh, crop - gw * sw)
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
    _fill_defaults(config, common.get_config())
    _resolve_model(config)
  _check(config.trainer in TRAINERS,
         f'--config.trainer={config.trainer!r}; use one of {TRAINERS}.')
  validate_data(config)
  _check_model(config)
  _check(config.total_steps is not None and config.total_steps > 0,
         '--config.total_steps must be a positive number of steps.')
  _check(config.warmup_steps >= 0,
         f'--config.warmup_steps={config.warmup_steps} must be >= 0.')
  if config.warmup_steps >= config.total_steps:
    logging.warning(
        'warmup_steps=%d >= total_steps=%d: the learning rate never reaches '
        'base_lr=%g (the run goes ahead, as in the original). Lower '
        '--config.warmup_steps if that is not intended.', config.warmup_steps,
        config.total_steps, config.base_lr)
  _check(config.decay_type in utils.DECAY_TYPES,
         f'--config.decay_type={config.decay_type!r}; use one of '
         f'{utils.DECAY_TYPES}.')
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
  config.accum_steps = max(config.accum_steps, 1)  # 0 means 1 from here on.
  return config
