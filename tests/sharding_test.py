"""Sharded training equals single-device training (8 fake CPU devices).

The check runs in a subprocess because the device count is fixed when JAX
initialises its backend.
"""

import json
import os
import subprocess
import sys

from absl.testing import absltest
import numpy as np
import pytest

STEPS = 4

_SCRIPT = r'''
import json, sys
import jax, jax.numpy as jnp, numpy as np
import ml_collections
from vit_jax import partitioning, steps
from vit_jax.configs import common, models

def config(data, model, fsdp):
  c = common.with_dataset(common.get_config(), 'digits')
  c.model = models.MODEL_CONFIGS['testing'].copy_and_resolve_references()
  c.model.hidden_size = 16
  c.model.transformer.num_heads = 4
  c.model.transformer.mlp_dim = 32
  c.model.transformer.num_layers = 2
  c.model.transformer.dropout_rate = 0.1
  c.pretrained_dir = ''
  c.pp.crop = 32
  c.batch, c.accum_steps, c.total_steps, c.warmup_steps = 16, 2, 10, 2
  c.base_lr = 0.1
  c.mesh.data, c.mesh.model, c.fsdp = data, model, fsdp
  return c

def run(data, model, fsdp=False):
  c = config(data, model, fsdp)
  devices = jax.devices()[:data * model]
  built = steps.build(c, 10, devices=devices)
  state, train_fn, mesh = built.state, built.train_fn, built.mesh
  rng = np.random.RandomState(0)
  losses = []
  for _ in range(%(steps)d):
    batch = {'image': rng.uniform(-1, 1, (16, 32, 32, 3)).astype(np.float32),
             'label': rng.randint(0, 10, (16,)).astype(np.int32)}
    batch = jax.device_put(batch, partitioning.batch_sharding(mesh))
    state, metrics = train_fn(state, batch)
    losses.append(float(metrics['loss']))
  p = state.params['Transformer']['encoderblock_0']
  q = p['MultiHeadDotProductAttention_0']['query']['kernel']
  mlp = p['MlpBlock_0']['Dense_0']['kernel']
  mom = state.opt_state[1][0].trace['Transformer']['encoderblock_0'][
      'MlpBlock_0']['Dense_0']['kernel']
  return {'losses': losses,
          'query_spec': [str(a) for a in q.sharding.spec],
          'mlp_spec': [str(a) for a in mlp.sharding.spec],
          'momentum_spec': [str(a) for a in mom.sharding.spec],
          'mlp_shard_shape': list(mlp.addressable_shards[0].data.shape),
          'head': np.asarray(state.params['head']['kernel']).tolist()}

print('RESULT ' + json.dumps({
    'devices': jax.device_count(),
    'single': run(1, 1), 'data8': run(8, 1), 'data4_model2': run(4, 2),
    'fsdp': run(4, 2, fsdp=True)}))
''' % {'steps': STEPS}


@pytest.mark.slow
class ShardingTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    env = dict(os.environ, JAX_PLATFORMS='cpu',
               XLA_FLAGS='--xla_force_host_platform_device_count=8')
    proc = subprocess.run([sys.executable, '-c', _SCRIPT], env=env,
                          capture_output=True, text=True, timeout=600,
                          check=False)
    lines = [l for l in proc.stdout.splitlines() if l.startswith('RESULT ')]
    if proc.returncode or not lines:
      raise AssertionError(f'sharding script failed:\n{proc.stderr[-4000:]}')
    cls.result = json.loads(lines[0][len('RESULT '):])

  def test_eight_devices(self):
    self.assertEqual(self.result['devices'], 8)

  def test_losses_match_single_device(self):
    single = self.result['single']['losses']
    self.assertLen(single, STEPS)
    self.assertGreater(len(set(single)), 1)  # Training actually moves.
    for name in ('data8', 'data4_model2', 'fsdp'):
      np.testing.assert_allclose(self.result[name]['losses'], single,
                                 rtol=1e-5, atol=1e-5, err_msg=name)

  def test_parameters_match_single_device(self):
    for name in ('data8', 'data4_model2', 'fsdp'):
      np.testing.assert_allclose(self.result[name]['head'],
                                 self.result['single']['head'], atol=1e-5,
                                 err_msg=name)

  def test_tensor_parallel_shardings(self):
    r = self.result['data4_model2']
    self.assertEqual(r['query_spec'], ['None', 'model', 'None'])
    self.assertEqual(r['mlp_spec'], ['None', 'model'])
    self.assertEqual(r['momentum_spec'], ['None', 'model'])
    self.assertEqual(r['mlp_shard_shape'], [16, 16])  # (16, 32) split 2-way.

  def test_fsdp_shards_over_data(self):
    r = self.result['fsdp']
    self.assertEqual(r['mlp_spec'], ['data', 'model'])
    self.assertEqual(r['mlp_shard_shape'], [4, 16])

  def test_data_parallel_replicates_params(self):
    self.assertEqual(self.result['data8']['mlp_spec'], ['None', 'None'])


if __name__ == '__main__':
  absltest.main()
