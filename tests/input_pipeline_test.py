"""Tests for input_pipeline and digits: offline, tiny datasets only."""

import io
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import config_validation
from vit_jax import datasets
from vit_jax import digits
from vit_jax import images
from vit_jax import input_pipeline as ip
from vit_jax.configs import common

CROP = 8  # Small crops keep every pipeline fast.


def _config(dataset, *, batch=4, batch_eval=4, seed=0, **pp):
  config = common.with_dataset(common.get_config(), dataset)
  config.batch, config.batch_eval, config.seed = batch, batch_eval, seed
  config.pp.crop = CROP
  config.pp.update(pp)
  return config


def _tempdir(test):
  # Not create_tempdir(): it needs parsed absl flags, which pytest lacks.
  return test.enterContext(tempfile.TemporaryDirectory())


def _batches(ds, count=None):
  ds = ds if count is None else ds.take(count)
  return list(ds.as_numpy_iterator())


def _concat(*batches):
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _assert_batches_equal(test, got, want):
  test.assertEqual(len(got), len(want))
  for g, w in zip(got, want):
    test.assertEqual(sorted(g), sorted(w))
    for key in w:
      np.testing.assert_array_equal(g[key], w[key], err_msg=key)


def _rgb(rng, h, w, channels=3):
  shape = (h, w, channels) if channels > 1 else (h, w)
  return rng.randint(0, 256, shape, dtype=np.uint8)


def _save(path, array, mode, fmt):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).convert(mode).save(path, fmt)


def _write_good_folder(root):
  """11 train images (2 classes, odd formats) and 5 test PNGs."""
  rng = np.random.RandomState(0)
  cat, dog = f'{root}/train/cat', f'{root}/train/dog'
  _save(f'{cat}/a.PNG', _rgb(rng, 10, 12), 'RGB', 'PNG')
  _save(f'{cat}/b.JPG', _rgb(rng, 9, 9), 'L', 'JPEG')
  _save(f'{cat}/c.png', _rgb(rng, 7, 11, 4), 'RGBA', 'PNG')
  _save(f'{cat}/d.jpeg', _rgb(rng, 12, 10), 'CMYK', 'JPEG')
  _save(f'{cat}/one.png', _rgb(rng, 1, 1), 'RGB', 'PNG')
  _save(f'{cat}/sub/e.Jpeg', _rgb(rng, 6, 6), 'RGB', 'JPEG')
  for i in range(5):
    _save(f'{dog}/{i}.png', _rgb(rng, 5 + i, 13 - i), 'RGB', 'PNG')
  with open(f'{cat}/notes.txt', 'w') as f:
    f.write('not an image')
  for split_class, count in (('cat', 2), ('dog', 3)):
    for i in range(count):
      mode = ('RGB', 'L', 'RGBA')[i % 3]
      _save(f'{root}/test/{split_class}/{i}.png',
            _rgb(rng, 6 + i, 9, 4 if mode == 'RGBA' else 3), mode, 'PNG')


class NormalizeTest(absltest.TestCase):

  def test_maps_0_255_to_minus1_1(self):
    got = images.normalize(np.array([0, 127.5, 255, 51], np.float64))
    self.assertEqual(got.dtype, np.float32)
    np.testing.assert_allclose(got, [-1.0, 0.0, 1.0, -0.6], atol=1e-7)
    got = images.normalize(tf.constant([0, 255], tf.uint8))
    np.testing.assert_allclose(got.numpy(), [-1.0, 1.0])

  def test_eval_is_resize_then_normalize(self):
    image = _rgb(np.random.RandomState(1), 5, 9)
    want = (tf.image.resize(image, [CROP, CROP]).numpy() - 127.5) / 127.5
    got = images.preprocess_for_eval(image, CROP)
    self.assertEqual(got.shape, (CROP, CROP, 3))
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)

  def test_train_crop_of_full_area_without_flip_is_eval(self):
    image = _rgb(np.random.RandomState(2), 10, 10)
    seed = tf.constant([3, 4], tf.int64)
    got = images.preprocess_for_train(image, CROP, seed, crop_area_min=1.0,
                                  flip=False)
    want = images.preprocess_for_eval(image, CROP)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)

  def test_train_flips_half_the_time_and_is_seeded(self):
    image = _rgb(np.random.RandomState(3), 10, 10)
    plain = images.preprocess_for_eval(image, CROP).numpy()
    flips = []
    for i in range(16):
      seed = tf.constant([0, i], tf.int64)
      got = images.preprocess_for_train(image, CROP, seed, crop_area_min=1.0)
      again = images.preprocess_for_train(image, CROP, seed, crop_area_min=1.0)
      np.testing.assert_array_equal(got.numpy(), again.numpy())
      flipped = np.allclose(got.numpy(), plain[:, ::-1], atol=1e-6)
      self.assertTrue(flipped or np.allclose(got.numpy(), plain, atol=1e-6))
      flips.append(flipped)
    self.assertBetween(sum(flips), 3, 13)

  def test_inception_crop_is_a_sub_image(self):
    # A vertical gradient: a crop covers a sub-range of rows, never more.
    image = np.repeat(np.arange(0, 250, 10, dtype=np.uint8)[:, None], 25, 1)
    image = np.stack([image] * 3, -1)
    areas = []
    for i in range(20):
      got = images.preprocess_for_train(image, 16, tf.constant([1, i], tf.int64),
                                    flip=False).numpy()
      self.assertGreaterEqual(got.min(), -1.0)
      self.assertLessEqual(got.max(), 240 / 127.5 - 1 + 1e-6)
      areas.append(got[-1, 0, 0] - got[0, 0, 0])
    self.assertLess(min(areas), max(areas) - 0.1)  # Crops do vary.


class DigitsTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.parent = tempfile.mkdtemp()  # Written once: ~1 s.
    cls.root = digits.ensure_digits(os.path.join(cls.parent, 'digits'))

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.parent)
    super().tearDownClass()

  def test_writes_stratified_split_once(self):
    root = self.root
    counts = {}
    for split in ('train', 'test'):
      for label in range(10):
        folder = os.path.join(root, split, str(label))
        counts[split, label] = len(os.listdir(folder))
    self.assertEqual(sum(counts['train', i] for i in range(10)), 1438)
    self.assertEqual(sum(counts['test', i] for i in range(10)), 359)
    for i in range(10):  # 20% of each class (178 zeros: 36 test).
      total = counts['train', i] + counts['test', i]
      self.assertEqual(counts['test', i], round(0.2 * total))
    self.assertEqual(counts['test', 0], 36)
    self.assertEqual(os.listdir(self.parent), ['digits'])  # No leftovers.
    mtime = os.path.getmtime(root)
    self.assertEqual(digits.ensure_digits(root), root)
    self.assertEqual(os.path.getmtime(root), mtime)

  def test_pixels(self):
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    root = self.root
    source = datasets.load_digits()
    path = os.path.join(root, 'train', str(source.target[1]), '0001.png')
    if not os.path.exists(path):
      path = path.replace('train', 'test')
    got = np.asarray(Image.open(path))
    self.assertEqual(got.shape, (32, 32))
    want = np.round(source.images[1] * 255 / 16)
    np.testing.assert_array_equal(got[::4, ::4], want)
    np.testing.assert_array_equal(got[3::4, 3::4], want)
    self.assertEqual(got.max(), 255)

  def test_killed_write_leaves_nothing(self):
    parent = _tempdir(self)
    with mock.patch.object(digits, '_write', side_effect=KeyboardInterrupt):
      with self.assertRaises(KeyboardInterrupt):
        digits.ensure_digits(os.path.join(parent, 'd'))
    self.assertEqual(os.listdir(parent), [])

  def test_default_dir_honours_env(self):
    with mock.patch.dict(os.environ, {'VIT_JAX_DATA_DIR': '/x/y'}):
      self.assertEqual(digits.default_dir(), '/x/y/digits')

  def test_digits_dataset_end_to_end(self):
    env = {'VIT_JAX_DATA_DIR': self.parent}  # Reuses the written folder.
    with mock.patch.dict(os.environ, env):
      config = _config('digits', batch=8, batch_eval=100)
      info = datasets.dataset_info(config)
      self.assertEqual(info.class_names, [str(i) for i in range(10)])
      train, test = ip.get_datasets(config, process_count=1,
                                       process_index=0)
      batch = _batches(train, 1)[0]
      self.assertEqual(batch['image'].shape, (8, CROP, CROP, 3))
      tests = _batches(test)
    self.assertLen(tests, 4)  # 359 padded to 400.
    masks = np.concatenate([b['mask'] for b in tests])
    self.assertEqual(masks.sum(), 359)
    labels = np.concatenate([b['label'] for b in tests])[masks > 0]
    self.assertEqual(np.bincount(labels)[0], 36)


class FolderPipelineTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    _write_good_folder(cls.root)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root)
    super().tearDownClass()

  def config(self, **kw):
    return _config(self.root, **kw)

  def datasets(self, config, **kw):
    kw.setdefault('process_index', 0)
    kw.setdefault('process_count', 1)
    return ip.get_datasets(config, **kw)

  def test_info_counts_images_only(self):
    with self.assertLogs('absl', 'WARNING') as logs:
      info = datasets.dataset_info(self.config())
    self.assertIn('Skipping 1 non-image file(s)', logs.output[0])
    self.assertIn('notes.txt', logs.output[0])
    self.assertEqual(info, datasets.DatasetInfo(2, ['cat', 'dog'], 11, 5))

  def test_shapes_dtypes_range(self):
    train, test = self.datasets(self.config())
    for batch in _batches(train, 4):
      self.assertEqual(batch['image'].shape, (4, CROP, CROP, 3))
      self.assertEqual(batch['image'].dtype, np.float32)
      self.assertEqual(batch['label'].dtype, np.int32)
      self.assertBetween(batch['image'].min(), -1.0, 1.0)
      self.assertBetween(batch['image'].max(), -1.0, 1.0)
      self.assertContainsSubset(set(batch['label']), {0, 1})
    for batch in _batches(test):
      self.assertEqual(batch['mask'].dtype, np.float32)
      self.assertEqual(batch['image'].shape, (4, CROP, CROP, 3))

  def test_eval_values_match_direct_resize(self):
    _, test = self.datasets(self.config())
    got = _batches(test)
    self.assertLen(got, 2)  # 5 examples padded to 8.
    got = _concat(*got)
    np.testing.assert_array_equal(got['mask'], [1] * 5 + [0] * 3)
    np.testing.assert_array_equal(got['label'], [0, 0, 1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(got['image'][5:], 0.0)
    paths = [f'{self.root}/test/{c}/{i}.png'
             for c, n in (('cat', 2), ('dog', 3)) for i in range(n)]
    for image, path in zip(got['image'], paths):
      pixels = np.asarray(Image.open(path).convert('RGB'), np.float32)
      want = (tf.image.resize(pixels, [CROP, CROP]).numpy() - 127.5) / 127.5
      np.testing.assert_allclose(image, want, atol=1e-5, err_msg=path)

  def test_same_seed_same_batches_other_seed_differs(self):
    first = _batches(self.datasets(self.config())[0], 6)
    second = _batches(self.datasets(self.config())[0], 6)
    _assert_batches_equal(self, second, first)
    other = _batches(self.datasets(self.config(seed=1))[0], 6)
    self.assertFalse(np.array_equal(other[0]['image'], first[0]['image']))

  def _stream_order(self, epochs, **kw):
    """Which train file each of the first epochs * 11 positions holds."""
    # Full-area crops without flips make train images equal eval images.
    config = self.config(batch=1, crop_area_min=1.0, flip=False)
    config.update(kw)
    files = [os.path.join(parent, f)
             for parent, _, names in os.walk(f'{self.root}/train')
             for f in names if not f.endswith('.txt')]
    refs = np.stack([images.preprocess_for_eval(
        images.decode_image(tf.io.read_file(f)), CROP).numpy() for f in files])
    stream = _concat(*_batches(self.datasets(config)[0], 11 * epochs))
    distances = ((stream['image'][:, None] - refs[None]) ** 2).sum((2, 3, 4))
    np.testing.assert_allclose(distances.min(axis=1), 0.0, atol=1e-6)
    return distances.argmin(axis=1), files

  def test_each_epoch_is_a_new_permutation(self):
    order = self._stream_order(3)[0].reshape(3, 11)
    for epoch in order:
      self.assertCountEqual(epoch, range(11))
    self.assertFalse(np.array_equal(order[0], order[1]))
    self.assertFalse(np.array_equal(order[1], order[2]))

  def test_small_shuffle_buffer_still_visits_all_once_per_epoch(self):
    order = self._stream_order(3, shuffle_buffer=4)[0].reshape(3, 11)
    for epoch in order:
      self.assertCountEqual(epoch, range(11))
    # The chunks of 4 start at a random rotation each epoch.
    self.assertLen({tuple(sorted(epoch[:4])) for epoch in order}, 3)

  def test_tf_global_seed_plays_no_part(self):
    first = _batches(self.datasets(self.config())[0], 3)
    tf.random.set_seed(123)
    try:
      second = _batches(self.datasets(self.config())[0], 3)
    finally:
      tf.random.set_seed(None)
    _assert_batches_equal(self, second, first)

  def test_augmentation_differs_at_every_position(self):
    order, files = self._stream_order(3)  # Shuffling ignores pp settings.
    config = self.config(batch=1)
    images = _concat(*_batches(self.datasets(config)[0], 33))['image']
    for example, path in enumerate(files):
      views = images[order == example]
      self.assertLen(views, 3)
      for i, j in ((0, 1), (0, 2), (1, 2)):
        same = np.allclose(views[i], views[j])
        # one.png is 1x1: every crop and flip of it is the same image.
        self.assertEqual(same, path.endswith('one.png'), (path, i, j))

  def test_resume_matches_uninterrupted_run(self):
    config = self.config()
    reference = _batches(self.datasets(config)[0], 10)
    # n = 11, batch 4: step 2 crosses epoch 0->1, step 3 starts inside
    # epoch 1 at offset 1, step 8 inside epoch 2.
    for step in (1, 2, 3, 8):
      resumed = _batches(self.datasets(config, start_step=step)[0], 2)
      _assert_batches_equal(self, resumed, reference[step:step + 2])
    config.shuffle_buffer = 3  # Several shuffle chunks per epoch.
    reference = _batches(self.datasets(config)[0], 9)
    for step in (2, 5, 7):
      resumed = _batches(self.datasets(config, start_step=step)[0], 2)
      _assert_batches_equal(self, resumed, reference[step:step + 2])

  def test_resume_does_not_decode_skipped_examples(self):
    order, files = self._stream_order(1)
    root = os.path.join(_tempdir(self), 'copy')
    shutil.copytree(self.root, root)
    config = _config(root, batch=1, crop_area_min=1.0, flip=False)
    train = self.datasets(config, start_step=8)[0]  # Validates all files.
    for index in order[:8]:  # Breaks the 8 examples a resume skips.
      with open(files[index].replace(self.root, root), 'wb') as f:
        f.write(b'broken')
    got = _concat(*_batches(train, 3))['image']
    for image, index in zip(got, order[8:]):
      want = images.preprocess_for_eval(
          images.decode_image(tf.io.read_file(files[index])), CROP)
      np.testing.assert_allclose(image, want.numpy(), atol=1e-6)

  def test_two_processes_make_the_global_batch(self):
    config = self.config()
    whole = _batches(self.datasets(config, start_step=2)[0], 4)
    parts = [_batches(self.datasets(config, start_step=2, process_index=p,
                                    process_count=2)[0], 4) for p in (0, 1)]
    self.assertEqual(parts[0][0]['image'].shape, (2, CROP, CROP, 3))
    _assert_batches_equal(self, [_concat(a, b) for a, b in zip(*parts)], whole)

  def test_test_set_split_across_processes_once(self):
    config = self.config(batch_eval=4)
    whole = _batches(self.datasets(config)[1])
    parts = [_batches(self.datasets(config, process_index=p,
                                    process_count=2)[1]) for p in (0, 1)]
    self.assertLen(parts[0], 2)
    self.assertLen(parts[1], 2)  # Same count: no process waits for another.
    _assert_batches_equal(self, [_concat(a, b) for a, b in zip(*parts)], whole)
    masks = [np.concatenate([b['mask'] for b in p]) for p in parts]
    np.testing.assert_array_equal(masks[0], [1, 1, 1, 0])
    np.testing.assert_array_equal(masks[1], [1, 1, 0, 0])


class FolderLabelsTest(absltest.TestCase):
  """Every decoded image carries the label of the folder it came from."""

  def test_labels_match_image_content(self):
    # Class c's images are a flat grey level 40 + 50 c with a little noise:
    # the decoded pixels tell the folder, whatever the crop, flip or order.
    root = _tempdir(self)
    names = ['ant', 'bee', 'cow', 'dog']
    rng = np.random.RandomState(0)
    for c, name in enumerate(names):
      for split, n in (('train', 5), ('test', 2)):
        for i in range(n):
          level = 40 + 50 * c + rng.randint(-3, 4, (9 + i, 11, 3))
          _save(f'{root}/{split}/{name}/{i}.png', level.astype(np.uint8),
                'RGB', 'PNG')
    config = _config(root, batch=4, batch_eval=3)
    config.shuffle_buffer = 8  # Smaller than the folder, as in real runs.
    datasets = ip.get_datasets(config, process_index=0, process_count=1)
    (train, test), info = datasets, datasets.info
    self.assertEqual(info.class_names, names)

    def content_class(images):  # [-1, 1] back to 0..255, nearest level.
      level = (images.mean(axis=(1, 2, 3)) + 1) * 127.5
      return np.rint((level - 40) / 50).astype(int)

    seen = []
    for batch in _batches(train, 10):  # 40 examples: two epochs.
      np.testing.assert_array_equal(batch['label'],
                                    content_class(batch['image']))
      seen += batch['label'].tolist()
    self.assertEqual(sorted(set(seen)), [0, 1, 2, 3])
    self.assertNotEqual(seen[:20], sorted(seen[:20]))  # Really shuffled.
    for batch in _batches(test):
      real = batch['mask'] > 0
      np.testing.assert_array_equal(batch['label'][real],
                                    content_class(batch['image'][real]))


class BadFolderTest(absltest.TestCase):

  def assert_error(self, root, *fragments, check_images=False):
    config = _config(root)
    with self.assertRaises(datasets.DatasetError) as cm:
      if check_images:
        ip.get_datasets(config, process_index=0, process_count=1)
      else:
        datasets.dataset_info(config)
    for fragment in fragments:
      self.assertIn(fragment, str(cm.exception))

  def test_empty_folder(self):
    root = _tempdir(self)
    self.assert_error(root, f'missing folder {root}/train',
                      f'missing folder {root}/test')

  def test_class_without_images_and_unknown_test_class(self):
    root = _tempdir(self)
    rng = np.random.RandomState(0)
    _save(f'{root}/train/a/0.png', _rgb(rng, 4, 4), 'RGB', 'PNG')
    _save(f'{root}/test/a/0.png', _rgb(rng, 4, 4), 'RGB', 'PNG')
    _save(f'{root}/test/z/0.png', _rgb(rng, 4, 4), 'RGB', 'PNG')
    os.makedirs(f'{root}/train/b')
    with open(f'{root}/train/b/readme.md', 'w') as f:
      f.write('x')
    self.assert_error(root, f'{root}/train/b: no images (.jpg .jpeg .png',
                      f'{root}/test/z: class not in the train split')

  def test_corrupt_and_wrong_format_images_are_named(self):
    root = _tempdir(self)
    rng = np.random.RandomState(0)
    _save(f'{root}/train/a/good.png', _rgb(rng, 4, 4), 'RGB', 'PNG')
    _save(f'{root}/test/a/good.png', _rgb(rng, 4, 4), 'RGB', 'PNG')
    buffer = io.BytesIO()
    Image.fromarray(_rgb(rng, 64, 64)).save(buffer, 'JPEG')
    with open(f'{root}/train/a/truncated.jpg', 'wb') as f:
      f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    with open(f'{root}/test/a/garbage.JPEG', 'wb') as f:
      f.write(b'definitely not a jpeg')
    Image.fromarray(_rgb(rng, 4, 4)).save(f'{root}/train/a/ppm.png', 'PPM')
    self.assertEqual(datasets.dataset_info(_config(root)).num_train_examples, 3)
    self.assert_error(root, '3 corrupt or unsupported', 'truncated.jpg',
                      f'{root}/test/a/garbage.JPEG', 'PPM data',
                      check_images=True)

  def test_missing_path(self):
    self.assert_error('/no/such/folder', 'folder /no/such/folder does not')


class TfdsTest(absltest.TestCase):

  def test_mock_cifar10_resume_and_processes(self):
    with tfds.testing.mock_data(num_examples=10):
      config = _config('cifar10')
      info = datasets.dataset_info(config)
      self.assertEqual(info.num_classes, 10)
      self.assertLen(info.class_names, 10)
      self.assertEqual((info.num_train_examples, info.num_test_examples),
                       (10, 10))
      train, test = ip.get_datasets(config, process_index=0,
                                       process_count=1)
      reference = _batches(train, 6)
      self.assertEqual(reference[0]['image'].shape, (4, CROP, CROP, 3))
      for step in (2, 3):  # 8..11 crosses the epoch; 12 is inside epoch 1.
        resumed = ip.get_datasets(config, start_step=step, process_index=0,
                                  process_count=1)[0]
        _assert_batches_equal(self, _batches(resumed, 2),
                              reference[step:step + 2])
      parts = [_batches(ip.get_datasets(config, process_index=p,
                                        process_count=2)[0], 3) for p in (0, 1)]
      _assert_batches_equal(
          self, [_concat(a, b) for a, b in zip(*parts)], reference[:3])
      masks = np.concatenate([b['mask'] for b in _batches(test)])
      np.testing.assert_array_equal(masks, [1] * 10 + [0] * 2)

  def test_unprepared_dataset_says_how_to_provide_it(self):
    data_dir = _tempdir(self)
    config = _config('cifar10')
    config.tfds_data_dir = data_dir
    # A network that answers the probe but fails the download; the probe
    # itself is mocked too, so nothing is looked up or connected.
    with mock.patch.object(datasets.checkpoint_files, 'network_available',
                           return_value=True), \
        mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare',
                          side_effect=ConnectionError('no network')):
      with self.assertRaises(datasets.DatasetError) as cm:
        datasets.dataset_info(config)
    message = str(cm.exception)
    for fragment in ("'cifar10' is not prepared", data_dir, 'no network',
                     'tfds build cifar10 --data_dir=DIR',
                     '--config.tfds_data_dir', '--config.tfds_manual_dir'):
      self.assertIn(fragment, message)

  def test_no_network_fails_without_trying_to_download(self):
    config = _config('cifar10')
    config.tfds_data_dir = _tempdir(self)
    with mock.patch.object(datasets.checkpoint_files, 'network_available',
                           return_value=False), \
        mock.patch.object(tfds.core.DatasetBuilder,
                          'download_and_prepare') as download:
      with self.assertRaisesRegex(datasets.DatasetError, 'no network: could not '
                                  'reach storage.googleapis.com'):
        datasets.dataset_info(config)
    download.assert_not_called()

  def test_unknown_name_suggests(self):
    with self.assertRaises(datasets.DatasetError) as cm:
      datasets.dataset_info(_config('cifar11'))
    self.assertIn("Unknown dataset 'cifar11'", str(cm.exception))
    self.assertIn('Did you mean: cifar10', str(cm.exception))


class ValidateConfigTest(absltest.TestCase):

  def test_batch_not_divisible(self):
    config = _config('digits', batch=6, batch_eval=8)
    with self.assertRaises(config_validation.ConfigError) as cm:
      config_validation.validate_data(config, process_count=4)
    self.assertIn('config.batch=6', str(cm.exception))
    self.assertIn('--config.batch=4', str(cm.exception))
    self.assertNotIn('batch_eval', str(cm.exception))
    config_validation.validate_data(config, process_count=2)  # 6 and 8 split in two.

  def test_empty_dataset(self):
    with self.assertRaisesRegex(config_validation.ConfigError,
                                'config.dataset is empty'):
      config_validation.validate_data(_config(''), process_count=1)


if __name__ == '__main__':
  absltest.main()
