"""Attention capture and inspect.json against float64 numpy oracles.

The model is the golden 3-block token ViT of testdata/make_golden_forward.py
(16 px, 4x4 grid + class token, 2 heads, distinct random blocks). Each
block's attention is recomputed in float64 as softmax(q k^T / sqrt(d)) from
that block's own parameters and its input, which the independent numpy
forward pass provides; the inspect summary is recomputed with the loop
references of inspect_test and scikit-learn's PCA.
"""

import json
import os
import tempfile

from absl.testing import absltest
import numpy as np
from PIL import Image
from sklearn import decomposition

from tests import golden_forward_test
from tests import inspect_test
from vit_jax import checkpoint
from vit_jax import inspect as vi
from vit_jax.inspect import cli

GOLDEN = golden_forward_test.GOLDEN
NAME = 'vit_token'
GRID, PATCH = (4, 4), (4, 4)


def reference_attention(params, images):
  """(L, B, H, T, T) float64 attention weights of every block, in order."""
  f = GOLDEN.MODELS[NAME]['fields']
  p = GOLDEN.unflatten({k: np.asarray(v, np.float64)
                        for k, v in GOLDEN.flatten(params).items()})
  x = GOLDEN.patchify(np.asarray(images, np.float64),
                      p['embedding']['kernel'], p['embedding']['bias'])
  b, h, w, d = x.shape
  x = x.reshape(b, h * w, d)
  x = np.concatenate([np.broadcast_to(p['cls'], (b, 1, d)), x], axis=1)
  x = x + p['Transformer']['posembed_input']['pos_embedding']
  layers = []
  for i in range(f['num_layers']):
    block = p['Transformer'][f'encoderblock_{i}']
    att = block['MultiHeadDotProductAttention_0']
    y = GOLDEN.layer_norm(x, block['LayerNorm_0'])
    q, k = (np.einsum('btd,dhe->bhte', y, att[n]['kernel'])
            + att[n]['bias'][None, :, None] for n in ('query', 'key'))
    scores = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    layers.append(GOLDEN.softmax(scores))
    x = GOLDEN.encoder_block(x, block, f['num_heads'])
  return np.stack(layers)


class CaptureOrderTest(absltest.TestCase):

  def test_each_layer_is_its_own_blocks_softmax(self):
    images, params = GOLDEN.make_inputs(NAME)
    model = golden_forward_test.flax_model(NAME)
    got = np.asarray(vi.attention_weights(model, params, images))
    want = reference_attention(params, images)
    self.assertEqual(got.shape, (3, 3, 2, 17, 17))
    # The blocks attend differently, so any reordering is visible.
    for i in range(3):
      for j in range(i):
        self.assertGreater(np.abs(want[i] - want[j]).max(), 0.1)
    for layer in range(3):
      np.testing.assert_allclose(got[layer], want[layer], atol=2e-6,
                                 err_msg=f'layer {layer}')


class InspectJsonTest(absltest.TestCase):

  def test_summary_values(self):
    root = self.enterContext(tempfile.TemporaryDirectory())
    images, params = GOLDEN.make_inputs(NAME)
    f = GOLDEN.MODELS[NAME]['fields']
    # Images stored at the model's resolution, so loading is exact.
    pixels = np.rint((images + 1) * 127.5).astype(np.uint8)
    paths = []
    for i, img in enumerate(pixels):
      paths.append(os.path.join(root, f'img{i}.png'))
      Image.fromarray(img).save(paths[-1])
    x = (pixels.astype(np.float64) - 127.5) / 127.5
    work = os.path.join(root, 'work')
    os.makedirs(work)
    checkpoint.save(params, os.path.join(work, 'model.npz'))
    config = {'model_name': 'golden-vit', 'patches': {'size': [4, 4]},
              'hidden_size': 16, 'classifier': 'token',
              'representation_size': None,
              'transformer': {'mlp_dim': f['mlp_dim'], 'num_heads': 2,
                              'num_layers': 3, 'dropout_rate': 0.0,
                              'attention_dropout_rate': 0.0}}
    names = ['a', 'b', 'c', 'd', 'e']
    with open(os.path.join(work, 'model.json'), 'w') as fp:
      json.dump({'model_name': 'golden-vit', 'model': config,
                 'num_classes': 5, 'resolution': 16, 'class_names': names},
                fp)
    out = os.path.join(root, 'out')
    cli.write_report(cli.Options(checkpoint=work, out=out,
                                 images=','.join(paths), resolution=16,
                                 batch_size=2))
    with open(os.path.join(out, 'inspect.json')) as fp:
      summary = json.load(fp)

    att = reference_attention(params, x)
    top1 = GOLDEN.forward(NAME, params, x).argmax(-1).tolist()
    self.assertEqual(summary['top1'], top1)
    self.assertEqual(summary['top1_names'], [names[i] for i in top1])
    np.testing.assert_allclose(
        summary['distance']['mean_distance'],
        inspect_test.ref_distance(att, GRID, PATCH), rtol=1e-5)
    rollout_row = inspect_test.ref_rollout(att)[:, 0, 1:]
    maps = rollout_row / rollout_row.max(-1, keepdims=True)
    np.testing.assert_allclose(summary['rollout']['mean_map'],
                               maps.mean(0).reshape(GRID), rtol=1e-5)
    pe = np.asarray(params['Transformer']['posembed_input']['pos_embedding'],
                    np.float64)[0, 1:]
    sim = inspect_test.ref_cosine(pe)
    np.testing.assert_allclose(summary['position']['tile_0_0'],
                               sim[0].reshape(GRID), atol=1e-5)
    self.assertAlmostEqual(summary['position']['min'], sim.min(), places=5)
    kernel = np.asarray(params['embedding']['kernel'], np.float64)
    rows = np.moveaxis(kernel, -1, 0).reshape(16, -1)
    pca = decomposition.PCA(16, svd_solver='full').fit(rows)
    np.testing.assert_allclose(summary['filters']['explained_variance_ratio'],
                               pca.explained_variance_ratio_, rtol=1e-3,
                               atol=1e-6)


if __name__ == '__main__':
  absltest.main()
