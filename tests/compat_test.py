"""The original release's public surface, called the original's way.

Each test uses a name of google-research/vision_transformer's vit_jax
modules with the original's argument names and positions, and checks what
it returns (see README, "Differences from the original release", for what
differs by design).
"""

import glob
import importlib
import inspect
import io
import math
import os

from absl.testing import absltest
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from vit_jax import checkpoint
from vit_jax import inference_time
from vit_jax import input_pipeline
from vit_jax import models
from vit_jax import models_resnet
from vit_jax import test_utils
from vit_jax import train
from vit_jax import utils
from vit_jax.configs import common
from vit_jax.configs import inference_time as inference_time_config
from vit_jax.configs import mixer_base16_cifar10
from vit_jax.configs import models as config_lib

# Every public name of the original's vit_jax modules (LiT excepted):
# (name, positional argument names, keyword-only argument names) for
# functions, None for classes and constants.
ORIGINAL_SURFACE = {
    'models': (
        ('AddPositionEmbs', None, None), ('MlpBlock', None, None),
        ('Encoder1DBlock', None, None), ('Encoder', None, None),
        ('MlpMixer', None, None), ('VisionTransformer', None, None),
        ('get_model', ('name',), ()),
    ),
    'models_vit': (
        ('IdentityLayer', None, None), ('AddPositionEmbs', None, None),
        ('MlpBlock', None, None), ('Encoder1DBlock', None, None),
        ('Encoder', None, None), ('VisionTransformer', None, None),
    ),
    'models_resnet': (
        ('weight_standardize', ('w', 'axis', 'eps'), ()),
        ('StdConv', None, None), ('ResidualUnit', None, None),
        ('ResNetStage', None, None),
    ),
    'models_mixer': (
        ('MlpBlock', None, None), ('MixerBlock', None, None),
        ('MlpMixer', None, None),
    ),
    'checkpoint': (
        ('inspect_params', (),
         ('params', 'expected', 'fail_if_extra', 'fail_if_missing')),
        ('recover_tree', ('keys', 'values'), ()),
        ('copy', ('src', 'dst', 'progress', 'block_size'), ()),
        ('load', ('path',), ()),
        ('load_pretrained', (),
         ('pretrained_path', 'init_params', 'model_config')),
        ('interpolate_posembed',
         ('posemb', 'num_tokens', 'has_class_token'), ()),
        ('get_augreg_df', ('directory',), ()),
    ),
    'input_pipeline': (
        ('MAX_IN_MEMORY', None, None),
        ('get_tfds_info', ('dataset', 'split'), ()),
        ('get_directory_info', ('directory',), ()),
        ('get_dataset_info', ('dataset', 'split'), ()),
        ('get_datasets', ('config',), ()),
        ('get_data_from_directory', (), ('config', 'directory', 'mode')),
        ('get_data_from_tfds', (), ('config', 'mode')),
        ('get_data', (), ('data', 'mode', 'num_classes', 'image_decoder',
                          'repeats', 'batch_size', 'image_size',
                          'shuffle_buffer', 'preprocess')),
        ('prefetch', ('dataset', 'n_prefetch'), ()),
    ),
    'train': (
        ('make_update_fn', (), ('apply_fn', 'accum_steps', 'tx')),
        ('train_and_evaluate', ('config', 'workdir'), ()),
    ),
    'utils': (
        ('GFileHandler', None, None),
        ('add_gfile_logger', ('workdir',), ('basename', 'level')),
        ('create_learning_rate_schedule',
         ('total_steps', 'base', 'decay_type', 'warmup_steps', 'linear_end'),
         ()),
        ('accumulate_gradient',
         ('loss_and_grad_fn', 'params', 'images', 'labels', 'accum_steps'),
         ()),
    ),
    'inference_time': (('inference_time', ('config', 'workdir'), ()),),
    'configs.common': (
        ('get_config', (), ()), ('DATASET_PRESETS', None, None),
        ('with_dataset', ('config', 'dataset'), ()),
        ('flatten', ('config', 'prefix'), ()),
    ),
    'configs.models': tuple(
        (f'get_{n}_config', (), ()) for n in (
            'testing', 'testing_unpooled', 'ti16', 's16', 'b16', 'l16', 'h14',
            's16_gap_norep', 'b16_gap_norep', 'b8', 's32', 'b32', 'l32',
            's32_gap_norep', 'b32_gap_norep', 'r_ti16', 'r50_b16', 'r26_b32',
            'r26_s32', 'r50_l32', 'mixer_b16', 'mixer_b32', 'mixer_l16')
    ) + (('MODEL_CONFIGS', None, None), ('AUGREG_CONFIGS', None, None)),
    'configs.vit': (('get_config', ('model_dataset',), ()),),
    'configs.augreg': (('get_config', ('model_or_filename',), ()),),
    'configs.inference_time': (('get_config', (), ()),),
    'configs.mixer_base16_cifar10': (('get_config', (), ()),),
}


class SurfaceTest(absltest.TestCase):

  def test_every_original_name_and_argument(self):
    for module_name, names in ORIGINAL_SURFACE.items():
      module = importlib.import_module(f'vit_jax.{module_name}')
      for name, positional, keyword_only in names:
        where = f'vit_jax.{module_name}.{name}'
        self.assertTrue(hasattr(module, name), where)
        if positional is None:
          continue
        params = inspect.signature(getattr(module, name)).parameters
        ordered = [p for p, v in params.items() if v.kind in (
            v.POSITIONAL_ONLY, v.POSITIONAL_OR_KEYWORD)]
        self.assertEqual(tuple(ordered[:len(positional)]), positional, where)
        self.assertContainsSubset(keyword_only, params, where)
        # Arguments added here have defaults: the original's calls work.
        for p in list(params)[len(positional) + len(keyword_only):]:
          if params[p].kind not in (params[p].VAR_KEYWORD,
                                    params[p].VAR_POSITIONAL):
            self.assertIsNot(params[p].default, params[p].empty,
                             f'{where}({p})')



def _jpg(color) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.full((4, 4, 3), color, np.uint8)).save(buf, 'JPEG')
  return buf.getvalue()


def _original_config(workdir: str, dataset: str, crop: int = 32):
  """What the original's train_test builds: common defaults, the testing
  model, a replaced `pp`, one step (below the default 500 warmup steps)."""
  config = common.get_config()
  config.model = config_lib.get_testing_config()
  config.batch = 8
  config.accum_steps = 2
  config.batch_eval = 8
  config.total_steps = 1
  config.dataset = dataset
  config.pp = ml_collections.ConfigDict(
      {'train': 'train[:98%]', 'test': 'test', 'crop': crop})
  config.pretrained_dir = workdir
  test_utils.create_checkpoint(config.model, f'{workdir}/testing.npz')
  return config


@pytest.mark.slow  # Two whole training runs (~12 s each on 2 cores).
class TrainAndEvaluateTest(absltest.TestCase):

  def test_directory_dataset(self):
    workdir = self.create_tempdir().full_path
    root = os.path.join(workdir, 'dataset')
    for mode in ('train', 'test'):
      for c, name in enumerate(('test1', 'test2')):
        os.makedirs(os.path.join(root, mode, name))
        for i in range(8):
          with open(os.path.join(root, mode, name, f'{i}.jpg'), 'wb') as f:
            f.write(_jpg(255 * c))
    config = _original_config(workdir, root)
    config.pp = ml_collections.ConfigDict({'crop': 32})  # As the original.
    with self.assertLogs(level='WARNING') as logs:
      params = train.train_and_evaluate(config, workdir)
    self.assertTrue(any('warmup_steps=500 >= total_steps=1' in line
                        for line in logs.output))
    self.assertTrue(os.path.isdir(f'{workdir}/checkpoint_1'))
    # The trained params are returned, in the model's tree.
    self.assertEqual(params['head']['kernel'].shape, (10, 2))
    self.assertEqual(
        jax.tree.structure(jax.tree.map(np.shape, params)),
        jax.tree.structure(jax.tree.map(np.shape, checkpoint.load(
            f'{workdir}/model.npz'))))

  def test_tfds_dataset_and_tensorboard_tags(self):
    workdir = self.create_tempdir().full_path
    config = _original_config(workdir, 'cifar10')
    config.eval_every = config.progress_every = 1
    with tfds.testing.mock_data(num_examples=16):
      train.train_and_evaluate(config, workdir)
    self.assertTrue(os.path.isdir(f'{workdir}/checkpoint_1'))
    tags = set()
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    for path in glob.glob(f'{workdir}/events.out.tfevents.*'):
      for event in tf.compat.v1.train.summary_iterator(path):
        tags.update(v.tag for v in event.summary.value)
    self.assertContainsSubset(
        {'train_loss', 'img_sec_core_train', 'accuracy_test', 'lr',
         'img_sec_core_test'}, tags)


class CheckpointTest(absltest.TestCase):

  def test_load_pretrained_resizes_and_replaces_head(self):
    path = os.path.join(self.create_tempdir().full_path, 'testing.npz')
    model_config = config_lib.get_testing_config()
    test_utils.create_checkpoint(model_config, path)
    model = models.VisionTransformer(num_classes=2, **model_config)
    variables = model.init(jax.random.PRNGKey(0),
                           inputs=jnp.ones([1, 32, 32, 3], jnp.float32),
                           train=False)
    params = checkpoint.load_pretrained(
        pretrained_path=path, init_params=variables['params'],
        model_config=model_config)
    self.assertEqual(params['Transformer']['posembed_input']['pos_embedding']
                     .shape, (1, 5, 10))  # Class token + 2x2 grid.
    self.assertEqual(params['head']['kernel'].shape, (10, 2))

  def test_recover_tree_and_copy(self):
    tree = checkpoint.recover_tree(['a/b', 'a/c', 'd'], [1, 2, 3])
    self.assertEqual(tree, {'a': {'b': 1, 'c': 2}, 'd': 3})
    src = os.path.join(self.create_tempdir().full_path, 'src.bin')
    data = os.urandom(3000)
    with open(src, 'wb') as f:
      f.write(data)
    dst = src + '.copy'
    checkpoint.copy(src, dst, False, 1024)
    with open(dst, 'rb') as f:
      self.assertEqual(f.read(), data)

  def test_get_augreg_df_reads_the_index(self):
    directory = self.create_tempdir().full_path
    with open(os.path.join(directory, 'index.csv'), 'w') as f:
      f.write('name,ds,final_val,filename\n'
              'B/16,i21k,0.5,B_16-i21k-a\nB/16,i1k,0.7,B_16-i1k-b\n')
    df = checkpoint.get_augreg_df(directory=directory)
    self.assertEqual(list(df.filename), ['B_16-i21k-a', 'B_16-i1k-b'])
    self.assertEqual(df.query('ds=="i21k"').final_val.item(), 0.5)

  def test_inspect_params_original_flags(self):
    expected = {'a': {'b': np.zeros(2)}, 'c': np.zeros(1)}
    got = checkpoint.inspect_params(
        params={'a': {'b': np.ones(2)}, 'x': np.ones(3)}, expected=expected,
        fail_if_extra=False, fail_if_missing=False)
    self.assertEqual(set(got), {'a'})


class UtilsTest(absltest.TestCase):

  def test_positional_schedule_and_optax_count(self):
    lr_fn = utils.create_learning_rate_schedule(10, 0.1, 'cosine', 2)
    # The original hands lr_fn to optax: update k (0-based) uses lr_fn(k).
    tx = optax.sgd(learning_rate=lr_fn)
    params = {'w': jnp.zeros(())}
    state = tx.init(params)
    applied = []
    for _ in range(4):
      updates, state = tx.update({'w': jnp.ones(())}, state, params)
      applied.append(-float(updates['w']))
    want = [0.1 * min(1, k / 2) * 0.5 * (1 + math.cos(
        math.pi * min(max((k - 2) / 8, 0), 1))) for k in range(4)]
    np.testing.assert_allclose(applied, want, rtol=1e-6)
    np.testing.assert_allclose(applied[:3], [0.0, 0.05, 0.1], rtol=1e-6)

  def test_accumulate_gradient_contiguous_blocks(self):
    images = jnp.arange(8.0).reshape(8, 1)
    labels = jnp.zeros((8, 1))
    seen = []

    def loss_and_grad(params, x, y):
      del y
      seen.append(x.shape)
      # Max over the micro-batch: depends on which rows it holds.
      return jnp.max(x) * params, jnp.max(x)

    loss, grad = utils.accumulate_gradient(loss_and_grad, jnp.float32(1.0),
                                           images, labels, 2)
    # Contiguous halves [0..3], [4..7]: maxima 3 and 7 -> mean 5.
    self.assertAlmostEqual(float(loss), 5.0)
    self.assertAlmostEqual(float(grad), 5.0)
    self.assertEqual(seen[0], (4, 1))

  def test_gfile_logger_writes_train_log(self):
    workdir = self.create_tempdir().full_path
    handler = utils.add_gfile_logger(workdir)
    try:
      from absl import logging  # pylint: disable=g-import-not-at-top
      logging.warning('hello from the compat test')
    finally:
      import logging as python_logging  # pylint: disable=g-import-not-at-top
      python_logging.getLogger('').removeHandler(handler)
      handler.close()
    with open(os.path.join(workdir, 'train.log')) as f:
      self.assertIn('hello from the compat test', f.read())


class MakeUpdateFnTest(absltest.TestCase):

  def test_update_decreases_loss(self):
    model = models.get_model('testing', num_classes=3)
    x = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (4, 32, 32, 3)),
                    jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x, train=False)['params']
    tx = optax.sgd(0.1)
    update_fn = train.make_update_fn(apply_fn=model.apply, accum_steps=2,
                                     tx=tx)
    # The original's pmap layout: a leading local-device axis everywhere.
    devices = jax.local_device_count()
    batch = {'image': jnp.stack([x] * devices),
             'label': jnp.stack([jax.nn.one_hot(jnp.arange(4) % 3, 3)]
                                * devices)}
    params = flax.jax_utils.replicate(params)
    opt_state = flax.jax_utils.replicate(
        tx.init(flax.jax_utils.unreplicate(params)))
    rng = jax.random.split(jax.random.PRNGKey(1), devices)
    losses = []
    for _ in range(3):
      params, opt_state, loss, rng = update_fn(params, opt_state, batch, rng)
      self.assertEqual(loss.shape, (devices,))  # One (equal) loss per device.
      losses.append(float(loss[0]))
    self.assertAlmostEqual(losses[0], math.log(3), places=5)  # Zero head.
    self.assertLess(losses[-1], losses[0])


class InputPipelineTest(absltest.TestCase):

  def test_original_functions_on_a_folder(self):
    root = self.create_tempdir().full_path
    for c, name in enumerate(('a', 'b')):
      os.makedirs(os.path.join(root, 'train', name))
      for i in range(3):
        with open(os.path.join(root, 'train', name, f'{i}.jpg'), 'wb') as f:
          f.write(_jpg(255 * c))
    info = input_pipeline.get_dataset_info(root, 'train')
    self.assertEqual((info['num_examples'], info['num_classes']), (6, 2))
    self.assertEqual(info['int2str'](1), 'b')
    config = ml_collections.ConfigDict({
        'batch': 4, 'batch_eval': 2, 'shuffle_buffer': 10,
        'pp': {'crop': 8}})
    ds = input_pipeline.get_data_from_directory(
        config=config, directory=os.path.join(root, 'train'), mode='test')
    batches = list(input_pipeline.prefetch(ds, 1))
    self.assertLen(batches, 3)
    for batch in batches:
      self.assertEqual(batch['image'].shape, (1, 2, 8, 8, 3))
      # One-hot labels that match the image colour (black a, white b).
      labels = np.argmax(batch['label'][0], -1)
      white = np.asarray(batch['image'][0]).mean(axis=(1, 2, 3)) > 0
      np.testing.assert_array_equal(labels, white.astype(int))

  def test_original_functions_on_tfds(self):
    with tfds.testing.mock_data(num_examples=6):
      info = input_pipeline.get_dataset_info('cifar10', 'train')
      self.assertEqual(info['num_classes'], 10)
      self.assertIsInstance(info['int2str'](3), str)
      self.assertIsNone(info['examples_glob'])
      config = common.with_dataset(common.get_config(), 'cifar10')
      config.batch, config.shuffle_buffer, config.pp.crop = 4, 8, 16
      ds = input_pipeline.get_data_from_tfds(config=config, mode='train')
      batch = next(input_pipeline.prefetch(ds, 2))
    self.assertEqual(batch['image'].shape, (1, 4, 16, 16, 3))
    self.assertEqual(batch['label'].shape, (1, 4, 10))
    np.testing.assert_array_equal(np.asarray(batch['label']).sum(-1), 1)
    self.assertBetween(float(np.min(batch['image'])), -1.0, 1.0)
    self.assertBetween(float(np.max(batch['image'])), -1.0, 1.0)

  def test_get_datasets_is_a_pair(self):
    with tfds.testing.mock_data(num_examples=8):
      config = common.with_dataset(common.get_config(), 'cifar10')
      config.model = config_lib.get_testing_config()
      config.batch = config.batch_eval = 4
      config.pp.crop = 16
      ds_train, ds_test = input_pipeline.get_datasets(config)
      self.assertIsNotNone(ds_train)
      self.assertIsNotNone(ds_test)


class ModelsTest(absltest.TestCase):

  def test_module_fields_of_the_original(self):
    self.assertIs(models.VisionTransformer.encoder, models.Encoder)
    for name in ('AddPositionEmbs', 'MlpBlock', 'Encoder1DBlock', 'Encoder'):
      self.assertTrue(hasattr(models, name), name)
    self.assertIn('nout', inspect.signature(models_resnet.ResNetStage).parameters)
    self.assertTrue(issubclass(models_resnet.StdConv, nn.Conv))

  def test_mlp_block_out_dim(self):
    block = models.MlpBlock(mlp_dim=8, out_dim=3, dropout_rate=0.0)
    y, _ = block.init_with_output(jax.random.PRNGKey(0), jnp.ones((2, 5)),
                                  deterministic=True)
    self.assertEqual(y.shape, (2, 3))

  def test_std_conv_accepts_conv_fields_and_standardises(self):
    conv = models_resnet.StdConv(features=4, kernel_size=(3, 3),
                                 use_bias=False)
    x = jnp.asarray(np.random.RandomState(0).randn(1, 5, 5, 2), jnp.float32)
    y, variables = conv.init_with_output(jax.random.PRNGKey(0), x)
    kernel = variables['params']['kernel']
    self.assertNotIn('bias', variables['params'])
    # Standardise in float64 numpy and convolve with lax: the same output.
    k = np.asarray(kernel, np.float64)
    k = (k - k.mean((0, 1, 2))) / (k.std((0, 1, 2)) + 1e-5)
    want = jax.lax.conv_general_dilated(
        x, jnp.asarray(k, jnp.float32), (1, 1), 'SAME',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    np.testing.assert_allclose(y, want, atol=1e-5)

  def test_custom_encoder_class(self):

    class ZeroEncoder(nn.Module):
      num_layers: int
      mlp_dim: int
      num_heads: int
      dropout_rate: float = 0.1
      attention_dropout_rate: float = 0.1

      @nn.compact
      def __call__(self, x, *, train):
        del train
        return jnp.zeros_like(x)

    model = models.VisionTransformer(
        num_classes=3, encoder=ZeroEncoder, **config_lib.get_testing_config())
    variables = model.init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)),
                           train=False)
    self.assertNotIn('Transformer', variables['params'])
    variables = flax.core.unfreeze(variables)
    variables['params']['head']['bias'] = jnp.arange(3.0)
    out = model.apply(variables, jnp.ones((1, 32, 32, 3)), train=False)
    np.testing.assert_allclose(out, [[0.0, 1.0, 2.0]])


class ConfigsTest(absltest.TestCase):

  def test_flatten(self):
    flat = dict(common.flatten(
        ml_collections.ConfigDict({'a': 1, 'b': {'c': 2}})))
    self.assertEqual(flat, {'config.a': 1, 'config.b.c': 2})

  def test_presets_layout(self):
    self.assertEqual(common.DATASET_PRESETS['cifar10'].pp.crop, 384)
    self.assertEqual(common.DATASET_PRESETS['imagenet2012'].total_steps,
                     20_000)
    config = common.with_dataset(common.get_config(), 'cifar100')
    self.assertEqual((config.total_steps, config.pp.train),
                     (10_000, 'train[:98%]'))

  def test_mixer_config(self):
    config = mixer_base16_cifar10.get_config()
    self.assertEqual(config.model.model_name, 'Mixer-B_16')
    self.assertEqual(config.pp.crop, 224)


class InferenceTimeTest(absltest.TestCase):

  def test_original_config_writes_events(self):
    config = inference_time_config.get_config()
    config.num_classes = 10
    config.image_size = 32
    config.batch = 4
    config.model_name = 'testing'
    config.steps = config.initial_steps = 2
    workdir = self.create_tempdir().full_path
    records = inference_time.inference_time(config, workdir)
    self.assertNotEmpty(glob.glob(f'{workdir}/events.out.tfevents.*'))
    self.assertGreater(records[0]['img_per_sec'], 0)


if __name__ == '__main__':
  absltest.main()
