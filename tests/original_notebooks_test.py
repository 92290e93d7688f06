"""The code paths of the original release's two Colab notebooks, offline.

`vit_jax.ipynb` fine-tunes with the original's pmap API (get_data_from_tfds,
flax.jax_utils.replicate, jax.pmap, train.make_update_fn) and predicts with
an ImageNet checkpoint; `vit_jax_augreg.ipynb` loads an AugReg checkpoint,
runs inference, and fine-tunes with `train.train_and_evaluate` on tfds
(sliced splits, accum_steps=0) and on an image folder. Each test does what
those cells do, with tfds.testing.mock_data for the datasets, synthetic
official-layout checkpoints and tiny sizes, so that a change breaking the
notebooks fails here (README, "Notebooks").
"""

import glob
import os
import random
import shutil

from absl.testing import absltest
import flax
import jax
import numpy as np
import optax
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vit_jax import checkpoint
from vit_jax import input_pipeline
from vit_jax import models
from vit_jax import test_utils
from vit_jax import train
from vit_jax import utils
from vit_jax.configs import augreg as augreg_config
from vit_jax.configs import common as common_config
from vit_jax.configs import models as models_config

CROP = 32


def _finetune_pmap(model, params, ds_train, lr_fn, steps: int):
  """The notebook's fine-tuning loop: returns (params_repl, losses)."""
  tx = optax.chain(
      optax.clip_by_global_norm(1),
      optax.sgd(learning_rate=lr_fn, momentum=0.9,
                accumulator_dtype='bfloat16'))
  update_fn_repl = train.make_update_fn(apply_fn=model.apply, accum_steps=2,
                                        tx=tx)
  params_repl = flax.jax_utils.replicate(params)
  opt_state_repl = flax.jax_utils.replicate(tx.init(params))
  update_rng_repl = flax.jax_utils.replicate(jax.random.PRNGKey(0))
  losses = []
  for _, batch in zip(range(steps), ds_train.as_numpy_iterator()):
    params_repl, opt_state_repl, loss_repl, update_rng_repl = update_fn_repl(
        params_repl, opt_state_repl, batch, update_rng_repl)
    assert loss_repl.shape == (jax.local_device_count(),)
    losses.append(float(loss_repl[0]))
  return params_repl, losses


@pytest.mark.slow
class VitJaxNotebookTest(absltest.TestCase):

  def test_finetune_with_pmap_then_predict(self):
    tmp = self.create_tempdir().full_path
    devices = jax.local_device_count()
    batch_size = 4 * devices
    config = common_config.with_dataset(common_config.get_config(), 'cifar10')
    config.batch, config.batch_eval, config.pp.crop = batch_size, 4, CROP
    with tfds.testing.mock_data(num_examples=2 * batch_size):
      ds_train = input_pipeline.get_data_from_tfds(config=config, mode='train')
      ds_test = input_pipeline.get_data_from_tfds(config=config, mode='test')
      num_classes = input_pipeline.get_dataset_info(
          'cifar10', 'train')['num_classes']
      num_test = input_pipeline.get_dataset_info(
          'cifar10', 'test')['num_examples']
      batch = next(iter(ds_test.as_numpy_iterator()))
      # [num_local_devices, local_batch_size, h, w, c], one-hot labels.
      self.assertEqual(batch['image'].shape, (devices, 4 // devices, CROP,
                                              CROP, 3))
      self.assertEqual(batch['label'].shape, (devices, 4 // devices, 10))
      model_config = models_config.MODEL_CONFIGS['testing']
      model = models.VisionTransformer(num_classes=num_classes,
                                       **model_config)
      variables = jax.jit(lambda: model.init(
          jax.random.PRNGKey(0), batch['image'][0, :1], train=False),
                          backend='cpu')()
      path = os.path.join(tmp, 'testing.npz')
      test_utils.create_checkpoint(model_config, path)
      params = checkpoint.load_pretrained(
          pretrained_path=path, init_params=variables['params'],
          model_config=model_config)
      vit_apply_repl = jax.pmap(lambda params, inputs: model.apply(
          dict(params=params), inputs, train=False))

      def get_accuracy(params_repl):
        good = total = 0
        for _, batch in zip(range(num_test // 4),
                            ds_test.as_numpy_iterator()):
          predicted = vit_apply_repl(params_repl, batch['image'])
          same = predicted.argmax(-1) == batch['label'].argmax(-1)
          good, total = good + same.sum(), total + same.size
        return good / total

      lr_fn = utils.create_learning_rate_schedule(3, 0.03, 'cosine', 1)
      params_repl, losses = _finetune_pmap(model, params, ds_train, lr_fn, 3)
      accuracy = get_accuracy(params_repl)
    self.assertLen(losses, 3)
    self.assertTrue(np.all(np.isfinite(losses)), losses)
    self.assertBetween(float(accuracy), 0.0, 1.0)
    self._predict_imagenet(tmp, model_config)

  def _predict_imagenet(self, tmp, model_config):
    """The notebook's last cells: ImageNet checkpoint, one image, top 10."""
    path = os.path.join(tmp, 'testing_imagenet2012.npz')
    test_utils.create_checkpoint(model_config, path, num_classes=1000,
                                 image_size=CROP)
    model = models.VisionTransformer(num_classes=1000, **model_config)
    params = checkpoint.load(path)
    params['pre_logits'] = {}  # As the notebook does.
    img = np.random.RandomState(0).randint(0, 255, (CROP, CROP, 3))
    logits, = model.apply(dict(params=params),
                          (np.array(img) / 128 - 1)[None, ...], train=False)
    preds = np.array(jax.nn.softmax(logits))
    top = preds.argsort()[:-11:-1]
    self.assertLen(top, 10)
    self.assertAlmostEqual(float(preds.sum()), 1.0, places=4)


def _flower_photos(base: str) -> str:
  """flower_photos/{class}/{i}.jpg, as the notebook's download unpacks."""
  root = os.path.join(base, 'flower_photos')
  for c, name in enumerate(('daisy', 'roses', 'tulips')):
    os.makedirs(os.path.join(root, name))
    for i in range(10):
      Image.fromarray(np.full((20, 24, 3), 60 * c + i, np.uint8)).save(
          os.path.join(root, name, f'{i}.jpg'))
  return root


def _split(base_dir: str, test_ratio: float = 0.1) -> None:
  """The notebook's move of flower_photos into train/ and test/."""
  paths = glob.glob(f'{base_dir}/*/*.jpg')
  random.Random(0).shuffle(paths)
  for i, path in enumerate(paths):
    split = 'test' if i < test_ratio * len(paths) else 'train'
    *_, class_name, basename = path.split('/')
    dst = f'{base_dir}/{split}/{class_name}/{basename}'
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    shutil.move(path, dst)


@pytest.mark.slow
class AugregNotebookTest(absltest.TestCase):

  def test_inference_then_train_and_evaluate(self):
    tmp = self.create_tempdir().full_path
    model_config = models_config.AUGREG_CONFIGS['Ti_16']
    with tfds.testing.mock_data(num_examples=8):
      # Split named: this tfds has no split metadata for mock_data.
      ds, ds_info = tfds.load('cifar100', split=['test'], with_info=True)
      num_classes = ds_info.features['label'].num_classes
      model = models.VisionTransformer(num_classes=num_classes,
                                       **model_config)
      path = os.path.join(tmp, 'Ti_16.npz')
      test_utils.create_checkpoint(model_config, path,
                                   num_classes=num_classes, image_size=CROP)
      params = checkpoint.load(path)
      d = next(iter(ds[0]))
      img = tf.image.resize(tf.cast(d['image'], float) / 255.0, [CROP, CROP])
      logits, = model.apply({'params': params}, img.numpy()[None],
                            train=False)
    self.assertEqual(logits.shape, (num_classes,))
    self.assertTrue(np.all(np.isfinite(logits)))

    config = augreg_config.get_config('R_Ti_16')
    config.pretrained_dir = os.path.join(tmp, 'augreg')
    test_utils.create_checkpoint(
        config.model, os.path.join(config.pretrained_dir, models_config
                                   .augreg_filename('R_Ti_16') + '.npz'),
        image_size=CROP)
    config.dataset = 'tf_flowers'
    config.pp.train, config.pp.test = 'train[:90%]', 'train[90%:]'
    config.batch, config.batch_eval, config.shuffle_buffer = 4, 2, 10
    config.total_steps, config.warmup_steps = 2, 1
    config.accum_steps = 0  # The notebook's: no accumulation.
    config.pp['crop'] = CROP
    with tfds.testing.mock_data(num_examples=20):
      params = train.train_and_evaluate(config, os.path.join(tmp, 'w1'))
    self.assertIn('head', params)

    root = _flower_photos(tmp)
    _split(root)
    config.dataset = root  # pp.train/test stay 'train[:90%]'/'train[90%:]'.
    result = train.run(config, os.path.join(tmp, 'w2'))
    self.assertBetween(result.accuracy, 0.0, 1.0)
    self.assertEqual(result.step, 2)


if __name__ == '__main__':
  absltest.main()
