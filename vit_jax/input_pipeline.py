"""The resumable training stream and evaluation batches, from datasets.py's
records.

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

Preprocessing is the original's (images.py): train = Inception crop,
resize to crop x crop, random flip; eval = resize to crop x crop; both map
[0, 255] to [-1, 1].
The original's functions (`get_data`, ... with the [devices, batch] layout)
live in original.py and are importable from here, as in the original.
"""

import dataclasses

from absl import logging
import jax
import numpy as np
import tensorflow as tf

from vit_jax import config_validation
from vit_jax import datasets
from vit_jax import images
# The original's names, kept importable where the original had them.
from vit_jax.original import (  # pylint: disable=unused-import
    MAX_IN_MEMORY, get_data, get_data_from_directory, get_data_from_tfds,
    get_dataset_info, get_directory_info, get_tfds_info, prefetch)

# Tags that keep the shuffle and augmentation random streams apart.
_SHUFFLE_TAG, _AUGMENT_TAG = 1, 2




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
  config_validation.validate_data(config, process_count=count)
  if not 0 <= index < count:
    raise datasets.DatasetError(f'process_index={index} not in [0, {count})')
  if start_step < 0:
    raise datasets.DatasetError(f'start_step={start_step} must be >= 0')
  _hide_accelerators_from_tf()
  source = datasets.get_source(config, check_images=True)
  train = _train_dataset(source, config, start_step, index, count)
  test = _test_dataset(source, config, index, count)
  return Datasets(train, test, source.info)


class Datasets(tuple):
  """(train, test) with the dataset's `info` attached."""

  info: datasets.DatasetInfo

  def __new__(cls, train, test, info: datasets.DatasetInfo):
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


def _train_dataset(source: datasets.Source, config, start_step: int, index: int,
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
    image, label = datasets.decode_record(record, from_files)
    image = images.preprocess_for_train(
        image, config.pp.crop, _random_key(seed, _AUGMENT_TAG, position),
        crop_area_min=config.pp.crop_area_min, flip=config.pp.flip)
    return {'image': image, 'label': label}

  ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch)
  ds = ds.filter(lambda g, _: _owned(g, batch, index, count))
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  return _finish(ds.batch(batch // count, drop_remainder=True))


def _test_dataset(source: datasets.Source, config, index: int,
                  count: int) -> tf.data.Dataset:
  """One pass, padded with mask 0 to whole global batches."""
  n = source.info.num_test_examples
  batch, crop = config.batch_eval, config.pp.crop
  padded = -(-n // batch) * batch

  def preprocess(_, record):
    image, label = datasets.decode_record(record, source.from_files)
    return {'image': images.preprocess_for_eval(image, crop), 'label': label,
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



# Evaluation-only access (few-shot): whole splits in their fixed order, with
# the labels read first and any subset of records decoded on demand.


@dataclasses.dataclass(frozen=True)
class LabeledSplit:
  """One split's records in their fixed order, for evaluation-only uses."""

  labels: np.ndarray  # int64 (n,): label of every record, in record order.
  records: tf.data.Dataset  # (data, label) records, as in `datasets.Source`.
  from_files: bool  # data is a file path (else encoded image bytes).


def get_labeled_splits(
    config) -> tuple[LabeledSplit, LabeledSplit, datasets.DatasetInfo]:
  """(train, test, info) of config.dataset: splits config.pp.train/test.

  Labels are read without decoding any image (a tfds split is still read
  once from disk). Image folders are checked with PIL first, as in
  `get_datasets`. Raises DatasetError for unusable datasets.
  """
  _hide_accelerators_from_tf()
  source = datasets.get_source(config, check_images=True)

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
    image, label = datasets.decode_record((data, label), split.from_files)
    return {'image': images.preprocess_for_eval(image, crop), 'label': label}

  return _finish(ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE))
