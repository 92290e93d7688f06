"""Tests for the model facade, the ViT/hybrid/Mixer modules and the configs."""

from absl.testing import absltest
from absl.testing import parameterized
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import models
from vit_jax.configs import models as model_configs

# Exact parameter counts with a 1000-class head at 224 px. These are the
# numbers of the original release (and of the official files, see
# shared/spec/checkpoints.md: e.g. ViT-B_16-224 = 86,567,656 floats).
MODEL_SIZES = {
    'testing': 21_390,
    'testing-unpooled': 21_370,
    'ViT-Ti_16': 5_717_416,
    'ViT-S_16': 22_050_664,
    'ViT-S_32': 22_878_952,
    'ViT-B_8': 86_576_872,
    'ViT-B_16': 86_567_656,
    'ViT-B_32': 88_224_232,
    'ViT-L_16': 304_326_632,
    'ViT-L_32': 306_535_400,
    'ViT-H_14': 632_045_800,
    'ViT-S_16-gap-norep': 22_049_896,
    'ViT-S_32-gap-norep': 22_878_184,
    'ViT-B_16-gap-norep': 86_566_120,
    'ViT-B_32-gap-norep': 88_222_696,
    'R+ViT-Ti_16': 6_337_704,
    'R26+ViT-S_32': 36_431_912,
    'R26+ViT-B_32': 101_383_976,
    'R50+ViT-B_16': 98_659_112,
    'R50+ViT-L_32': 328_994_856,
    'Mixer-B_16': 59_880_472,
    'Mixer-B_32': 60_293_428,
    'Mixer-L_16': 208_196_168,
}

AUGREG_NAMES = ('Ti_16', 'S_16', 'S_32', 'B_8', 'B_16', 'B_32', 'L_16',
                'S_16-gap-norep', 'S_32-gap-norep', 'B_16-gap-norep',
                'B_32-gap-norep', 'R_Ti_16', 'R26_S_32', 'R26_B_32',
                'R50_L_32')


def abstract_params(name, resolution=224, num_classes=1000, **kw):
  """Parameter shapes via jax.eval_shape: nothing is allocated."""
  model = models.get_model(name, num_classes=num_classes, **kw)
  x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
  return jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x
  )['params']


def count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


class ConfigsTest(parameterized.TestCase):

  def test_every_registered_config_has_a_size(self):
    self.assertSameElements(model_configs.MODEL_CONFIGS, MODEL_SIZES)

  def test_augreg_names(self):
    self.assertSameElements(model_configs.AUGREG_CONFIGS, AUGREG_NAMES)
    self.assertIs(model_configs.AUGREG_CONFIGS['R26_S_32'],
                  model_configs.MODEL_CONFIGS['R26+ViT-S_32'])

  def test_configs_are_locked(self):
    with self.assertRaises(AttributeError):
      model_configs.MODEL_CONFIGS['ViT-B_16'].new_field = 1

  @parameterized.parameters(*sorted(MODEL_SIZES))
  def test_parameter_count(self, name):
    self.assertEqual(count(abstract_params(name)), MODEL_SIZES[name])

  def test_unknown_name_lists_known_names(self):
    with self.assertRaisesRegex(KeyError, 'ViT-B_16'):
      models.get_model('ViT-X_99', num_classes=10)


class TreeLayoutTest(absltest.TestCase):
  """The Linen trees match the official files after pre-Linen renaming."""

  def test_vit_b16_shapes(self):
    flat = traverse_util.flatten_dict(
        abstract_params('ViT-B_16', num_classes=21843), sep='/')
    block = 'Transformer/encoderblock_11/'
    expected = {
        'cls': (1, 1, 768),
        'embedding/kernel': (16, 16, 3, 768),
        'Transformer/posembed_input/pos_embedding': (1, 197, 768),
        block + 'MultiHeadDotProductAttention_0/query/kernel': (768, 12, 64),
        block + 'MultiHeadDotProductAttention_0/query/bias': (12, 64),
        block + 'MultiHeadDotProductAttention_0/out/kernel': (12, 64, 768),
        block + 'MultiHeadDotProductAttention_0/out/bias': (768,),
        block + 'LayerNorm_1/scale': (768,),
        block + 'MlpBlock_0/Dense_0/kernel': (768, 3072),
        block + 'MlpBlock_0/Dense_1/kernel': (3072, 768),
        'Transformer/encoder_norm/scale': (768,),
        'head/kernel': (768, 21843),
    }
    for key, shape in expected.items():
      self.assertEqual(flat[key].shape, shape, key)
    # 202 keys in the i21k file, minus the two pre_logits ones.
    self.assertLen(flat, 200)

  def test_representation_size_adds_pre_logits(self):
    flat = traverse_util.flatten_dict(
        abstract_params('testing', representation_size=7), sep='/')
    self.assertEqual(flat['pre_logits/kernel'].shape, (10, 7))
    self.assertEqual(flat['head/kernel'].shape, (7, 1000))

  def test_gap_has_no_cls_and_no_class_row(self):
    flat = traverse_util.flatten_dict(
        abstract_params('ViT-B_16-gap-norep'), sep='/')
    self.assertNotIn('cls', flat)
    self.assertEqual(
        flat['Transformer/posembed_input/pos_embedding'].shape, (1, 196, 768))
    self.assertLen(flat, 199)

  def test_hybrid_root_is_top_level(self):
    flat = traverse_util.flatten_dict(abstract_params('R50+ViT-B_16'), sep='/')
    self.assertEqual(flat['conv_root/kernel'].shape, (7, 7, 3, 64))
    self.assertEqual(flat['gn_root/scale'].shape, (64,))
    self.assertEqual(flat['block3/unit9/conv3/kernel'].shape, (1, 1, 256, 1024))
    self.assertEqual(flat['block1/unit1/conv_proj/kernel'].shape,
                     (1, 1, 64, 256))
    self.assertNotIn('block1/unit2/conv_proj/kernel', flat)
    self.assertEqual(flat['embedding/kernel'].shape, (1, 1, 1024, 768))
    self.assertLen(flat, 356)

  def test_r_ti16_grid_is_7x7_at_224(self):
    flat = traverse_util.flatten_dict(abstract_params('R+ViT-Ti_16'), sep='/')
    self.assertEqual(
        flat['Transformer/posembed_input/pos_embedding'].shape, (1, 50, 192))

  def test_mixer_layout(self):
    flat = traverse_util.flatten_dict(abstract_params('Mixer-B_16'), sep='/')
    self.assertEqual(flat['MixerBlock_11/token_mixing/Dense_0/kernel'].shape,
                     (196, 384))
    self.assertEqual(flat['MixerBlock_0/channel_mixing/Dense_1/kernel'].shape,
                     (3072, 768))
    self.assertEqual(flat['pre_head_layer_norm/scale'].shape, (768,))
    self.assertLen(flat, 150)


def init_random(model, x, seed=0):
  """Init, then randomise every leaf so that zero heads do not hide bugs."""
  params = model.init(jax.random.PRNGKey(seed), x, train=False)['params']
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [0.1 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)]
  return jax.tree.unflatten(treedef, leaves)


class ForwardTest(parameterized.TestCase):

  @parameterized.parameters(
      ('token', (2, 5)), ('gap', (2, 5)), ('unpooled', (2, 4, 5)),
      ('token_unpooled', (2, 5, 5)))
  def test_classifier_output_shapes(self, classifier, shape):
    model = models.get_model('testing', num_classes=5, classifier=classifier)
    x = jnp.zeros((2, 32, 32, 3))
    params = model.init(jax.random.PRNGKey(0), x, train=False)['params']
    self.assertEqual(model.apply({'params': params}, x, train=False).shape,
                     shape)

  def test_invalid_classifier(self):
    model = models.get_model('testing', num_classes=5, classifier='cls')
    with self.assertRaisesRegex(ValueError, 'classifier'):
      model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)

  def test_features_without_head(self):
    model = models.get_model('testing', num_classes=None)
    x = jnp.zeros((3, 32, 32, 3))
    params = model.init(jax.random.PRNGKey(0), x, train=False)['params']
    self.assertNotIn('head', params)
    self.assertEqual(model.apply({'params': params}, x, train=False).shape,
                     (3, 10))

  @pytest.mark.slow
  def test_attention_capture_with_sow(self):
    model = models.get_model('testing', num_classes=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    params = init_random(model, x)
    logits, state = model.apply({'params': params}, x, train=False,
                                mutable=['intermediates'])
    (weights,) = state['intermediates']['Transformer']['encoderblock_0'][
        'MultiHeadDotProductAttention_0']['attention_weights']
    self.assertEqual(weights.shape, (2, 2, 5, 5))
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    # Capturing changes neither the parameters nor the result (the last
    # block then computes every token, not only the class token).
    np.testing.assert_allclose(
        logits, model.apply({'params': params}, x, train=False), atol=1e-6)

  @parameterized.product(attention_impl=('einsum', 'xla'), remat=(False, True))
  def test_token_head_skips_other_tokens_in_last_block(self, attention_impl,
                                                       remat):
    """Logits and gradients equal those of the full last block, for less."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    model = models.get_model('testing', num_classes=3, remat=remat,
                             attention_impl=attention_impl)
    params = init_random(model, x)
    labels = jnp.array([0, 2])

    def loss(p, full):
      if full:  # Capturing attention weights forces the full computation.
        logits, _ = model.apply({'params': p}, x, train=False,
                                mutable=['intermediates'])
      else:
        logits = model.apply({'params': p}, x, train=False)
      return -jnp.take_along_axis(jax.nn.log_softmax(logits),
                                  labels[:, None], 1).mean()

    fast, full = (jax.value_and_grad(loss)(params, f) for f in (False, True))
    np.testing.assert_allclose(fast[0], full[0], atol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                 fast[1], full[1])
    flops = lambda f: jax.jit(jax.grad(loss), static_argnums=1).lower(  # pylint: disable=g-long-lambda
        params, f).compile().cost_analysis()['flops']
    self.assertLess(flops(False), 0.95 * flops(True))

  def test_attention_matches_flax_module(self):
    """Our attention computes what flax.linen's module computes."""
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    from vit_jax import models_vit  # pylint: disable=g-import-not-at-top
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 16))
    ours = models_vit.MultiHeadDotProductAttention(num_heads=4)
    theirs = nn.MultiHeadDotProductAttention(num_heads=4)
    params = theirs.init(jax.random.PRNGKey(1), x, x)['params']
    self.assertEqual(
        jax.tree.map(jnp.shape, params),
        jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x,
                                          deterministic=True)['params']))
    np.testing.assert_allclose(
        ours.apply({'params': params}, x, deterministic=True),
        theirs.apply({'params': params}, x, x), atol=1e-6)

  def test_fused_attention_matches_einsum(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    model = models.get_model('testing', num_classes=3)
    params = init_random(model, x)
    fused = models.get_model('testing', num_classes=3, attention_impl='xla')
    np.testing.assert_allclose(
        fused.apply({'params': params}, x, train=False),
        model.apply({'params': params}, x, train=False), atol=1e-5)

  def test_bfloat16_compute_keeps_float32_params(self):
    model = models.get_model('testing', num_classes=3, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    params = model.init(jax.random.PRNGKey(0), x, train=False)['params']
    self.assertTrue(all(l.dtype == jnp.float32 for l in jax.tree.leaves(params)))
    params = init_random(models.get_model('testing', num_classes=3), x)
    low = model.apply({'params': params}, x, train=False)
    self.assertEqual(low.dtype, jnp.float32)
    ref = models.get_model('testing', num_classes=3).apply(
        {'params': params}, x, train=False)
    np.testing.assert_allclose(low, ref, atol=5e-2)

  def test_remat_matches(self):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    model = models.get_model('testing', num_classes=3)
    params = init_random(model, x)
    remat = models.get_model('testing', num_classes=3, remat=True)
    loss = lambda m: lambda p: m.apply({'params': p}, x, train=False).sum()
    g1 = jax.grad(loss(model))(params)
    g2 = jax.grad(loss(remat))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                 g1, g2)

  def test_dropout_is_active_only_in_training(self):
    model = models.get_model('testing', num_classes=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
    params = init_random(model, x)
    run = lambda seed: model.apply(  # pylint: disable=g-long-lambda
        {'params': params}, x, train=True,
        rngs={'dropout': jax.random.PRNGKey(seed)})
    self.assertFalse(np.allclose(run(0), run(1)))

  def test_hybrid_and_mixer_forward(self):
    for name, res in (('R+ViT-Ti_16', 64), ('Mixer-B_32', 64)):
      model = models.get_model(name, num_classes=4)
      x = jnp.zeros((1, res, res, 3))
      shapes = jax.eval_shape(
          lambda: model.apply(model.init(jax.random.PRNGKey(0), x,
                                         train=False), x, train=False))
      self.assertEqual(shapes.shape, (1, 4), name)


if __name__ == '__main__':
  absltest.main()
