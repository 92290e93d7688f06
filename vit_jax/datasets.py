"""Dataset sources: tfds datasets, image folders and the offline digits set.

Every source is reduced to raw records `(data, label)` in a fixed order,
where `data` is encoded image bytes (tfds) or a file path (folders). Records
are cheap to skip; decoding happens only for the examples a process keeps
(see input_pipeline.py, which turns records into batches).

Splits are named as in tfds, with slices: `train`, `train[:90%]`,
`train[90%:]`, `test[10:50]`. For an image folder, `train[:90%]` takes that
part of root/train/ in a fixed pseudo-random order, so `train[:90%]` and
`train[90%:]` are disjoint and both hold every class. Image folders accept
images.py's formats (JPEG, PNG, GIF, BMP, WebP, TIFF), log how many images
each split and class has, and skip other files with a warning.
"""

import concurrent.futures
import dataclasses
import difflib
import os
import re

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import digits as digits_lib
from vit_jax import errors
from vit_jax import images
from vit_jax.checkpoint import files as checkpoint_files
from vit_jax.checkpoint import names as checkpoint_names
from vit_jax.configs import common

_MAX_LISTED = 10  # Problems spelled out in one error message.
_MAX_CLASS_ROWS = 30  # Classes listed one per line in the folder summary.
_NAMES = ' '.join(images.EXTENSIONS)  # Image file names, for messages.


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
class Source:
  """One dataset's records; see the module docstring."""

  info: DatasetInfo
  train: tf.data.Dataset  # Records (data: string, label: int), fixed order.
  test: tf.data.Dataset
  from_files: bool  # data is a file path (else encoded image bytes).


def dataset_info(config) -> DatasetInfo:
  """Class names and example counts, without building a pipeline.

  Counts are exact: from tf.data cardinality when known, else by reading
  (not decoding) the records. Raises DatasetError for unusable datasets.
  """
  return get_source(config, check_images=False).info



def decode_record(record, from_files: bool):
  data, label = record
  if from_files:
    data = tf.io.read_file(data)
  return images.decode_image(data), tf.cast(label, tf.int32)


def get_source(config, *, check_images: bool) -> Source:
  """Dispatches on config.dataset: 'digits', a folder, or a tfds name."""
  name = config.dataset  # Non-empty: config_validation.validate_data.
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


def tfds_builder(config):
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
      and not checkpoint_files.network_available(_PROBE_HOST, timeout=_PROBE_TIMEOUT_S)):
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


def count(ds: tf.data.Dataset) -> int:
  """Examples in ds: its cardinality if known, else read them all."""
  n = int(ds.cardinality())
  if n < 0:
    n = int(ds.reduce(np.int64(0), lambda c, _: c + 1))
  return n


def _tfds_source(config) -> Source:
  builder = tfds_builder(config)
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
      num_train_examples=count(train), num_test_examples=count(test))
  return Source(info=info, train=train, test=test, from_files=False)


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


_SPLIT = re.compile(r'^([\w-]+)(?:\[(-?\d+%?)?:(-?\d+%?)?\])?$')


def _bound(text: str | None, n: int, default: int) -> int:
  """A slice bound ('10', '-5', '90%') as a row index into n rows."""
  if not text:
    return default
  if text.endswith('%'):  # tfds rounds percent bounds to the nearest row.
    value = round(n * int(text[:-1]) / 100)
  else:
    value = int(text)
  return max(0, min(n, value + n if value < 0 else value))


def split_rows(split: str, n: int) -> tuple[str, np.ndarray]:
  """(folder name, sorted row indices) of `split` over n rows.

  `train` is every row; `train[a:b]` (absolute or percent bounds) is rows
  a..b-1 of a fixed pseudo-random permutation of the n rows, returned in
  increasing order.
  """
  match = _SPLIT.match(split)
  if not match:
    raise DatasetError(
        f"Split '{split}': use a folder name, optionally with a slice, e.g. "
        "'train', 'train[:90%]', 'train[90%:]', 'test[10:50]'.")
  name, start, stop = match.groups()
  if '[' not in split:
    return name, np.arange(n)
  order = np.random.RandomState(0).permutation(n)
  rows = order[_bound(start, n, 0):_bound(stop, n, n)]
  return name, np.sort(rows)


def list_split(root: str, split: str,
                classes: list[str] | None = None) -> _Listing:
  """Lists root/split/<class>/...; classes default to the sub-folders.

  A sliced split (`train[:90%]`) lists that part of root/train (see
  `split_rows`).
  """
  name, _ = split_rows(split, 0)
  folder = os.path.join(root, name)
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
  for label in found:
    if label not in listing.classes:
      listing.problems.append(
          f'{folder}/{label}: class not in the train split')
      continue
    files = _files_under(os.path.join(folder, label))
    found_images = [f for f in files if images.is_image_name(f)]
    listing.skipped += [f for f in files if not images.is_image_name(f)]
    if not found_images:
      listing.problems.append(f'{folder}/{label}: no images ({_NAMES})')
    listing.paths += found_images
    listing.labels += [listing.classes.index(label)] * len(found_images)
  _, rows = split_rows(split, len(listing.paths))
  listing.paths = [listing.paths[i] for i in rows]
  listing.labels = [listing.labels[i] for i in rows]
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


def _folder_source(root: str, config, check_images: bool) -> Source:
  """An image folder: root/{pp.train,pp.test}/<class>/<image>."""
  train = list_split(root, config.pp.train)
  test = list_split(root, config.pp.test, train.classes)
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
  return Source(info=info, train=train_records, test=test_records,
                 from_files=True)
