"""Tests for vit_jax.checkpoint on small synthetic files in the official layout.

Files are written as the release writes them (uncompressed `np.savez`, flat
`/` keys, pre-Linen ViT names, GroupNorm leaves (1, 1, 1, C)); nothing is
downloaded.
"""

import io
import os
import tempfile
import zipfile

from absl.testing import absltest
from flax import traverse_util
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tests.test_util import random_params
from vit_jax import checkpoint
from vit_jax import models

CheckpointError = checkpoint.CheckpointError
POSEMB = 'Transformer/posembed_input/pos_embedding'


def vit_config(layers=12, hidden=16, classifier='token', resnet=None,
               patch=16, representation_size=None):
  """A small ViT config; 12 blocks exercise the natural sort of names."""
  config = ml_collections.ConfigDict({
      'model_name': 'small',
      'patches': {'size': (patch, patch)},
      'hidden_size': hidden,
      'transformer': {'mlp_dim': 2 * hidden, 'num_heads': 2,
                      'num_layers': layers, 'attention_dropout_rate': 0.0,
                      'dropout_rate': 0.0},
      'classifier': classifier,
      'representation_size': representation_size,
  })
  if resnet is not None:
    config.resnet = resnet
  return config


def hybrid_config():
  """ResNet root + one stage (gn_root, gn1..3, gn_proj) + 2-block ViT."""
  return vit_config(layers=2, patch=2, resnet=ml_collections.ConfigDict(
      {'num_layers': (1,), 'width_factor': 0.5}))


def mixer_config():
  return ml_collections.ConfigDict({
      'model_name': 'small-mixer', 'patches': {'size': (16, 16)},
      'hidden_dim': 16, 'num_blocks': 2, 'tokens_mlp_dim': 8,
      'channels_mlp_dim': 32})


def flat(tree):
  return traverse_util.flatten_dict(tree, sep='/')


def assert_trees_equal(test, a, b):
  fa, fb = flat(a), flat(b)
  test.assertSameElements(fa, fb)
  for key in fa:
    np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)


def logits(model, params_list, height):
  """Logits of a fixed batch of 2 images in [-1, 1], one jit for all params."""
  x = np.random.default_rng(7).uniform(-1, 1, (2, height, height, 3))
  apply = jax.jit(lambda p: model.apply({'params': p}, x.astype(np.float32),
                                        train=False))
  return [np.asarray(apply(p)) for p in params_list]


class TmpDirTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    # Not self.create_tempdir(): that needs absl flags, unparsed in pytest.
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.dir = tmp.name

  def path(self, name):
    return os.path.join(self.dir, name)

  def write_flat(self, name, arrays):
    """Writes arrays exactly as given (np.savez, uncompressed)."""
    path = self.path(name)
    with open(path, 'wb') as f:
      np.savez(f, **arrays)
    return path


class SaveLoadTest(TmpDirTest):

  def setUp(self):
    super().setUp()
    self.model = models.build_model(vit_config(), num_classes=5)
    self.params = random_params(self.model, 32)

  def test_round_trip_is_bit_exact(self):
    path = self.path('vit.npz')
    checkpoint.save(self.params, path)
    assert_trees_equal(self, checkpoint.load(path), self.params)

  def test_file_uses_the_official_layout(self):
    path = self.path('vit.npz')
    checkpoint.save(self.params, path)
    with zipfile.ZipFile(path) as z:
      self.assertTrue(all(i.compress_type == zipfile.ZIP_STORED
                          for i in z.infolist()))
    arrays = np.load(path)
    block = 'Transformer/encoderblock_11/'
    for name in ('LayerNorm_0/scale', 'MultiHeadDotProductAttention_1/out/'
                 'kernel', 'LayerNorm_2/bias', 'MlpBlock_3/Dense_1/kernel'):
      self.assertIn(block + name, arrays.files)
    self.assertNotIn(block + 'MlpBlock_0/Dense_1/kernel', arrays.files)
    self.assertLen(arrays.files, 10 - 2 + 12 * 16)  # No pre_logits.
    self.assertTrue(all(arrays[k].dtype == np.float32 for k in arrays.files))

  def test_pre_linen_and_linen_files_give_identical_logits(self):
    pre_linen = self.path('pre_linen.npz')
    checkpoint.save(self.params, pre_linen)
    linen = self.write_flat('linen.npz', flat(self.params))
    self.assertIn('Transformer/encoderblock_3/MlpBlock_0/Dense_0/kernel',
                  np.load(linen).files)
    a, b = checkpoint.load(pre_linen), checkpoint.load(linen)
    # Natural order: with a lexicographic sort, block 10 would become 2.
    np.testing.assert_array_equal(
        a['Transformer']['encoderblock_10']['LayerNorm_1']['scale'],
        self.params['Transformer']['encoderblock_10']['LayerNorm_1']['scale'])
    assert_trees_equal(self, a, b)
    expected, from_a, from_b = logits(self.model, [self.params, a, b], 32)
    self.assertGreater(np.abs(expected).max(), 1e-3)
    np.testing.assert_array_equal(from_a, expected)
    np.testing.assert_array_equal(from_b, expected)

  def test_jax_arrays_are_saved(self):
    params = jax.tree.map(jnp.asarray, self.params)
    path = self.path('vit.npz')
    checkpoint.save(params, path)
    assert_trees_equal(self, checkpoint.load(path), self.params)

  def test_wrapper_prefix_is_stripped(self):
    arrays = {'opt/target/' + k: v
              for k, v in checkpoint.to_official_layout(self.params).items()}
    arrays['opt/state/step'] = np.zeros((), np.float32)
    path = self.write_flat('wrapped.npz', arrays)
    assert_trees_equal(self, checkpoint.load(path), self.params)

  def test_save_is_atomic(self):
    path = self.path('vit.npz')
    checkpoint.save(self.params, path)
    before = open(path, 'rb').read()
    bad = jax.tree.map(np.copy, self.params)
    bad['head']['bias'][1] = np.nan
    with self.assertRaisesRegex(CheckpointError, r"'head/bias'.*NaN"):
      checkpoint.save(bad, path)
    interrupted = jax.tree.map(np.copy, self.params)
    interrupted['cls'] = np.ones((1, 1, 16), np.float32)
    real_savez = np.savez

    def crash(f, **arrays):
      f.write(b'PK\x03\x04 half an archive')
      raise KeyboardInterrupt()

    np.savez = crash
    try:
      with self.assertRaises(KeyboardInterrupt):
        checkpoint.save(interrupted, path)
    finally:
      np.savez = real_savez
    self.assertEqual(open(path, 'rb').read(), before)
    self.assertEqual(os.listdir(self.dir), ['vit.npz'])

  def test_float64_and_float16_are_read_as_float32(self):
    arrays = checkpoint.to_official_layout(self.params)
    arrays['cls'] = arrays['cls'].astype(np.float64)
    arrays['embedding/bias'] = arrays['embedding/bias'].astype(np.float16)
    loaded = checkpoint.load(self.write_flat('mixed.npz', arrays))
    self.assertEqual(loaded['cls'].dtype, np.float32)
    np.testing.assert_array_equal(loaded['cls'], self.params['cls'])
    np.testing.assert_array_equal(
        loaded['embedding']['bias'],
        self.params['embedding']['bias'].astype(np.float16))


class FamiliesTest(TmpDirTest):

  def test_hybrid_groupnorm_is_stored_4d_and_loaded_1d(self):
    model = models.build_model(hybrid_config(), num_classes=3)
    params = random_params(model, 32)
    self.assertEqual(params['gn_root']['scale'].shape, (32,))
    path = self.path('hybrid.npz')
    checkpoint.save(params, path)
    arrays = np.load(path)
    for key in ('gn_root/scale', 'block1/unit1/gn_proj/bias',
                'block1/unit1/gn1/scale', 'block1/unit1/gn3/bias'):
      self.assertEqual(arrays[key].shape[:3], (1, 1, 1), key)
    self.assertEqual(arrays['block1/unit1/conv1/kernel'].shape,
                     (1, 1, 32, 32))
    loaded = checkpoint.load(path)
    assert_trees_equal(self, loaded, params)
    got, expected = logits(model, [loaded, params], 32)
    np.testing.assert_array_equal(got, expected)

  def test_gap_file_has_no_cls(self):
    model = models.build_model(vit_config(layers=2, classifier='gap'),
                               num_classes=3)
    params = random_params(model, 32)
    path = self.path('gap.npz')
    checkpoint.save(params, path)
    self.assertNotIn('cls', np.load(path).files)
    self.assertEqual(np.load(path)[POSEMB].shape, (1, 4, 16))
    assert_trees_equal(self, checkpoint.load(path), params)

  def test_mixer_keeps_linen_names(self):
    model = models.build_model(mixer_config(), num_classes=3)
    params = random_params(model, 32)
    path = self.path('mixer.npz')
    checkpoint.save(params, path)
    files = set(np.load(path).files)
    self.assertContainsSubset(
        {'stem/kernel', 'MixerBlock_1/LayerNorm_1/scale',
         'MixerBlock_0/token_mixing/Dense_0/kernel',
         'MixerBlock_1/channel_mixing/Dense_1/bias',
         'pre_head_layer_norm/bias'}, files)
    self.assertLen(files, 2 + 12 * 2 + 4)
    loaded = checkpoint.load(path)
    assert_trees_equal(self, loaded, params)
    got, expected = logits(model, [loaded, params], 32)
    np.testing.assert_array_equal(got, expected)


class InterpolatePosembTest(absltest.TestCase):
  """Spec §4.4: scipy.ndimage.zoom(order=1) = aligned-corners bilinear."""

  def resize(self, grid, out_shape, square=True):
    grid = np.asarray(grid, np.float32)
    cls = np.full((1, 1, 1), 42.0, np.float32)
    posemb = np.concatenate([cls, grid.reshape(1, -1, 1)], axis=1)
    out = checkpoint.interpolate_posembed(
        posemb, 1 + out_shape[0] * out_shape[1], True,
        grid_shape=None if square else out_shape)
    self.assertEqual(out.dtype, np.float32)
    self.assertEqual(out[0, 0, 0], 42.0)  # Class row passes through.
    return out[0, 1:, 0].reshape(out_shape)

  def test_2x2_to_3x3(self):
    np.testing.assert_array_equal(
        self.resize([[0, 1], [2, 3]], (3, 3)),
        np.float32([[0, .5, 1], [1, 1.5, 2], [2, 2.5, 3]]))

  def test_2x2_to_4x4(self):
    expected = np.float32([[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7],
                           [6, 7, 8, 9]]) / np.float32(3)
    np.testing.assert_allclose(
        self.resize([[0, 1], [2, 3]], (4, 4)), expected, rtol=0, atol=1e-6)

  def test_4x4_to_2x2_takes_the_corners(self):
    np.testing.assert_array_equal(
        self.resize(np.arange(16).reshape(4, 4), (2, 2)),
        np.float32([[0, 3], [12, 15]]))

  def test_non_square_target(self):
    np.testing.assert_allclose(
        self.resize([[0, 1], [2, 3]], (3, 4), square=False),
        np.float32([[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]) / 3,
        atol=1e-6)

  def test_matches_separable_aligned_corners_interpolation(self):
    grid = np.random.default_rng(0).normal(size=(7, 7)).astype(np.float32)
    out = self.resize(grid, (12, 9), square=False)
    rows = np.linspace(0, 6, 12)
    cols = np.linspace(0, 6, 9)
    tmp = np.stack([np.interp(rows, np.arange(7), grid[:, j])
                    for j in range(7)], axis=1)
    ref = np.stack([np.interp(cols, np.arange(7), r) for r in tmp])
    np.testing.assert_allclose(out, ref, atol=1e-5)

  def test_without_class_token_and_with_width(self):
    posemb = np.random.default_rng(0).normal(size=(1, 4, 3))
    out = checkpoint.interpolate_posembed(posemb, 9, False)
    self.assertEqual(out.shape, (1, 9, 3))
    np.testing.assert_allclose(out[0, 4], posemb[0].mean(0), atol=1e-6)

  def test_bad_targets(self):
    posemb = np.zeros((1, 5, 3), np.float32)
    with self.assertRaisesRegex(ValueError, 'grid_shape'):
      checkpoint.interpolate_posembed(posemb, 7, True)
    with self.assertRaisesRegex(ValueError, r'does not give 7 tokens'):
      checkpoint.interpolate_posembed(posemb, 7, True, grid_shape=(3, 3))

  def test_no_grid_rows(self):
    # A class row only: a checkpoint saved from an image smaller than a patch.
    with self.assertRaisesRegex(ValueError, 'no grid rows'):
      checkpoint.interpolate_posembed(np.zeros((1, 1, 3)), 5, True)


class LoadPretrainedTest(TmpDirTest):

  def setUp(self):
    super().setUp()
    # Upstream: 32 px (2x2 grid), pre_logits of size 16, 7 classes.
    self.file_params = random_params(models.build_model(
        vit_config(layers=2, representation_size=16), num_classes=7), 32)
    self.file = self.path('upstream.npz')
    checkpoint.save(self.file_params, self.file)

  def finetune(self, size=(48, 48), **config_overrides):
    config = vit_config(layers=2, **config_overrides)
    model = models.build_model(config, num_classes=3)
    # jax arrays, as a training loop passes them (eval_shape + random values
    # instead of model.init: much faster on a busy CPU).
    init = random_params(model, *size, seed=1)
    return config, jax.tree.map(jnp.asarray, init)

  def test_head_reset_pre_logits_dropped_posemb_resized(self):
    config, init = self.finetune()
    with self.assertLogs('absl', level='INFO') as logs:
      params = checkpoint.load_pretrained(
          pretrained_path=self.file, init_params=init, model_config=config)
    self.assertIn('drop-head variant', '\n'.join(logs.output))
    self.assertEqual(jax.tree.map(np.shape, params),
                     jax.tree.map(np.shape, init))
    self.assertNotIn('pre_logits', params)
    np.testing.assert_array_equal(params['head']['kernel'],
                                  init['head']['kernel'])
    old, new = (flat(t)[POSEMB] for t in (self.file_params, params))
    np.testing.assert_array_equal(new[:, 0], old[:, 0])
    np.testing.assert_array_equal(
        new, checkpoint.interpolate_posembed(old, 10, True))
    self.assertFalse(np.allclose(new[0, 1:].mean(0), 0))
    np.testing.assert_array_equal(
        params['Transformer']['encoderblock_1']['MlpBlock_0']['Dense_0'][
            'kernel'],
        self.file_params['Transformer']['encoderblock_1']['MlpBlock_0'][
            'Dense_0']['kernel'])
    self.assertIsInstance(params['cls'], np.ndarray)

  def test_pre_logits_kept_when_representation_size_matches(self):
    config, init = self.finetune(size=(32, 32), representation_size=16)
    params = checkpoint.load_pretrained(
        pretrained_path=self.file, init_params=init, model_config=config)
    assert_trees_equal(self, params['pre_logits'],
                       self.file_params['pre_logits'])
    np.testing.assert_array_equal(flat(params)[POSEMB],
                                  flat(self.file_params)[POSEMB])

  def test_non_square_grid(self):
    config, init = self.finetune(size=(48, 32))
    with self.assertRaisesRegex(
        CheckpointError, r'upstream\.npz.*position embedding.*grid_shape'):
      checkpoint.load_pretrained(
          pretrained_path=self.file, init_params=init, model_config=config)
    params = checkpoint.load_pretrained(
        pretrained_path=self.file, init_params=init, model_config=config,
        grid_shape=(3, 2))
    np.testing.assert_array_equal(
        flat(params)[POSEMB],
        checkpoint.interpolate_posembed(flat(self.file_params)[POSEMB], 7,
                                        True, grid_shape=(3, 2)))

  def test_gap_resize_has_no_class_row(self):
    upstream = random_params(models.build_model(
        vit_config(layers=1, classifier='gap'), num_classes=2), 32)
    grid = np.float32([0, 1, 2, 3])
    upstream['Transformer']['posembed_input']['pos_embedding'][0, :, 0] = grid
    path = self.path('gap.npz')
    checkpoint.save(upstream, path)
    config = vit_config(layers=1, classifier='gap')
    init = random_params(models.build_model(config, num_classes=3), 48)
    params = checkpoint.load_pretrained(
        pretrained_path=path, init_params=init, model_config=config)
    np.testing.assert_array_equal(
        flat(params)[POSEMB][0, :, 0],
        np.float32([0, .5, 1, 1, 1.5, 2, 2, 2.5, 3]))

  def test_token_unpooled_resize_keeps_the_class_row(self):
    # 'token_unpooled' has a class row like 'token': it must stay row 0 and
    # only the 2x2 grid behind it is resized (values worked out by hand:
    # aligned-corners linear 2x2 -> 3x3).
    config = vit_config(layers=1, classifier='token_unpooled')
    upstream = random_params(models.build_model(config, num_classes=None), 32)
    upstream['Transformer']['posembed_input']['pos_embedding'][0, :, 0] = [
        7, 0, 1, 2, 3]
    path = self.path('unpooled.npz')
    checkpoint.save(upstream, path)
    init = random_params(models.build_model(config, num_classes=None), 48)
    params = checkpoint.load_pretrained(
        pretrained_path=path, init_params=init, model_config=config)
    np.testing.assert_array_equal(
        flat(params)[POSEMB][0, :, 0],
        np.float32([7, 0, .5, 1, 1, 1.5, 2, 2, 2.5, 3]))

  def test_hybrid_groupnorm_fits_the_model(self):
    model = models.build_model(hybrid_config(), num_classes=5)
    path = self.path('hybrid.npz')
    checkpoint.save(random_params(model, 32), path)
    init = random_params(model, 32, seed=1)
    params = checkpoint.load_pretrained(
        pretrained_path=path, init_params=init, model_config=hybrid_config())
    self.assertEqual(jax.tree.map(np.shape, params),
                     jax.tree.map(np.shape, init))

  def test_checkpoint_of_another_model(self):
    config, init = self.finetune(size=(32, 32), hidden=24)
    with self.assertRaises(CheckpointError) as e:
      checkpoint.load_pretrained(
          pretrained_path=self.file, init_params=init, model_config=config)
    message = str(e.exception)
    self.assertIn('upstream.npz does not match the model', message)
    self.assertIn('38 shape mismatches: cls: file shape (1, 1, 16) vs model '
                  'shape (1, 1, 24), embedding/bias: file shape (16,)',
                  message)
    self.assertIn('... and', message)  # Long lists are truncated.


class InspectParamsTest(absltest.TestCase):

  def test_reports_missing_extra_and_shapes(self):
    params = {'a': {'w': np.zeros((2, 3))}, 'b': np.zeros(4),
              'extra': np.zeros(1)}
    expected = {'a': {'w': jax.ShapeDtypeStruct((3, 2), jnp.float32)},
                'b': np.zeros(4), 'c': np.zeros(1)}
    with self.assertRaises(CheckpointError) as e:
      checkpoint.inspect_params(params=params, expected=expected,
                                source='Checkpoint x.npz')
    message = str(e.exception)
    self.assertIn('Checkpoint x.npz does not match the model', message)
    self.assertIn('1 missing keys: c', message)
    self.assertIn('1 unexpected keys: extra', message)
    self.assertIn('a/w: file shape (2, 3) vs model shape (3, 2)', message)

  def test_lenient_modes(self):
    params = {'b': np.ones(4), 'extra': np.zeros(1)}
    expected = {'b': np.zeros(4), 'c': np.zeros(1)}
    out = checkpoint.inspect_params(params=params, expected=expected,
                                    fail_if_extra=False,
                                    fail_if_missing=False)
    self.assertEqual(list(out), ['b'])
    np.testing.assert_array_equal(out['b'], np.ones(4))

  def test_truncates_long_lists(self):
    expected = {f'k{i}': np.zeros(1) for i in range(25)}
    with self.assertRaisesRegex(CheckpointError,
                                r'25 missing keys: k0, k1, .*k9, \.\.\. '
                                r'and 15 more'):
      checkpoint.inspect_params(params={}, expected=expected)


class ErrorsTest(TmpDirTest):

  def setUp(self):
    super().setUp()
    model = models.build_model(vit_config(layers=1), num_classes=2)
    self.arrays = checkpoint.to_official_layout(random_params(model, 32))
    self.good = self.write_flat('good.npz', self.arrays)

  def assert_error(self, path, *fragments):
    with self.assertRaises(CheckpointError) as e:
      checkpoint.load(path)
    message = str(e.exception)
    self.assertIn(os.path.basename(path), message)
    for fragment in fragments:
      self.assertIn(fragment, message)
    self.assertNotIn('\n', message)

  def test_missing_file_says_how_to_get_it(self):
    path = self.path('ViT-B_16.npz')
    self.assert_error(
        path, 'does not exist',
        f'python -m vit_jax.checkpoint download ViT-B_16 --dir={self.dir}',
        'https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz')

  def test_check_exists(self):
    checkpoint.check_exists(self.good)
    with self.assertRaisesRegex(
        CheckpointError, r'my-run\.npz does not exist\. Download it with '
        r'`python -m vit_jax\.checkpoint download ViT-L_16 --dir='):
      checkpoint.check_exists(self.path('my-run.npz'), model_name='ViT-L_16')
    with self.assertRaisesRegex(CheckpointError, 'checkpoints/README.md'):
      checkpoint.check_exists(self.path('my-run.npz'))

  def test_missing_fine_tuned_file_has_the_escaped_address(self):
    path = os.path.join(self.dir, 'imagenet21k+imagenet2012',
                        'R50+ViT-B_16.npz')
    self.assert_error(
        path, '--dataset=imagenet21k+imagenet2012',
        'vit_models/imagenet21k%2Bimagenet2012/R50%2BViT-B_16.npz')

  def test_truncated(self):
    data = open(self.good, 'rb').read()
    path = self.path('truncated.npz')
    with open(path, 'wb') as f:
      f.write(data[:len(data) // 2])
    self.assert_error(path, 'truncated or corrupt', 'download it again')

  def test_corrupt_bytes(self):
    data = bytearray(open(self.good, 'rb').read())
    with zipfile.ZipFile(self.good) as z:
      info = z.getinfo('head/kernel.npy')
    # Flip a byte inside the stored array data: the CRC check catches it.
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
    path = self.path('corrupt.npz')
    with open(path, 'wb') as f:
      f.write(bytes(data))
    self.assert_error(path, 'truncated or corrupt')

  def test_pickled_object_array(self):
    path = self.write_flat('pickled.npz', {
        **self.arrays, 'cls': np.array([{'x': 1}], dtype=object)})
    self.assert_error(path, "'cls'", 'pickled (object) array')

  def test_not_an_npz(self):
    path = self.path('page.npz')
    with open(path, 'w') as f:
      f.write('<html>Not found</html>')
    self.assert_error(path, 'is not an .npz checkpoint')
    npy = self.path('single.npy')
    np.save(npy, np.zeros(3, np.float32))
    self.assert_error(npy, 'single .npy array')

  def test_nan_and_inf(self):
    self.arrays['embedding/bias'][:2] = [np.nan, np.inf]
    path = self.write_flat('nan.npz', self.arrays)
    self.assert_error(path, "'embedding/bias'", '2 NaN or Inf values')

  def test_wrong_dtype(self):
    self.arrays['cls'] = self.arrays['cls'].astype(np.int32)
    path = self.write_flat('int.npz', self.arrays)
    self.assert_error(path, "'cls'", 'dtype int32')

  def test_empty_archive(self):
    self.assert_error(self.write_flat('empty.npz', {}), 'empty .npz')


class SizeTest(absltest.TestCase):

  def test_full_size_vit_b16_i21k_file_size(self):
    """The layout gives the official 412,815,506 bytes (spec §1.1).

    Zero arrays are broadcast views (no memory) and the archive goes to a
    sink that only counts bytes, so nothing large is allocated or written.
    """
    model = models.get_model('ViT-B_16', num_classes=21843,
                             representation_size=768)
    shapes = jax.eval_shape(
        lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
        jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))['params']
    zeros = jax.tree.map(lambda s: np.broadcast_to(np.float32(0), s.shape),
                         shapes)
    arrays = checkpoint.to_official_layout(zeros)
    self.assertLen(arrays, 202)
    self.assertEqual(sum(a.size for a in arrays.values()), 103_186_515)

    class CountingSink(io.RawIOBase):
      """A seekable file that keeps only its length."""
      pos = end = 0

      def writable(self):
        return True

      def seekable(self):
        return True

      def write(self, b):
        self.pos += memoryview(b).nbytes
        self.end = max(self.end, self.pos)
        return memoryview(b).nbytes

      def tell(self):
        return self.pos

      def seek(self, offset, whence=0):
        self.pos = (0, self.pos, self.end)[whence] + offset
        return self.pos

    sink = CountingSink()
    np.savez(sink, **arrays)
    self.assertEqual(sink.end, 412_815_506)


if __name__ == '__main__':
  absltest.main()
