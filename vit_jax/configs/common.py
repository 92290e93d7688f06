"""Defaults shared by every fine-tuning config, and the dataset presets.

The defaults are those of the original release (batch 512, 8 accumulation
steps, SGD momentum 0.9 with a bfloat16 accumulator, base_lr 0.03, cosine
decay after 500 warmup steps, gradient clipping at 1.0, crop 384).
"""

from typing import Any, Dict, Iterable, Optional, Tuple, Union

import ml_collections


def _preset(total_steps: int, train: str, test: str, crop: int,
            warmup_steps: Optional[int] = None):
  preset = ml_collections.ConfigDict({
      'total_steps': total_steps,
      'pp': ml_collections.ConfigDict(
          {'train': train, 'test': test, 'crop': crop})})
  if warmup_steps is not None:  # Short runs: the default 500 is too long.
    preset.warmup_steps = warmup_steps
  return preset


# Published presets, in the original's layout: total_steps and pp splits.
DATASET_PRESETS = {
    'cifar10': _preset(10_000, 'train[:98%]', 'test', 384),
    'cifar100': _preset(10_000, 'train[:98%]', 'test', 384),
    'imagenet2012': _preset(20_000, 'train[:99%]', 'validation', 384),
    # 500 steps with 100 warmup steps, as the original's AugReg config.
    'oxford_iiit_pet': _preset(500, 'train', 'test', 384, 100),
    'oxford_flowers102': _preset(500, 'train', 'test', 384, 100),
    # Offline: sklearn's handwritten digits written out as an image folder.
    'digits': _preset(600, 'train', 'test', 32, 100),
}
# An image folder (train/ and test/ sub-folders) that is not a preset.
FOLDER_PRESET = _preset(500, 'train', 'test', 384, 100)


def get_config():
  """Returns the common defaults (unlocked, so presets can extend them)."""
  config = ml_collections.ConfigDict()

  # What main.py runs: 'train' (fine-tuning) or 'inference_time' (benchmark).
  config.trainer = 'train'
  config.seed = 0  # Seeds parameter init (head), data order, augmentation.

  # Data. `dataset` is a tfds name, 'digits', or a folder with
  # train/<class>/<image> and test/<class>/<image> sub-folders.
  config.dataset = ''
  config.tfds_data_dir = None  # tfds data_dir (None: tfds default).
  config.tfds_manual_dir = None  # For datasets needing a manual download.
  config.pp = ml_collections.ConfigDict()
  config.pp.train = 'train'  # Train split (tfds slicing syntax).
  config.pp.test = 'test'  # Test split.
  config.pp.crop = 384  # Train and eval resolution (pixels).
  config.pp.crop_area_min = 0.05  # Inception crop: smallest area fraction.
  config.pp.flip = True  # Random horizontal flips in training.
  config.shuffle_buffer = 50_000  # Examples in the tf.data shuffle buffer.
  config.prefetch = 2  # Batches prefetched to the devices.

  # Batches. Global sizes, split across processes and then devices.
  config.batch = 512  # Training examples per step.
  config.batch_eval = 512  # Evaluation examples per step.
  config.accum_steps = 8  # Micro-batches per step (gradient accumulation).

  # Optimisation.
  config.total_steps = None  # None: taken from the dataset preset.
  config.base_lr = 0.03  # Peak learning rate, reached after warmup.
  config.decay_type = 'cosine'  # 'cosine' or 'linear' (to 1e-5).
  config.warmup_steps = 500  # Linear warmup from 0.
  config.grad_norm_clip = 1.0  # Global-norm clipping; 0 or None disables.
  config.optimizer = 'sgd'  # 'sgd' (momentum, the original) or 'adam'.
  config.momentum = 0.9  # SGD momentum.
  config.optim_dtype = 'bfloat16'  # Momentum accumulator dtype.
  # On a NaN/Inf loss: 'raise' stops with an error naming the step (the last
  # checkpoint stays); 'skip' drops that update and continues.
  config.nonfinite_loss = 'raise'

  # Model: a registered config (configs/models.py); `model.model_name` is
  # its name and the pretrained file's stem (the one source of truth).
  config.model = ml_collections.ConfigDict()
  config.dtype = 'float32'  # Compute dtype ('bfloat16' on TPU/GPU).
  config.remat = False  # Rematerialise encoder blocks to save memory.
  config.attention_impl = 'einsum'  # 'einsum', 'xla' or 'cudnn' (GPU).

  # Partitioning: a (data, model) device mesh; -1 means "all remaining".
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1  # Data-parallel axis.
  config.mesh.model = 1  # Tensor-parallel axis (attention heads, MLP).
  config.fsdp = False  # Also shard parameters over the data axis.

  # Checkpoints. `pretrained_dir` holds {model.model_name}.npz; '' trains
  # from scratch (logged as a warning).
  config.pretrained_dir = '.'
  # AugReg (configs/augreg.py): a model name (its recommended checkpoint)
  # or a file stem, read as {pretrained_dir}/{file}.npz.
  config.model_or_filename = None
  config.pretrained_path = ''  # A full path; overrides the two above.
  config.checkpoint_every = 1_000  # Steps between orbax checkpoints.
  config.keep_checkpoints = 3  # Newest orbax checkpoints kept.
  config.export = True  # Write {workdir}/model.npz (official layout) at end.

  # Cadences (in steps).
  config.eval_every = 100  # Test accuracy.
  config.progress_every = 10  # Train loss, learning rate, img/s.
  # Few-shot linear evaluation of the pre-logits features (vit_jax/
  # fewshot.py), logged as fewshot/<dataset>_<k>shot. Off while `datasets`
  # is empty; e.g. --config.fewshot.datasets=digits.
  config.fewshot = ml_collections.ConfigDict()
  config.fewshot.datasets = ()  # tfds names, 'digits' or image folders.
  config.fewshot.shots = (1, 5, 10, 25)  # Training images per class.
  config.fewshot.seeds = 3  # Draws per shot count (seeds 0..n-1), averaged.
  # Ridge strengths, all from one eigendecomposition; the first is logged as
  # fewshot/<dataset>_<k>shot, the others with the suffix _l2_<value>.
  config.fewshot.l2_regs = (2.0**10,)
  config.fewshot.every = 0  # Steps between runs; 0: with every eval.
  # JAX's persistent compilation cache; '' disables. Relative paths are
  # taken inside the workdir.
  config.compilation_cache = 'jax_cache'
  return config


def with_dataset(config: ml_collections.ConfigDict,
                 dataset: str) -> ml_collections.ConfigDict:
  """A copy of `config` with `dataset` and its preset's steps and splits.

  A name that is not a preset (an image folder) gets `FOLDER_PRESET`.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  preset = DATASET_PRESETS.get(dataset, FOLDER_PRESET)
  config.dataset = dataset
  config.total_steps = preset.total_steps
  if 'warmup_steps' in preset:
    config.warmup_steps = preset.warmup_steps
  config.pp.update(preset.pp)
  return config


def flatten(
    config: Union[ml_collections.ConfigDict, Dict[str, Any]],
    prefix: Tuple[str, ...] = ('config',)
) -> Iterable[Tuple[str, Any]]:
  """Yields ('config.a.b', value) for every leaf, e.g. to write sweeps."""
  for key, value in config.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      yield from flatten(value, prefix + (key,))
    else:
      yield '.'.join(prefix + (key,)), value
