"""Tests for the mesh and the parameter sharding rules (no devices needed)."""

from absl.testing import absltest
import jax
from jax.sharding import PartitionSpec as P
import numpy as np

from vit_jax import partitioning


class FakeMesh:
  """Just what param_spec reads: axis sizes."""

  def __init__(self, data, model):
    self.shape = {'data': data, 'model': model}


class MeshShapeTest(absltest.TestCase):

  def test_resolves_minus_one(self):
    self.assertEqual(partitioning.mesh_shape(-1, 2, 8), (4, 2))
    self.assertEqual(partitioning.mesh_shape(8, -1, 8), (8, 1))
    self.assertEqual(partitioning.mesh_shape(-1, 1, 1), (1, 1))

  def test_mismatch_says_what_to_set(self):
    with self.assertRaisesRegex(partitioning.MeshError,
                                'needs 6 devices but 8'):
      partitioning.mesh_shape(3, 2, 8)
    with self.assertRaisesRegex(partitioning.MeshError, 'Only one'):
      partitioning.mesh_shape(-1, -1, 8)
    with self.assertRaises(partitioning.MeshError):
      partitioning.mesh_shape(-1, 3, 8)


class ParamSpecTest(absltest.TestCase):

  def spec(self, name, shape, data=4, model=2, fsdp=False):
    return partitioning.param_spec(name, shape, FakeMesh(data, model),
                                   fsdp=fsdp)

  def test_attention_is_split_over_heads(self):
    base = 'Transformer/encoderblock_3/MultiHeadDotProductAttention_0/'
    self.assertEqual(self.spec(base + 'query/kernel', (768, 12, 64)),
                     P(None, 'model', None))
    self.assertEqual(self.spec(base + 'value/bias', (12, 64)),
                     P('model', None))
    self.assertEqual(self.spec(base + 'out/kernel', (12, 64, 768)),
                     P('model', None, None))
    self.assertEqual(self.spec(base + 'out/bias', (768,)), P())

  def test_mlp_is_split_over_hidden_units(self):
    base = 'Transformer/encoderblock_0/MlpBlock_0/'
    self.assertEqual(self.spec(base + 'Dense_0/kernel', (768, 3072)),
                     P(None, 'model'))
    self.assertEqual(self.spec(base + 'Dense_0/bias', (3072,)), P('model'))
    self.assertEqual(self.spec(base + 'Dense_1/kernel', (3072, 768)),
                     P('model', None))

  def test_fsdp_shards_embed_over_data(self):
    base = 'Transformer/encoderblock_0/MlpBlock_0/'
    self.assertEqual(
        self.spec(base + 'Dense_0/kernel', (768, 3072), fsdp=True),
        P('data', 'model'))
    self.assertEqual(self.spec('embedding/kernel', (16, 16, 3, 768),
                               fsdp=True), P(None, None, None, 'data'))

  def test_indivisible_dims_stay_replicated(self):
    base = 'Transformer/encoderblock_0/MultiHeadDotProductAttention_0/'
    self.assertEqual(self.spec(base + 'query/kernel', (192, 3, 64)),
                     P(None, None, None))

  def test_unmatched_and_size_one_axes_are_replicated(self):
    self.assertEqual(self.spec('cls', (1, 1, 768)), P())
    self.assertEqual(
        self.spec('Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel',
                  (768, 3072), model=1), P(None, None))

  def test_optimizer_leaves_follow_their_parameter(self):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1),
                             ('data', 'model'))
    tree = {'trace': {'MlpBlock_0': {'Dense_0': {'kernel': np.zeros((4, 8))}}},
            'count': np.zeros(())}
    shardings = partitioning.tree_shardings(tree, mesh)
    self.assertEqual(shardings['count'].spec, P())
    self.assertEqual(
        shardings['trace']['MlpBlock_0']['Dense_0']['kernel'].spec,
        P(None, None))


if __name__ == '__main__':
  absltest.main()
