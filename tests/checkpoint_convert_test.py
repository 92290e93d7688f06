"""Import / export of timm and Hugging Face ViT weights (checkpoint.convert).

Offline: every file is made here from small models with random weights.
Round trips compare the official arrays bit for bit.
"""

import contextlib
import io
import json
import os

from absl.testing import absltest
import ml_collections
import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax import models
from vit_jax.checkpoint import command
from vit_jax.checkpoint import convert
from vit_jax.checkpoint import npz
from vit_jax.checkpoint import safetensors_file
from vit_jax.checkpoint import torch_layout as tl

CheckpointError = checkpoint.CheckpointError


def _random(tree, seed=0):
  """The tree's shapes filled with distinct random float32 values."""
  rng = np.random.default_rng(seed)
  return npz.unflatten({k: rng.standard_normal(npz.shape_of(v)).astype(
      np.float32) for k, v in npz.flatten(tree).items()})


def _official(directory, *, representation_size=None, num_classes=5):
  """An official-layout `testing` file (32 px grid, random weights)."""
  config = models.get_model_config('testing')
  model = models.build_model(config, num_classes=num_classes,
                             representation_size=representation_size)
  path = os.path.join(directory, 'testing.npz')
  checkpoint.save(_random(models.abstract_params(model, 32)), path)
  return path


class RoundTripTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path

  def assert_same_file(self, a, b):
    stored_a, stored_b = checkpoint.read_stored(a), checkpoint.read_stored(b)
    self.assertEqual(sorted(stored_a), sorted(stored_b))
    for key, x in stored_a.items():
      self.assertEqual(x.dtype, stored_b[key].dtype, key)
      np.testing.assert_array_equal(x, stored_b[key], err_msg=key)

  def test_timm_round_trip_is_exact(self):
    src = _official(self.dir, representation_size=10)
    timm_file = os.path.join(self.dir, 'timm.safetensors')
    convert.to_timm_file(checkpoint.load(src), timm_file)
    state, _ = safetensors_file.read(timm_file)
    self.assertEqual(state['blocks.0.attn.qkv.weight'].shape, (30, 10))
    self.assertEqual(state['patch_embed.proj.weight'].shape, (10, 3, 16, 16))
    self.assertIn('pre_logits.fc.weight', state)
    out = os.path.join(self.dir, 'back.npz')
    self.assertEqual(convert.convert(timm_file, to=out), 'testing')
    self.assert_same_file(src, out)

  def test_hf_round_trip_is_exact(self):
    src = _official(self.dir)
    folder = os.path.join(self.dir, 'hf')
    convert.to_hf_folder(checkpoint.load(src), folder, model_name='testing')
    with open(os.path.join(folder, 'config.json')) as f:
      config = json.load(f)
    self.assertEqual(config['architectures'], ['ViTForImageClassification'])
    self.assertEqual((config['hidden_size'], config['num_attention_heads'],
                      config['image_size'], len(config['id2label'])),
                     (10, 2, 32, 5))
    state, _ = safetensors_file.read(os.path.join(folder,
                                                  'model.safetensors'))
    self.assertEqual(
        state['vit.encoder.layer.0.attention.attention.query.weight'].shape,
        (10, 10))
    out = os.path.join(self.dir, 'back.npz')
    self.assertEqual(convert.convert(folder, to=out), 'testing')
    self.assert_same_file(src, out)

  def test_hf_vitmodel_with_pooler(self):
    src = _official(self.dir, representation_size=10, num_classes=None)
    folder = os.path.join(self.dir, 'hf')
    convert.to_hf_folder(checkpoint.load(src), folder, model_name='testing')
    state, _ = safetensors_file.read(os.path.join(folder,
                                                  'model.safetensors'))
    self.assertIn('pooler.dense.weight', state)
    self.assertNotIn('classifier.weight', state)
    out = os.path.join(self.dir, 'back.npz')
    convert.convert(folder, to=out)
    self.assert_same_file(src, out)

  def test_qkv_is_fused_in_q_k_v_order(self):
    params = checkpoint.load(_official(self.dir))
    state = convert.to_timm(params)
    attn = params['Transformer']['encoderblock_0'][
        'MultiHeadDotProductAttention_0']
    q, k, v = np.split(state['blocks.0.attn.qkv.weight'], 3)
    np.testing.assert_array_equal(q, attn['query']['kernel'].reshape(10, 10).T)
    np.testing.assert_array_equal(v, attn['value']['kernel'].reshape(10, 10).T)
    self.assertFalse(np.array_equal(k, q))

  def test_hybrid_with_stages_round_trip(self):
    config = models.get_model_config('testing').copy_and_resolve_references()
    config.unlock()
    config.resnet = ml_collections.ConfigDict(
        {'num_layers': (2, 1), 'width_factor': 1})
    config.patches.size = (1, 1)
    params = _random(models.abstract_params(
        models.build_model(config, num_classes=3), 32))
    table = tl.rules(tl.TIMM, convert.layout_of(params))
    state = tl.to_torch(params, table)
    self.assertEqual(
        state['patch_embed.backbone.stages.1.blocks.0.downsample.conv.weight']
        .shape, (512, 256, 1, 1))
    self.assertIn('patch_embed.backbone.stem.norm.weight', state)
    back = tl.from_torch(state, table, heads=2, source='x')
    flat, flat_back = npz.flatten(params), npz.flatten(back)
    self.assertEqual(sorted(flat), sorted(flat_back))
    for key in flat:
      np.testing.assert_array_equal(flat[key], flat_back[key], err_msg=key)


class ModelNameTest(absltest.TestCase):

  def test_registered_names(self):
    facts = {'hidden_size': 384, 'num_layers': 12, 'mlp_dim': 1536,
             'patch': (16, 16), 'class_token': False, 'resnet': None}
    self.assertEqual(convert.match_model(facts, source='f'),
                     'ViT-S_16-gap-norep')
    facts['class_token'] = True
    self.assertEqual(convert.match_model(facts, source='f'), 'ViT-S_16')
    facts['resnet'] = ((), 1)
    facts['hidden_size'], facts['mlp_dim'], facts['num_layers'] = 192, 768, 12
    facts['patch'] = (8, 8)
    self.assertEqual(convert.match_model(facts, source='f'), 'R+ViT-Ti_16')

  def test_unknown_shapes_list_what_was_found(self):
    facts = {'hidden_size': 96, 'num_layers': 3, 'mlp_dim': 7,
             'patch': (16, 16), 'class_token': True, 'resnet': None}
    with self.assertRaisesRegex(CheckpointError,
                                r'f: no registered model has hidden_size=96'
                                r'.*mlp_dim=7.*--model=NAME'):
      convert.match_model(facts, source='f')


class BadInputTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path
    self.state = convert.to_timm(checkpoint.load(_official(self.dir)))
    self.src = os.path.join(self.dir, 'in.safetensors')
    self.out = os.path.join(self.dir, 'out.npz')

  def assert_rejected(self, state, message):
    safetensors_file.write(self.src, state)
    with self.assertRaisesRegex(CheckpointError, message):
      convert.convert(self.src, to=self.out)
    self.assertFalse(os.path.exists(self.out))
    self.assertEqual(sorted(os.listdir(self.dir)),
                     ['in.safetensors', 'testing.npz'])

  def test_foreign_architectures(self):
    d = self.state['cls_token']
    for key, what in (('dist_token', 'DeiT'), ('norm_pre.weight', 'CLIP'),
                      ('ln_pre.weight', 'CLIP'),
                      ('layers.0.blocks.0.attn.qkv.weight', 'Swin')):
      with self.subTest(key):
        self.assert_rejected({**self.state, key: d},
                             rf'in\.safetensors holds .*{what}.*{key}')

  def test_missing_and_unexpected_keys(self):
    state = dict(self.state)
    del state['norm.weight']
    state['blocks.0.extra.weight'] = state['norm.bias']
    self.assert_rejected(state, r'in\.safetensors .*1 missing keys \(first: '
                         r'norm\.weight\); 1 unexpected keys \(first: '
                         r'blocks\.0\.extra\.weight\)')

  def test_wrong_shapes(self):
    state = dict(self.state)
    state['blocks.0.mlp.fc1.weight'] = np.zeros((10, 12), np.float32)
    self.assert_rejected(state, r'in\.safetensors \(model testing\) does '
                         r'not match.*MlpBlock_0/Dense_0/kernel: file shape '
                         r'\(12, 10\) vs model shape \(10, 10\)')

  def test_truncated_safetensors(self):
    safetensors_file.write(self.src, self.state)
    with open(self.src, 'rb+') as f:
      f.truncate(os.path.getsize(self.src) - 100)
    with self.assertRaisesRegex(CheckpointError,
                                r'in\.safetensors .*truncated: tensor'):
      convert.convert(self.src, to=self.out)
    self.assertFalse(os.path.exists(self.out))
    for size in (3, 20):
      with open(self.src, 'rb+') as f:
        f.truncate(size)
      with self.assertRaisesRegex(CheckpointError, r'in\.safetensors'):
        convert.convert(self.src, to=self.out)

  def test_hf_folder_of_another_model_type(self):
    folder = os.path.join(self.dir, 'swin')
    os.makedirs(folder)
    with open(os.path.join(folder, 'config.json'), 'w') as f:
      json.dump({'model_type': 'swin'}, f)
    with self.assertRaisesRegex(CheckpointError, r"model_type 'swin'"):
      convert.convert(folder, to=self.out)

  def test_pth_without_torch_says_what_to_do(self):
    try:
      import torch  # pylint: disable=g-import-not-at-top,unused-import
      self.skipTest('torch is installed')
    except ImportError:
      pass
    path = os.path.join(self.dir, 'model.pth')
    with open(path, 'wb') as f:
      f.write(b'x')
    with self.assertRaisesRegex(CheckpointError, r'model\.pth: .*PyTorch'):
      convert.convert(path, to=self.out)

  def test_command_line(self):
    safetensors_file.write(self.src, self.state)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      self.assertEqual(command.main(['convert', self.src,
                                     f'--to={self.out}']), 0)
      self.assertEqual(command.main(['convert', self.src + 'x',
                                     f'--to={self.out}x']), 1)
    self.assertIn('(model testing)', out.getvalue())
    self.assertRegex(err.getvalue(), r'^vit_jax\.checkpoint: .*'
                     r'in\.safetensorsx does not exist')


class FineTuneFromImportTest(absltest.TestCase):

  @pytest.mark.slow  # A short training run (~15 s on 2 shared cores).
  def test_pretrained_path_to_an_imported_file(self):
    from tests import train_test  # pylint: disable=g-import-not-at-top
    from vit_jax import train  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    params = checkpoint.load(_official(tmp, num_classes=7))
    folder = os.path.join(tmp, 'hf')
    convert.to_hf_folder(params, folder, model_name='testing')
    imported = os.path.join(tmp, 'imported.npz')
    convert.convert(folder, to=imported)
    data = train_test.write_image_folder(os.path.join(tmp, 'data'),
                                         train_per_class=2, test_per_class=1)
    config = train_test.tiny_config(data, total_steps=1, warmup_steps=1,
                                    checkpoint_every=1, eval_every=1,
                                    pretrained_path=imported, base_lr=0.0)
    config.model = models.get_model_config(
        'testing').copy_and_resolve_references()
    config.model.transformer.dropout_rate = 0.0
    config.pp.crop = 32  # The file's grid.
    trained = train.train_and_evaluate(config, os.path.join(tmp, 'work'))
    self.assertEqual(trained['head']['kernel'].shape, (10, 2))  # New task.
    got, want = npz.flatten(trained), npz.flatten(params)
    for key in ('embedding/kernel', 'cls', 'Transformer/encoder_norm/scale',
                'Transformer/encoderblock_0/MultiHeadDotProductAttention_0/'
                'query/kernel'):
      np.testing.assert_array_equal(np.asarray(got[key]), want[key],
                                    err_msg=key)


if __name__ == '__main__':
  absltest.main()
