"""Official ViT/hybrid names <-> timm and Hugging Face state-dict names.

One table of rules per layout serves both directions, so a round trip
official -> torch -> official is exact (transposes and reshapes only):
- Dense kernels are (in, out), torch Linear weights (out, in);
- conv kernels are HWIO, torch's OIHW;
- attention projections are per head: query/key/value kernels (D, H, D/H)
  and out (H, D/H, D); timm fuses q, k, v into one `attn.qkv` (3D, D)
  Linear (rows q, then k, then v), Hugging Face keeps three D x D Linears;
- LayerNorm/GroupNorm `scale` is torch's `weight`; the hybrid's GroupNorm
  is (C,) in both (as `npz.load` returns it).
Keys on the official side are `/`-joined Linen names, as `npz.flatten` of
`npz.load` gives them.
"""

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from vit_jax.checkpoint import npz

TIMM = 'timm'
HF = 'hf'


@dataclasses.dataclass(frozen=True)
class Rule:
  """One torch tensor and the official arrays it is made of."""
  torch_key: str
  official_keys: Tuple[str, ...]
  kind: str  # raw, dense, conv, heads_in, heads_bias, heads_out, qkv(_bias)


@dataclasses.dataclass(frozen=True)
class Layout:
  """What decides a model's table: read off a file or a params tree."""
  depth: int
  has_cls: bool
  has_pre_logits: bool
  has_head: bool
  resnet_units: Optional[Tuple[int, ...]] = None  # None: not a hybrid.
  hf_prefix: str = ''  # 'vit.' in ViTForImageClassification files.


def _linear(tk: str, ok: str, kind: str = 'dense') -> List[Rule]:
  bias = 'heads_bias' if kind == 'heads_in' else 'raw'
  return [Rule(f'{tk}.weight', (f'{ok}/kernel',), kind),
          Rule(f'{tk}.bias', (f'{ok}/bias',), bias)]


def _norm(tk: str, ok: str) -> List[Rule]:
  return [Rule(f'{tk}.weight', (f'{ok}/scale',), 'raw'),
          Rule(f'{tk}.bias', (f'{ok}/bias',), 'raw')]


def _timm_block(i: int) -> List[Rule]:
  t, o = f'blocks.{i}.', f'Transformer/encoderblock_{i}/'
  att = o + 'MultiHeadDotProductAttention_0/'
  qkv = tuple(f'{att}{n}/' for n in ('query', 'key', 'value'))
  return (_norm(t + 'norm1', o + 'LayerNorm_0') + [
      Rule(t + 'attn.qkv.weight', tuple(p + 'kernel' for p in qkv), 'qkv'),
      Rule(t + 'attn.qkv.bias', tuple(p + 'bias' for p in qkv), 'qkv_bias')]
          + _linear(t + 'attn.proj', att + 'out', 'heads_out')
          + _norm(t + 'norm2', o + 'LayerNorm_1')
          + _linear(t + 'mlp.fc1', o + 'MlpBlock_0/Dense_0')
          + _linear(t + 'mlp.fc2', o + 'MlpBlock_0/Dense_1'))


def _hf_block(i: int, prefix: str) -> List[Rule]:
  t, o = f'{prefix}encoder.layer.{i}.', f'Transformer/encoderblock_{i}/'
  att = o + 'MultiHeadDotProductAttention_0/'
  rules = _norm(t + 'layernorm_before', o + 'LayerNorm_0')
  for name in ('query', 'key', 'value'):
    rules += _linear(f'{t}attention.attention.{name}', att + name,
                     'heads_in')
  return (rules + _linear(t + 'attention.output.dense', att + 'out',
                          'heads_out')
          + _norm(t + 'layernorm_after', o + 'LayerNorm_1')
          + _linear(t + 'intermediate.dense', o + 'MlpBlock_0/Dense_0')
          + _linear(t + 'output.dense', o + 'MlpBlock_0/Dense_1'))


def _timm_resnet(units: Sequence[int]) -> List[Rule]:
  """timm's ResNetV2 backbone (`stem.` only when it has stages)."""
  root = 'patch_embed.backbone.' + ('stem.' if units else '')
  rules = [Rule(root + 'conv.weight', ('conv_root/kernel',), 'conv')]
  rules += _norm(root + 'norm', 'gn_root')
  for s, n in enumerate(units):
    for u in range(n):
      t = f'patch_embed.backbone.stages.{s}.blocks.{u}.'
      o = f'block{s + 1}/unit{u + 1}/'
      pairs = [('conv1', 'gn1', 'norm1'), ('conv2', 'gn2', 'norm2'),
               ('conv3', 'gn3', 'norm3')]
      if u == 0:
        pairs.insert(0, ('downsample.conv', 'gn_proj', 'downsample.norm'))
      for conv, gn, norm in pairs:
        oconv = 'conv_proj' if conv == 'downsample.conv' else conv
        rules.append(Rule(f'{t}{conv}.weight', (f'{o}{oconv}/kernel',),
                          'conv'))
        rules += _norm(t + norm, o + gn)
  return rules


def rules(kind: str, layout: Layout) -> List[Rule]:
  """The table of `kind` (TIMM or HF) for a model described by `layout`."""
  if kind == TIMM:
    rule_list = []
    if layout.resnet_units is not None:
      rule_list += _timm_resnet(layout.resnet_units)
    names = dict(cls='cls_token', pos='pos_embed', emb='patch_embed.proj',
                 norm='norm', pre='pre_logits.fc', head='head')
    blocks = [_timm_block(i) for i in range(layout.depth)]
  else:
    p = layout.hf_prefix
    rule_list = []
    names = dict(cls=f'{p}embeddings.cls_token',
                 pos=f'{p}embeddings.position_embeddings',
                 emb=f'{p}embeddings.patch_embeddings.projection',
                 norm=f'{p}layernorm', pre=f'{p}pooler.dense',
                 head='classifier')
    blocks = [_hf_block(i, p) for i in range(layout.depth)]
  if layout.has_cls:
    rule_list.append(Rule(names['cls'], ('cls',), 'raw'))
  rule_list.append(Rule(names['pos'],
                        ('Transformer/posembed_input/pos_embedding',), 'raw'))
  rule_list += _linear(names['emb'], 'embedding', 'conv')
  for block in blocks:
    rule_list += block
  rule_list += _norm(names['norm'], 'Transformer/encoder_norm')
  if layout.has_pre_logits:
    rule_list += _linear(names['pre'], 'pre_logits')
  if layout.has_head:
    rule_list += _linear(names['head'], 'head')
  return rule_list


def _to_torch(kind: str, xs: List[np.ndarray]) -> np.ndarray:
  x = xs[0]
  if kind == 'dense':
    return x.T
  if kind == 'conv':
    return x.transpose(3, 2, 0, 1)
  if kind in ('heads_in', 'qkv'):
    return np.concatenate([k.reshape(k.shape[0], -1).T for k in xs])
  if kind in ('heads_bias', 'qkv_bias'):
    return np.concatenate([b.reshape(-1) for b in xs])
  if kind == 'heads_out':
    return x.reshape(-1, x.shape[-1]).T
  return x


def _from_torch(kind: str, w: np.ndarray, heads: int) -> List[np.ndarray]:
  """The inverse of `_to_torch`; raises ValueError on a wrong shape."""
  if kind == 'dense':
    if w.ndim != 2:
      raise ValueError('expected a 2-d Linear weight')
    return [w.T]
  if kind == 'conv':
    if w.ndim != 4:
      raise ValueError('expected a 4-d conv weight (out, in, h, w)')
    return [w.transpose(2, 3, 1, 0)]
  if kind in ('qkv', 'qkv_bias'):
    if w.shape[0] % 3:
      raise ValueError('rows are not 3 x hidden (q, k, v)')
    single = 'heads_in' if kind == 'qkv' else 'heads_bias'
    return [_from_torch(single, part, heads)[0] for part in np.split(w, 3)]
  if kind == 'heads_in':
    if w.ndim != 2:
      raise ValueError('expected a 2-d Linear weight')
    return [w.T.reshape(w.shape[1], heads, -1)]
  if kind == 'heads_bias':
    return [w.reshape(heads, -1)]
  if kind == 'heads_out':
    if w.ndim != 2:
      raise ValueError('expected a 2-d Linear weight')
    return [w.T.reshape(heads, -1, w.shape[0])]
  return [w]


def to_torch(params, table: List[Rule]) -> Dict[str, np.ndarray]:
  """{torch key: float32 array} of a params tree (Linen names)."""
  flat = npz.flatten(params)
  return {r.torch_key: np.ascontiguousarray(
      _to_torch(r.kind, [np.asarray(flat[k], np.float32)
                         for k in r.official_keys]))
          for r in table}


def from_torch(state: Dict[str, np.ndarray], table: List[Rule], *,
               heads: int, source: str) -> npz.Params:
  """The params tree (Linen names) of a torch state dict.

  Raises:
    CheckpointError: naming `source` and the first missing, unexpected or
      wrongly shaped keys.
  """
  missing = [r.torch_key for r in table if r.torch_key not in state]
  used = {r.torch_key for r in table}
  extra = [k for k in state if k not in used]
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'{len(missing)} missing keys (first: '
                   f'{", ".join(missing[:5])})')
    if extra:
      parts.append(f'{len(extra)} unexpected keys (first: '
                   f'{", ".join(extra[:5])})')
    raise npz.CheckpointError(
        f'{source} does not have the keys of this model: '
        + '; '.join(parts) + '. Only ViT and ResNet+ViT hybrids in the '
        'layout of the original release convert.')
  flat = {}
  for r in table:
    w = np.asarray(state[r.torch_key], np.float32)
    try:
      arrays = _from_torch(r.kind, w, heads)
    except ValueError as e:
      raise npz.CheckpointError(
          f'{source}: {r.torch_key} has shape {tuple(w.shape)}: {e} '
          f'({heads} heads).') from None
    flat.update(zip(r.official_keys, arrays))
  return npz.unflatten(flat)
