"""Input pipeline: tfds datasets, image folders and the offline digits set.

Every source is reduced to raw records `(data, label)` in a fixed order,
where `data` is encoded image bytes (tfds) or a file path (folders). Records
are cheap to skip; decoding happens only for the examples a process keeps.

The training stream is a pure function of (config.seed, dataset,
config.batch, config.shuffle_buffer). Global position g = epoch * n + k
holds the k-th record of that epoch's shuffle, seeded by (seed, epoch); the
augmentation of position g is seeded by (seed, g). Both use stateless ops
only, so nothing else (TF's global seed, thread timing) changes them. A
restart at step s starts at epoch s * batch // n and skips the first
s * batch % n records of it, undecoded: it yields exactly what an
uninterrupted run would. Process p of P keeps the positions g with
p * batch / P <= g % batch < (p + 1) * batch / P, i.e. its rows of every
global batch, whatever P is (it reads, but does not decode, the others').

Preprocessing is the original's: train = Inception crop, resize to crop x
crop, random flip; eval = resize to crop x crop; both map [0, 255] to
[-1, 1] with `normalize`. Decoding, the eval resize and `normalize` live in
images.py (shared with predict, inspect and the notebooks); image folders
accept its formats (JPEG, PNG, GIF, BMP, WebP, TIFF), log how many images
each split and class has, and skip other files with a warning.
"""

import collections
import concurrent.futures
import dataclasses
import difflib
import os
from typing import Any, Dict, Iterator, Optional

from absl import logging
import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import errors
from vit_jax import digits as digits_lib
from vit_jax import images
from vit_jax.checkpoint import files as checkpoint_files
from vit_jax.checkpoint import names as checkpoint_names
from vit_jax.configs import common

_MAX_LISTED = 10  # Problems spelled out in one error message.
_MAX_CLASS_ROWS = 30  # Classes listed one per line in the folder summary.
_NAMES = ' '.join(images.EXTENSIONS)  # Image file names, for messages.
# Inception crop settings of the original (TF defaults, spelled out).
_ASPECT_RATIO_RANGE = (0.75, 1.33)
_MAX_ATTEMPTS = 100
_WHOLE_IMAGE = ((((0.0, 0.0, 1.0, 1.0),),))  # (1, 1, 4) ymin, xmin, ...
# Tags that keep the shuffle and augmentation random streams apart.
_SHUFFLE_TAG, _AUGMENT_TAG = 1, 2


class DatasetError(errors.UserError):
  """A dataset or data config problem, with a message saying what to do."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the logs need to know about a dataset."""

  num_classes: int
  class_names: list[str]  # Readable where available, else str ids.
  num_train_examples: int
  num_test_examples: int


@dataclasses.dataclass(frozen=True)
class _Source:
  info: DatasetInfo
  train: tf.data.Dataset  # Records (data: string, label: int), fixed order.
  test: tf.data.Dataset
  from_files: bool  # data is a file path (else encoded image bytes).


# The one decoder, eval resize and normalisation (also used by predict,
# inspect and the notebooks) live in images.py; these names stay here too.
normalize = images.normalize
preprocess_for_eval = images.preprocess_for_eval
decode_image = images.decode_image


def preprocess_for_train(
    image_uint8, crop: int, seed, *, crop_area_min: float = 0.05,
    flip: bool = True) -> tf.Tensor:
  """Inception crop, bilinear resize to crop x crop, flip, `normalize`.

  Args:
    image_uint8: uint8 (h, w, 3).
    crop: output side (pixels).
    seed: int (2,) stateless seed; same seed, same augmentation.
    crop_area_min: smallest crop area as a fraction of the image.
    flip: random horizontal flip with probability 0.5.

  Returns:
    float32 (crop, crop, 3) in [-1, 1].
  """
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image_uint8), bounding_boxes=tf.constant(_WHOLE_IMAGE),
      seed=crop_seed, min_object_covered=0.0,
      aspect_ratio_range=_ASPECT_RATIO_RANGE,
      area_range=(crop_area_min, 1.0), max_attempts=_MAX_ATTEMPTS)
  image = tf.image.resize(tf.slice(image_uint8, begin, size), [crop, crop])
  if flip:
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return normalize(image)


def validate_config(config, *, process_count: int | None = None) -> None:
  """Raises DatasetError naming every data field to change, if any."""
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
    raise DatasetError('Invalid data config:\n  - ' + '\n  - '.join(problems))


def dataset_info(config) -> DatasetInfo:
  """Class names and example counts, without building a pipeline.

  Counts are exact: from tf.data cardinality when known, else by reading
  (not decoding) the records. Raises DatasetError for unusable datasets.
  """
  return _get_source(config, check_images=False).info


def get_datasets(
    config, *, start_step: int = 0, process_index: int | None = None,
    process_count: int | None = None,
) -> 'Datasets':
  """This process's train and test datasets: `ds_train, ds_test = ...`.

  Args:
    config: the training config (see configs/common.py).
    start_step: the first training step; the stream starts at global
      example start_step * config.batch.
    process_index: this process (default jax.process_index()).
    process_count: processes sharing each batch (default
      jax.process_count()).

  Returns:
    A pair (train, test), as the original's, with `.info`:
    train: infinite; {'image': float32 (b, crop, crop, 3) in [-1, 1],
      'label': int32 (b,)} with b = config.batch // process_count.
    test: one pass; the same plus 'mask': float32 (b,), 0 for padding;
      b = config.batch_eval // process_count. Over all processes every
      test example appears exactly once with mask 1.
    info: as dataset_info(config), also as the attribute `.info` of the
      returned value.

  Raises:
    DatasetError: bad data config, unknown or unprepared dataset, unusable
      folder. Image folders are decoded once here with PIL (in threads), so
      a corrupt file fails now, by name, rather than mid-training.
  """
  count = jax.process_count() if process_count is None else process_count
  index = jax.process_index() if process_index is None else process_index
  validate_config(config, process_count=count)
  if not 0 <= index < count:
    raise DatasetError(f'process_index={index} not in [0, {count})')
  if start_step < 0:
    raise DatasetError(f'start_step={start_step} must be >= 0')
  _hide_accelerators_from_tf()
  source = _get_source(config, check_images=True)
  train = _train_dataset(source, config, start_step, index, count)
  test = _test_dataset(source, config, index, count)
  return Datasets(train, test, source.info)


class Datasets(tuple):
  """(train, test) with the dataset's `info` attached."""

  info: DatasetInfo

  def __new__(cls, train, test, info: DatasetInfo):
    pair = super().__new__(cls, (train, test))
    pair.info = info
    return pair


def _hide_accelerators_from_tf() -> None:
  # TF must not grab GPU memory that JAX needs; it only runs input ops.
  try:
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF already initialised its devices: leave them.
    logging.warning('Could not hide GPUs from TensorFlow (initialised).')


def _finish(ds: tf.data.Dataset) -> tf.data.Dataset:
  options = tf.data.Options()
  options.deterministic = True  # Parallel maps keep the element order.
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def _owned(position, batch: int, index: int, count: int):
  """True if global `position` is in process `index`'s rows of its batch."""
  row = position % batch
  local = batch // count
  return tf.logical_and(row >= index * local, row < (index + 1) * local)


def _random_key(seed: int, tag: int, value) -> tf.Tensor:
  """int64 (2,) stateless key for (seed, tag, value)."""
  key = tf.constant([seed, 0], tf.int64)
  key = tf.random.experimental.stateless_fold_in(key, tag)
  return tf.random.experimental.stateless_fold_in(key, value)


def _shuffle(records: tf.data.Dataset, n: int, buffer_size: int,
             key) -> tf.data.Dataset:
  """The n records in a random order that depends only on key (int64 (2,)).

  A uniform permutation inside each run of buffer_size consecutive records
  (all n when they fit), after rotating the records by a random amount so
  the runs differ from epoch to epoch. Unlike Dataset.shuffle, this is
  stateless: TF's global seed plays no part.
  """
  if n > buffer_size:
    shift = tf.random.stateless_uniform([], key, 0, n, dtype=tf.int64)
    records = records.skip(shift).concatenate(records.take(shift))

  def permute(index, chunk):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(tf.shape(chunk[1])[0]),
        tf.random.experimental.stateless_fold_in(key, index))
    return tf.nest.map_structure(lambda t: tf.gather(t, order), chunk)

  chunks = records.batch(buffer_size).enumerate().map(permute)
  # Reads the next chunk while this one is consumed (2 chunks in memory).
  return chunks.prefetch(1).unbatch()


def _train_dataset(source: _Source, config, start_step: int, index: int,
                   count: int) -> tf.data.Dataset:
  """Infinite, shuffled, augmented, batched; see the module docstring."""
  n = source.info.num_train_examples
  batch = config.batch
  first_epoch, offset = divmod(start_step * batch, n)
  buffer_size = max(1, min(config.shuffle_buffer, n))
  records, seed, from_files = source.train, config.seed, source.from_files

  def epoch(e):
    ds = _shuffle(records, n, buffer_size, _random_key(seed, _SHUFFLE_TAG, e))
    # Skipping raw records (before decoding) is what makes resume cheap.
    skip = tf.where(e == first_epoch, tf.constant(offset, tf.int64), 0)
    ds = ds.enumerate().skip(skip)
    return ds.map(lambda k, record: (e * n + k, record))

  def preprocess(position, record):
    image, label = _decode_record(record, from_files)
    image = preprocess_for_train(
        image, config.pp.crop, _random_key(seed, _AUGMENT_TAG, position),
        crop_area_min=config.pp.crop_area_min, flip=config.pp.flip)
    return {'image': image, 'label': label}

  ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch)
  ds = ds.filter(lambda g, _: _owned(g, batch, index, count))
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return _finish(ds.batch(batch // count, drop_remainder=True))


def _test_dataset(source: _Source, config, index: int,
                  count: int) -> tf.data.Dataset:
  """One pass, padded with mask 0 to whole global batches."""
  n = source.info.num_test_examples
  batch, crop = config.batch_eval, config.pp.crop
  padded = -(-n // batch) * batch

  def preprocess(_, record):
    image, label = _decode_record(record, source.from_files)
    return {'image': preprocess_for_eval(image, crop), 'label': label,
            'mask': tf.constant(1.0)}

  def padding(_):
    return {'image': tf.zeros([crop, crop, 3]), 'label': tf.constant(0),
            'mask': tf.constant(0.0)}

  def mine(position, *_):
    return _owned(position, batch, index, count)

  real = source.test.enumerate().filter(mine)
  real = real.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  # Padding positions n..padded-1 come after every real one, so the
  # concatenation keeps this process's positions in order.
  pad = tf.data.Dataset.range(n, padded).filter(mine).map(padding)
  ds = real.concatenate(pad)
  return _finish(ds.batch(batch // count, drop_remainder=True))


def _decode_record(record, from_files: bool):
  data, label = record
  if from_files:
    data = tf.io.read_file(data)
  return decode_image(data), tf.cast(label, tf.int32)


def _get_source(config, *, check_images: bool) -> _Source:
  """Dispatches on config.dataset: 'digits', a folder, or a tfds name."""
  name = config.dataset
  if not name:
    raise DatasetError(
        'config.dataset is empty: set --config.dataset to a tfds name '
        "(e.g. cifar10), 'digits' or an image folder")
  path = os.path.expanduser(name)
  if name == 'digits':  # Wins over a folder that happens to be ./digits.
    source = _folder_source(digits_lib.ensure_digits(), config, check_images)
  elif os.path.isdir(path):
    source = _folder_source(path, config, check_images)
  elif name.startswith(('/', './', '../', '~')):  # Clearly meant as a path.
    raise DatasetError(
        f'Dataset folder {os.path.abspath(path)} does not exist. An image '
        'folder needs train/<class>/<image> and test/<class>/<image>.')
  else:
    source = _tfds_source(config)
  for split, n in ((config.pp.train, source.info.num_train_examples),
                   (config.pp.test, source.info.num_test_examples)):
    if n == 0:
      raise DatasetError(f"Split '{split}' of '{name}' has no examples.")
  return source


def _unknown_dataset(name: str) -> DatasetError:
  known = tfds.list_builders(with_community_datasets=False)
  known += list(common.DATASET_PRESETS)
  close = difflib.get_close_matches(name.split('/')[0], known, n=5)
  hint = f' Did you mean: {", ".join(close)}?' if close else ''
  return DatasetError(
      f"Unknown dataset '{name}': not a tfds dataset, not 'digits' and not "
      f'an existing folder ({os.path.abspath(name)}).{hint} Presets: '
      f'{", ".join(common.DATASET_PRESETS)}. An image folder needs '
      'train/<class>/<image> and test/<class>/<image>.')


def _tfds_builder(config):
  """The builder for config.dataset, prepared (downloaded) if needed."""
  name = config.dataset
  try:
    builder = tfds.builder(name, data_dir=config.tfds_data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise _unknown_dataset(name) from None
  except (ValueError, AssertionError) as e:  # Bad config or version.
    raise DatasetError(f"tfds dataset '{name}': {e}") from None
  if builder.is_prepared():
    return builder
  if (not config.tfds_manual_dir and not _download_is_mocked(builder)
      and not checkpoint_files.network_available(
          _PROBE_HOST, timeout=_PROBE_TIMEOUT_S)):
    # tfds would retry unreachable hosts for minutes before giving up.
    raise _not_prepared(name, builder, 'no network: could not reach '
                        f'{_PROBE_HOST} within {_PROBE_TIMEOUT_S} s')
  download = tfds.download.DownloadConfig(manual_dir=config.tfds_manual_dir)
  try:
    builder.download_and_prepare(download_config=download)
  except Exception as e:  # pylint: disable=broad-except
    # No network, missing manual files, permissions: all need the same fix.
    reason = (str(e).strip().splitlines() or [''])[0][:300]
    raise _not_prepared(name, builder, f'{type(e).__name__}: {reason}'
                        ) from None
  return builder


_PROBE_HOST = checkpoint_names.GCS_HOST  # Where tfds looks first.
_PROBE_TIMEOUT_S = 3


def _download_is_mocked(builder) -> bool:
  """True under tfds.testing.mock_data, whose download is a local no-op."""
  fn = getattr(type(builder).download_and_prepare, '__name__', '')
  return fn.startswith('mock_')


def _not_prepared(name: str, builder, reason: str) -> DatasetError:
  return DatasetError(
      f"tfds dataset '{name}' is not prepared in {builder.data_dir} and "
      f'could not be downloaded and prepared here ({reason}).\nTo provide '
      f'it, on a machine with network run\n  tfds build {name} '
      '--data_dir=DIR\ncopy DIR here and pass --config.tfds_data_dir=DIR. '
      'Datasets with a manual download (e.g. imagenet2012) also need '
      '--config.tfds_manual_dir=FOLDER holding the downloaded archives.')


def _count(ds: tf.data.Dataset) -> int:
  """Examples in ds: its cardinality if known, else read them all."""
  n = int(ds.cardinality())
  if n < 0:
    n = int(ds.reduce(np.int64(0), lambda c, _: c + 1))
  return n


def _tfds_source(config) -> _Source:
  builder = _tfds_builder(config)
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise DatasetError(
        f"tfds dataset '{config.dataset}' needs 'image' and 'label' "
        f'features; it has {sorted(features)}.')
  label = features['label']
  names = getattr(label, 'names', None) or [
      str(i) for i in range(label.num_classes)]

  def records(split):
    try:
      ds = builder.as_dataset(
          split=split, shuffle_files=False,
          decoders={'image': tfds.decode.SkipDecoding()})
    except Exception as e:  # pylint: disable=broad-except
      raise DatasetError(
          f"tfds dataset '{config.dataset}': cannot read split '{split}' "
          f'({e}). Set --config.pp.train / --config.pp.test.') from None
    return ds.map(lambda ex: (ex['image'], ex['label']))

  train, test = records(config.pp.train), records(config.pp.test)
  info = DatasetInfo(
      num_classes=label.num_classes, class_names=list(names),
      num_train_examples=_count(train), num_test_examples=_count(test))
  return _Source(info=info, train=train, test=test, from_files=False)


@dataclasses.dataclass
class _Listing:
  classes: list[str]
  paths: list[str] = dataclasses.field(default_factory=list)
  labels: list[int] = dataclasses.field(default_factory=list)
  problems: list[str] = dataclasses.field(default_factory=list)
  skipped: list[str] = dataclasses.field(default_factory=list)


def _files_under(folder: str) -> list[str]:
  """Sorted non-hidden files below folder (recursively)."""
  found = []
  for parent, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    found += [os.path.join(parent, f) for f in files if not f.startswith('.')]
  return sorted(found)


def _list_split(root: str, split: str,
                classes: list[str] | None = None) -> _Listing:
  """Lists root/split/<class>/...; classes default to the sub-folders."""
  folder = os.path.join(root, split)
  if not os.path.isdir(folder):
    return _Listing(classes or [], problems=[f'missing folder {folder}'])
  entries = sorted(os.scandir(folder), key=lambda e: e.name)
  found = [e.name for e in entries
           if e.is_dir() and not e.name.startswith('.')]
  listing = _Listing(classes if classes is not None else found)
  listing.skipped = [e.path for e in entries
                     if e.is_file() and not e.name.startswith('.')]
  if not found:
    listing.problems.append(f'{folder} has no class sub-folders')
  for name in found:
    if name not in listing.classes:
      listing.problems.append(f'{folder}/{name}: class not in the train split')
      continue
    files = _files_under(os.path.join(folder, name))
    found_images = [f for f in files if images.is_image_name(f)]
    listing.skipped += [f for f in files if not images.is_image_name(f)]
    if not found_images:
      listing.problems.append(f'{folder}/{name}: no images ({_NAMES})')
    listing.paths += found_images
    listing.labels += [listing.classes.index(name)] * len(found_images)
  return listing


def _check_images(paths: list[str]) -> None:
  """Decodes every image once with PIL; raises naming the corrupt ones."""
  workers = min(32, os.cpu_count() or 1)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    problems = list(pool.map(images.image_problem, paths))
  bad = [f'{p}: {why}' for p, why in zip(paths, problems) if why]
  if bad:
    raise DatasetError(
        f'{len(bad)} corrupt or unsupported image(s); fix or remove them:\n'
        '  - ' + '\n  - '.join(bad[:_MAX_LISTED])
        + ('\n  ...' if len(bad) > _MAX_LISTED else ''))


def _folder_summary(root: str, config, train: _Listing,
                    test: _Listing) -> str:
  """A table of the images found per class and split, for the log."""
  splits = (config.pp.train, config.pp.test)
  counts = [np.bincount(s.labels, minlength=len(train.classes))
            for s in (train, test)]
  width = max(len(n) for n in train.classes + ['class'])
  lines = [f'Image folder {root}: {len(train.classes)} classes, '
           f'{len(train.paths)} {splits[0]} and {len(test.paths)} '
           f'{splits[1]} images',
           f'  {"class":<{width}}  {splits[0]:>7}  {splits[1]:>7}']
  for i, name in enumerate(train.classes[:_MAX_CLASS_ROWS]):
    lines.append(f'  {name:<{width}}  {counts[0][i]:>7}  {counts[1][i]:>7}')
  if len(train.classes) > _MAX_CLASS_ROWS:
    rest = [c[_MAX_CLASS_ROWS:] for c in counts]
    lines.append(f'  ... {len(rest[0])} more classes: {splits[0]} '
                 f'{rest[0].min()}-{rest[0].max()}, {splits[1]} '
                 f'{rest[1].min()}-{rest[1].max()} images per class')
  return '\n'.join(lines)


def _folder_source(root: str, config, check_images: bool) -> _Source:
  """An image folder: root/{pp.train,pp.test}/<class>/<image>."""
  train = _list_split(root, config.pp.train)
  test = _list_split(root, config.pp.test, train.classes)
  problems = train.problems + test.problems
  if problems:
    raise DatasetError(
        f'Image folder {root} is not usable (expected '
        f'{config.pp.train}/<class>/<image> and {config.pp.test}/<class>/'
        f'<image>, images {_NAMES}):\n  - ' + '\n  - '.join(problems))
  skipped = train.skipped + test.skipped
  if skipped:  # Documented choice: other files are ignored, not fatal.
    logging.warning('Skipping %d non-image file(s) in %s, e.g. %s',
                    len(skipped), root, skipped[:3])
  if check_images:  # Once per run (get_datasets), not for dataset_info.
    _check_images(train.paths + test.paths)
    logging.info('%s', _folder_summary(root, config, train, test))
  # A fixed permutation plays the role of tfds's pre-shuffled records, so a
  # shuffle buffer smaller than the folder still mixes the classes.
  order = np.random.RandomState(0).permutation(len(train.paths))
  train_records = tf.data.Dataset.from_tensor_slices(
      (np.asarray(train.paths)[order],
       np.asarray(train.labels, np.int64)[order]))
  test_records = tf.data.Dataset.from_tensor_slices(
      (np.asarray(test.paths), np.asarray(test.labels, np.int64)))
  info = DatasetInfo(
      num_classes=len(train.classes), class_names=list(train.classes),
      num_train_examples=len(train.paths),
      num_test_examples=len(test.paths))
  return _Source(info=info, train=train_records, test=test_records,
                 from_files=True)


# The original release's input-pipeline functions. They build the original's
# batches ('image' float32 in [-1, 1], one-hot 'label', drop_remainder) but
# without its leading device axis: jit places global batches with a
# sharding instead (see README, "Differences from the original release").
# Training itself uses `get_datasets` (exact resume, whole-split eval).

MAX_IN_MEMORY = 200_000  # The original's constant (unused there too).


def get_tfds_info(dataset: str, split: str) -> Dict[str, Any]:
  """Like `get_dataset_info`, for a tfds dataset (split sizes from tfds)."""
  builder = tfds.builder(dataset)
  try:
    num_examples = builder.info.splits[split].num_examples
  except KeyError:  # No split metadata (e.g. tfds.testing.mock_data): count.
    num_examples = _count(builder.as_dataset(split=split))
  return dict(num_examples=num_examples,
              num_classes=builder.info.features['label'].num_classes,
              int2str=builder.info.features['label'].int2str,
              examples_glob=None)


def get_directory_info(directory: str) -> Dict[str, Any]:
  """Like `get_dataset_info`, for directory/<class>/<image> (one split)."""
  listing = _list_split(*os.path.split(os.path.normpath(directory)))
  return dict(num_examples=len(listing.paths),
              num_classes=len(listing.classes),
              int2str=lambda id_: listing.classes[id_],
              examples_glob=os.path.join(directory, '*', '*'),
              paths=listing.paths, labels=listing.labels)


def get_dataset_info(dataset: str, split: str) -> Dict[str, Any]:
  """The original's dataset description: a dict with num_examples,
  num_classes, int2str and examples_glob (None for tfds). `dataset` is a
  tfds name or a folder holding `split`/<class>/<image>."""
  directory = os.path.join(dataset, split)
  if os.path.isdir(directory):
    return get_directory_info(directory)
  return get_tfds_info(dataset, split)


def get_data(*, data: tf.data.Dataset, mode: str, num_classes: int,
             image_decoder, repeats: Optional[int], batch_size: int,
             image_size: int, shuffle_buffer: int,
             preprocess=None) -> tf.data.Dataset:
  """Batches of the original's training/eval preprocessing of `data`.

  `data` yields dicts with 'image' (what `image_decoder` decodes to uint8
  (h, w, 3)) and 'label' (int); `preprocess`, if given, maps each element
  first. Train: Inception crop, resize, flip (stateless ops with per-example
  random seeds); test: resize. Both normalise to [-1, 1].
  """

  def pp(example):
    image = image_decoder(example['image'])
    if mode == 'train':
      seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
      image = preprocess_for_train(image, image_size, seed)
    else:
      image = preprocess_for_eval(image, image_size)
    return {'image': image,
            'label': tf.one_hot(example['label'], num_classes)}

  data = data.repeat(repeats)
  if mode == 'train':
    data = data.shuffle(shuffle_buffer)
  if preprocess is not None:
    data = data.map(preprocess, tf.data.AUTOTUNE)
  data = data.map(pp, tf.data.AUTOTUNE)
  return data.batch(batch_size, drop_remainder=True).prefetch(1)


def get_data_from_directory(*, config, directory: str,
                            mode: str) -> tf.data.Dataset:
  """`get_data` over directory/<class>/<image>."""
  info = get_directory_info(directory)
  data = tf.data.Dataset.from_tensor_slices(
      {'image': np.asarray(info['paths']),
       'label': np.asarray(info['labels'], np.int64)})
  return get_data(
      data=data, mode=mode, num_classes=info['num_classes'],
      image_decoder=lambda path: decode_image(tf.io.read_file(path)),
      repeats=None if mode == 'train' else 1,
      batch_size=config.batch_eval if mode == 'test' else config.batch,
      image_size=config.pp['crop'],
      shuffle_buffer=min(info['num_examples'], config.shuffle_buffer))


def get_data_from_tfds(*, config, mode: str) -> tf.data.Dataset:
  """`get_data` over split `config.pp[mode]` of tfds `config.dataset`."""
  builder = _tfds_builder(config)
  data = builder.as_dataset(split=config.pp[mode],
                            decoders={'image': tfds.decode.SkipDecoding()},
                            shuffle_files=mode == 'train')
  return get_data(
      data=data, mode=mode,
      num_classes=builder.info.features['label'].num_classes,
      image_decoder=builder.info.features['image'].decode_example,
      repeats=None if mode == 'train' else 1,
      batch_size=config.batch_eval if mode == 'test' else config.batch,
      image_size=config.pp['crop'], shuffle_buffer=config.shuffle_buffer)


def prefetch(dataset: tf.data.Dataset,
             n_prefetch: int) -> Iterator[Dict[str, jax.Array]]:
  """Batches of `dataset` as device arrays, `n_prefetch` transfers ahead."""
  queue = collections.deque()
  for batch in dataset.as_numpy_iterator():
    queue.append(jax.device_put(batch))
    if len(queue) > n_prefetch:
      yield queue.popleft()
  yield from queue


# Evaluation-only access (few-shot): whole splits in their fixed order, with
# the labels read first and any subset of records decoded on demand.


@dataclasses.dataclass(frozen=True)
class LabeledSplit:
  """One split's records in their fixed order, for evaluation-only uses."""

  labels: np.ndarray  # int64 (n,): label of every record, in record order.
  records: tf.data.Dataset  # (data, label) records, as in `_Source`.
  from_files: bool  # data is a file path (else encoded image bytes).


def get_labeled_splits(
    config) -> tuple[LabeledSplit, LabeledSplit, DatasetInfo]:
  """(train, test, info) of config.dataset: splits config.pp.train/test.

  Labels are read without decoding any image (a tfds split is still read
  once from disk). Image folders are checked with PIL first, as in
  `get_datasets`. Raises DatasetError for unusable datasets.
  """
  _hide_accelerators_from_tf()
  source = _get_source(config, check_images=True)

  def split(records):
    labels = records.map(lambda data, label: label).as_numpy_iterator()
    return LabeledSplit(np.fromiter(labels, np.int64), records,
                        source.from_files)

  return split(source.train), split(source.test), source.info


def eval_examples(split: LabeledSplit, *, crop: int,
                  indices: np.ndarray | None = None) -> tf.data.Dataset:
  """One unbatched pass with eval preprocessing (`preprocess_for_eval`).

  Args:
    split: from `get_labeled_splits`.
    crop: output side (pixels).
    indices: only these record positions, in increasing order (the others
      are skipped undecoded); None: every record.

  Returns:
    {'image': float32 (crop, crop, 3) in [-1, 1], 'label': int32}.
  """
  ds = split.records
  if indices is not None:
    keep = np.zeros(len(split.labels), bool)
    keep[np.asarray(indices, np.int64)] = True
    keep = tf.constant(keep)
    ds = ds.enumerate().filter(lambda i, _: tf.gather(keep, i))
    ds = ds.map(lambda _, record: record)

  def preprocess(data, label):
    image, label = _decode_record((data, label), split.from_files)
    return {'image': preprocess_for_eval(image, crop), 'label': label}

  return _finish(ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE))
