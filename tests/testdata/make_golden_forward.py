"""Writes golden_forward.npz: float64 logits of small seeded models.

An independent float64 numpy implementation of the forward passes of the
original release's ViT (token and GAP heads, representation layer), hybrid
(ResNet root + ViT) and MLP-Mixer, written from the paper and the
checkpoint layout (spec/checkpoints.md), not from vit_jax's model code,
which this script does not import. Parameters are drawn here, in the
checkpoint layout (Linen names), as float32 from a seeded legacy numpy
RandomState (a stable stream), so only the logits and checksums of
the images and parameters are stored; the Flax models must accept the
parameters as they are. Run once; tests/golden_forward_test.py redraws the
parameters with `make_params` and compares the package's float32 logits to
the stored ones:

  python tests/testdata/make_golden_forward.py

Scales are chosen so the tests are sensitive: the residual stream is kept
small (variance ~1e-5) so every LayerNorm's epsilon matters, the hybrid's
GroupNorm inputs and conv kernels are small for the same reason, while the
inputs of GELU, softmax and tanh are of order one.
"""

import math
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   'golden_forward.npz')

# name -> (model fields for the Flax model, image size). Kept tiny.
MODELS = {
    'vit_token': dict(
        fields=dict(patches=(4, 4), hidden_size=16, num_heads=2, mlp_dim=32,
                    num_layers=3, classifier='token',
                    representation_size=None, num_classes=5),
        size=16),
    'vit_gap_repr': dict(
        fields=dict(patches=(4, 4), hidden_size=16, num_heads=4, mlp_dim=24,
                    num_layers=2, classifier='gap', representation_size=12,
                    num_classes=5),
        size=16),
    'vit_token_repr': dict(
        fields=dict(patches=(4, 4), hidden_size=16, num_heads=2, mlp_dim=24,
                    num_layers=2, classifier='token', representation_size=8,
                    num_classes=4),
        size=16),
    'hybrid': dict(
        fields=dict(patches=(2, 2), hidden_size=16, num_heads=2, mlp_dim=32,
                    num_layers=2, classifier='token',
                    representation_size=None, num_classes=5,
                    resnet_layers=(1,), width_factor=0.5),
        size=32),
    'mixer': dict(
        fields=dict(patches=(4, 4), hidden_dim=16, num_blocks=2,
                    tokens_mlp_dim=8, channels_mlp_dim=32, num_classes=5),
        size=16),
}
BATCH = 3


# ---------------------------------------------------------------- float64 ops
def layer_norm(x, p, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def dense(x, p):
  return x @ p['kernel'] + p['bias']


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def patchify(x, kernel, bias):
  """Non-overlapping patch embedding: (B, H, W, C) -> (B, h, w, D)."""
  ph, pw, c, d = kernel.shape
  b, h, w, _ = x.shape
  x = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h // ph, w // pw, ph * pw * c) @ kernel.reshape(
      -1, d) + bias


def conv_same(x, kernel, stride):
  """Cross-correlation with TF/XLA 'SAME' padding (extra pad at the end)."""
  kh, kw, _, d = kernel.shape
  b, h, w, _ = x.shape
  oh, ow = -(-h // stride), -(-w // stride)
  ph = max((oh - 1) * stride + kh - h, 0)
  pw = max((ow - 1) * stride + kw - w, 0)
  x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2),
                 (0, 0)))
  out = np.zeros((b, oh, ow, d))
  for i in range(kh):
    for j in range(kw):
      patch = x[:, i:i + stride * oh:stride, j:j + stride * ow:stride]
      out += patch @ kernel[i, j]
  return out


def max_pool_same(x, k=3, stride=2):
  b, h, w, c = x.shape
  oh, ow = -(-h // stride), -(-w // stride)
  ph = max((oh - 1) * stride + k - h, 0)
  pw = max((ow - 1) * stride + k - w, 0)
  x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2),
                 (0, 0)), constant_values=-np.inf)
  out = np.full((b, oh, ow, c), -np.inf)
  for i in range(k):
    for j in range(k):
      out = np.maximum(out, x[:, i:i + stride * oh:stride,
                              j:j + stride * ow:stride])
  return out


def std_conv(x, kernel, stride=1):
  """Weight-standardised conv: per output channel, population std + 1e-5."""
  w = kernel - kernel.mean((0, 1, 2), keepdims=True)
  w = w / (w.std((0, 1, 2), keepdims=True) + 1e-5)
  return conv_same(x, w, stride)


def group_norm(x, p, groups=32, eps=1e-6):
  b, h, w, c = x.shape
  g = x.reshape(b, h, w, groups, c // groups)
  mean = g.mean((1, 2, 4), keepdims=True)
  var = ((g - mean) ** 2).mean((1, 2, 4), keepdims=True)
  g = (g - mean) / np.sqrt(var + eps)
  return g.reshape(b, h, w, c) * p['scale'] + p['bias']


def relu(x):
  return np.maximum(x, 0)


# ------------------------------------------------------------------- models
def attention(x, p, num_heads):
  """Multi-head self-attention; kernels (D, heads, hd) and (heads, hd, D)."""
  q, k, v = (np.einsum('btd,dhe->bthe', x, p[n]['kernel']) + p[n]['bias']
             for n in ('query', 'key', 'value'))
  logits = np.einsum('bqhe,bkhe->bhqk', q, k) / math.sqrt(q.shape[-1])
  out = np.einsum('bhqk,bkhe->bqhe', softmax(logits), v)
  return np.einsum('bqhe,hed->bqd', out, p['out']['kernel']) + p['out']['bias']


def encoder_block(x, p, num_heads):
  y = attention(layer_norm(x, p['LayerNorm_0']),
                p['MultiHeadDotProductAttention_0'], num_heads)
  x = x + y
  mlp = p['MlpBlock_0']
  y = dense(gelu_tanh(dense(layer_norm(x, p['LayerNorm_1']), mlp['Dense_0'])),
            mlp['Dense_1'])
  return x + y


def resnet_root(x, p, num_layers, width):
  x = relu(group_norm(std_conv(x, p['conv_root']['kernel'], 2), p['gn_root']))
  x = max_pool_same(x)
  for s, units in enumerate(num_layers):
    features = width * 2**s
    for u in range(units):
      q = p[f'block{s + 1}'][f'unit{u + 1}']
      stride = 2 if (s > 0 and u == 0) else 1
      residual = x
      if 'conv_proj' in q:
        residual = group_norm(std_conv(x, q['conv_proj']['kernel'], stride),
                              q['gn_proj'])
      y = relu(group_norm(std_conv(x, q['conv1']['kernel']), q['gn1']))
      y = relu(group_norm(std_conv(y, q['conv2']['kernel'], stride), q['gn2']))
      y = group_norm(std_conv(y, q['conv3']['kernel']), q['gn3'])
      assert y.shape[-1] == 4 * features
      x = relu(residual + y)
  return x


def vit_forward(x, p, f):
  if 'resnet_layers' in f:
    x = resnet_root(x, p, f['resnet_layers'], int(64 * f['width_factor']))
  x = patchify(x, p['embedding']['kernel'], p['embedding']['bias'])
  b, h, w, d = x.shape
  x = x.reshape(b, h * w, d)
  if f['classifier'] == 'token':  # The class token is row 0.
    x = np.concatenate([np.broadcast_to(p['cls'], (b, 1, d)), x], axis=1)
  t = p['Transformer']
  x = x + t['posembed_input']['pos_embedding']
  for i in range(f['num_layers']):
    x = encoder_block(x, t[f'encoderblock_{i}'], f['num_heads'])
  x = layer_norm(x, t['encoder_norm'])
  x = x[:, 0] if f['classifier'] == 'token' else x.mean(1)
  if f['representation_size']:
    x = np.tanh(dense(x, p['pre_logits']))
  return dense(x, p['head'])


def mixer_forward(x, p, f):
  x = patchify(x, p['stem']['kernel'], p['stem']['bias'])
  b, h, w, d = x.shape
  x = x.reshape(b, h * w, d)
  for i in range(f['num_blocks']):
    q = p[f'MixerBlock_{i}']
    y = layer_norm(x, q['LayerNorm_0']).swapaxes(1, 2)  # (b, d, tokens)
    tm = q['token_mixing']
    y = dense(gelu_tanh(dense(y, tm['Dense_0'])), tm['Dense_1'])
    x = x + y.swapaxes(1, 2)
    cm = q['channel_mixing']
    y = layer_norm(x, q['LayerNorm_1'])
    x = x + dense(gelu_tanh(dense(y, cm['Dense_0'])), cm['Dense_1'])
  x = layer_norm(x, p['pre_head_layer_norm']).mean(1)
  return dense(x, p['head'])


# --------------------------------------------------------------- parameters
class Draw:
  """Seeded float32 parameters of given shapes and scales."""

  def __init__(self, seed):
    self.rng = np.random.RandomState(seed)

  def __call__(self, shape, scale, mean=0.0):
    return (mean + scale * self.rng.standard_normal(shape)).astype(np.float32)

  def dense(self, fan_in, out, scale=1.0):
    return {'kernel': self((fan_in, out), scale / math.sqrt(fan_in)),
            'bias': self((out,), 0.1 * scale)}

  def norm(self, c, scale=1.0):
    return {'scale': scale * self((c,), 0.2, 1.0),
            'bias': scale * self((c,), 0.1)}


def vit_params(f, draw, in_channels):
  d, heads = f['hidden_size'], f['num_heads']
  hd = d // heads
  ph, pw = f['patches']
  small = 3e-3  # Residual-stream scale: keeps LayerNorm inputs tiny.
  p = {'embedding': {
      'kernel': draw((ph, pw, in_channels, d),
                     small / math.sqrt(ph * pw * in_channels)),
      'bias': draw((d,), small)}}
  blocks = {}
  for i in range(f['num_layers']):
    att = {n: {'kernel': draw((d, heads, hd), 1.5 / math.sqrt(d)),
               'bias': draw((heads, hd), 0.1)}
           for n in ('query', 'key', 'value')}
    att['out'] = {'kernel': draw((heads, hd, d), small / math.sqrt(d)),
                  'bias': draw((d,), small)}
    blocks[f'encoderblock_{i}'] = {
        'LayerNorm_0': draw.norm(d), 'MultiHeadDotProductAttention_0': att,
        'LayerNorm_1': draw.norm(d),
        'MlpBlock_0': {'Dense_0': draw.dense(d, f['mlp_dim'], 1.5),
                       'Dense_1': draw.dense(f['mlp_dim'], d, small)}}
  blocks['encoder_norm'] = draw.norm(d)
  p['Transformer'] = blocks
  if f['classifier'] == 'token':
    p['cls'] = draw((1, 1, d), small)
  if f['representation_size']:
    p['pre_logits'] = draw.dense(d, f['representation_size'], 1.5)
  width = f['representation_size'] or d
  p['head'] = draw.dense(width, f['num_classes'], 2.0)
  return p


def resnet_params(f, draw):
  width = int(64 * f['width_factor'])
  def conv(kh, cin, cout):
    # Tiny kernels with output-channel scales spread 10x: the 1e-5 added to
    # each channel's std changes channels of one GroupNorm group unequally,
    # so the weight standardisation's epsilon shows in the logits.
    scales = np.geomspace(2e-4, 2e-3, cout).astype(np.float32)
    return {'kernel': draw((kh, kh, cin, cout), 1.0) * scales}

  # GroupNorms that feed a conv get small outputs, so the next GroupNorm
  # sees a small variance and its epsilon matters (as LayerNorm's does).
  small = 1e-3
  p = {'conv_root': conv(7, 3, width), 'gn_root': draw.norm(width, small)}
  cin = width
  for s, units in enumerate(f['resnet_layers']):
    feat = width * 2**s
    stage = {}
    for u in range(units):
      q = {'conv1': conv(1, cin, feat), 'gn1': draw.norm(feat, small),
           'conv2': conv(3, feat, feat), 'gn2': draw.norm(feat, small),
           'conv3': conv(1, feat, 4 * feat), 'gn3': draw.norm(4 * feat)}
      if u == 0:
        q.update(conv_proj=conv(1, cin, 4 * feat), gn_proj=draw.norm(4 * feat))
      stage[f'unit{u + 1}'] = q
      cin = 4 * feat
    p[f'block{s + 1}'] = stage
  return p, cin


def mixer_params(f, draw, tokens):
  d = f['hidden_dim']
  ph, pw = f['patches']
  small = 3e-3
  p = {'stem': {'kernel': draw((ph, pw, 3, d), small / math.sqrt(ph * pw * 3)),
                'bias': draw((d,), small)}}
  for i in range(f['num_blocks']):
    p[f'MixerBlock_{i}'] = {
        'LayerNorm_0': draw.norm(d),
        'token_mixing': {
            'Dense_0': draw.dense(tokens, f['tokens_mlp_dim'], 1.5),
            'Dense_1': draw.dense(f['tokens_mlp_dim'], tokens, small)},
        'LayerNorm_1': draw.norm(d),
        'channel_mixing': {
            'Dense_0': draw.dense(d, f['channels_mlp_dim'], 1.5),
            'Dense_1': draw.dense(f['channels_mlp_dim'], d, small)}}
  p['pre_head_layer_norm'] = draw.norm(d)
  p['head'] = draw.dense(d, f['num_classes'], 2.0)
  return p


def make_params(name, seed):
  f, size = MODELS[name]['fields'], MODELS[name]['size']
  draw = Draw(seed)
  if name == 'mixer':
    tokens = (size // f['patches'][0]) * (size // f['patches'][1])
    return mixer_params(f, draw, tokens)
  p, channels = {}, 3
  stride = 1
  if 'resnet_layers' in f:
    p, channels = resnet_params(f, draw)
    stride = 4 * 2**(len(f['resnet_layers']) - 1)
  p.update(vit_params(f, draw, channels))
  grid = size // (stride * f['patches'][0])
  tokens = grid * grid + (f['classifier'] == 'token')
  p['Transformer']['posembed_input'] = {
      'pos_embedding': draw((1, tokens, f['hidden_size']), 3e-3)}
  return p


def flatten(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}/'))
    else:
      out[prefix + k] = v
  return out


def unflatten(flat):
  tree = {}
  for key, value in flat.items():
    node = tree
    *parents, leaf = key.split('/')
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return tree


def checksum(params) -> np.ndarray:
  """float64 sum of |p| per leaf, in sorted key order (detects drift)."""
  flat = flatten(params)
  return np.array([np.abs(flat[k].astype(np.float64)).sum()
                   for k in sorted(flat)])


def forward(name, params, images):
  """float64 logits of model `name` (params: nested dict of arrays)."""
  f = MODELS[name]['fields']
  p = unflatten({k: np.asarray(v, np.float64)
                 for k, v in flatten(params).items()})
  x = np.asarray(images, np.float64)
  return mixer_forward(x, p, f) if name == 'mixer' else vit_forward(x, p, f)


def make_inputs(name):
  """(images (BATCH, size, size, 3) float32 in [-1, 1], params) of `name`."""
  seed = list(MODELS).index(name)
  size = MODELS[name]['size']
  # Hybrid: faint images, so the root GroupNorm's epsilon matters too.
  scale = 3e-3 if 'resnet_layers' in MODELS[name]['fields'] else 1.0
  images = scale * np.random.RandomState(100 + seed).uniform(
      -1, 1, (BATCH, size, size, 3))
  images = images.astype(np.float32)
  return images, make_params(name, seed)


def main():
  arrays = {}
  for name in MODELS:
    images, params = make_inputs(name)
    logits = forward(name, params, images)
    arrays[f'{name}/logits'] = logits
    arrays[f'{name}/images_checksum'] = np.abs(images.astype(np.float64)).sum()
    arrays[f'{name}/params_checksum'] = checksum(params)
    print(name, logits.shape, np.abs(logits).max())
  np.savez_compressed(OUT, **arrays)
  print('wrote', OUT, os.path.getsize(OUT), 'bytes')


if __name__ == '__main__':
  main()
