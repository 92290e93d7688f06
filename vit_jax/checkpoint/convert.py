"""Import timm / Hugging Face ViT weights as an official `.npz`, and back.

  python -m vit_jax.checkpoint convert vit_base_patch16_224.safetensors \
      --to=checkpoints/ViT-B_16.npz
  python -m vit_jax.checkpoint convert hf_folder/ --to=ViT-B_16.npz

`convert(src, to=..., model_name=None)` reads
- a timm ViT or ResNet+ViT hybrid state dict (`.safetensors`, or `.pth` /
  `.bin` where torch is installed);
- a Hugging Face `ViTModel` / `ViTForImageClassification` folder
  (config.json + model.safetensors, or pytorch_model.bin with torch),
derives the registered model name from the shapes (hidden size, depth,
MLP width, patch, class token, ResNet stages; heads from config.json or
the registered config) unless `model_name` is given, checks the result
against that model (as `download` does) and writes the official layout
atomically. Other architectures (DeiT's distillation token, CLIP's
pre-norm, Swin, registers, LayerScale) raise `CheckpointError` naming the
file and the first keys that do not fit. `to_timm_file` and `to_hf_folder`
write the other direction.
"""

import json
import os
import re
from typing import Dict, Optional, Tuple

import numpy as np

from vit_jax import models
from vit_jax.checkpoint import files
from vit_jax.checkpoint import npz
from vit_jax.checkpoint import pretrained
from vit_jax.checkpoint import remote
from vit_jax.checkpoint import safetensors_file
from vit_jax.checkpoint import torch_layout as tl
from vit_jax.configs import models as model_configs

HF_WEIGHTS = ('model.safetensors', 'pytorch_model.bin')
# Keys that mark a known architecture this layout cannot hold.
_FOREIGN = (('dist_token', 'a DeiT model with a distillation token'),
            ('head_dist', 'a DeiT model with a distillation head'),
            ('ln_pre', 'a CLIP vision tower (pre-norm ln_pre)'),
            ('norm_pre', 'a CLIP-style ViT (pre-norm norm_pre)'),
            ('layers.0.blocks', 'a Swin Transformer'),
            ('reg_token', 'a ViT with register tokens'),
            ('.ls1.', 'a ViT with LayerScale'),
            ('fc_norm', 'a timm ViT with fc_norm (norm after pooling)'),
            ('q_norm', 'a ViT with query/key norm'))


def _read_torch(path: str) -> Dict[str, np.ndarray]:
  """A `.pth` / `.bin` state dict, through torch (never pickled code)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise npz.CheckpointError(
        f'{path}: reading .pth/.bin needs PyTorch, which is not installed. '
        'Install torch, or save the state dict as .safetensors.') from None
  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise npz.CheckpointError(f'{path} is not a readable torch state dict: '
                              f'{type(e).__name__}: {e}') from None
  for wrapper in ('state_dict', 'model'):
    if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
      state = state[wrapper]
  return {k: v.float().numpy() for k, v in state.items()
          if hasattr(v, 'numpy')}


def read_state_dict(path) -> Dict[str, np.ndarray]:
  """{key: array} of a .safetensors, .pth or .bin file."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise npz.CheckpointError(f'{path} does not exist.')
  if path.endswith('.safetensors'):
    return safetensors_file.read(path)[0]
  if path.endswith(('.pth', '.pt', '.bin')):
    return _read_torch(path)
  raise npz.CheckpointError(
      f'{path}: unknown weights format; expected .safetensors, .pth or '
      '.bin (or a Hugging Face folder with config.json).')


def _check_known(state, source: str) -> None:
  for marker, what in _FOREIGN:
    found = [k for k in state if marker in k]
    if found:
      raise npz.CheckpointError(
          f'{source} holds {what} (key {found[0]}), not a ViT of the '
          'original release; only ViT and ResNet+ViT hybrids convert.')


def _count(state, pattern: str) -> int:
  regex = re.compile(pattern)
  return len({m.group(1) for k in state if (m := regex.match(k))})


def _layout(state, prefix: str, kind: str) -> tl.Layout:
  """Depth, class token, heads and ResNet stages read off the keys."""
  block = r'blocks\.(\d+)\.' if kind == tl.TIMM else (
      re.escape(prefix) + r'encoder\.layer\.(\d+)\.')
  units = None
  if any(k.startswith('patch_embed.backbone.') for k in state):
    stages = _count(state, r'patch_embed\.backbone\.stages\.(\d+)\.')
    units = tuple(_count(state, rf'patch_embed\.backbone\.stages\.{s}\.'
                         r'blocks\.(\d+)\.') for s in range(stages))
  pre = 'pre_logits.fc.weight' if kind == tl.TIMM else (
      f'{prefix}pooler.dense.weight')
  head = 'head.weight' if kind == tl.TIMM else 'classifier.weight'
  cls = 'cls_token' if kind == tl.TIMM else f'{prefix}embeddings.cls_token'
  return tl.Layout(depth=_count(state, block), has_cls=cls in state,
                   has_pre_logits=pre in state, has_head=head in state,
                   resnet_units=units, hf_prefix=prefix)


def _facts(state, layout: tl.Layout, kind: str) -> Dict[str, object]:
  """What the file says about the model, for matching a registered one."""
  table = {r.official_keys[0]: r.torch_key for r in tl.rules(kind, layout)}

  def shape(official_key):
    return tuple(np.shape(state.get(table[official_key], ())))

  emb = shape('embedding/kernel')
  mlp = shape('Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel')
  root = shape('conv_root/kernel') if layout.resnet_units is not None else ()
  return {'hidden_size': emb[0] if emb else None,
          'num_layers': layout.depth,
          'mlp_dim': mlp[0] if mlp else None,
          'patch': tuple(emb[2:]) if len(emb) == 4 else None,
          'class_token': layout.has_cls,
          'resnet': (layout.resnet_units, root[0] // 64 if root else None)
                    if layout.resnet_units is not None else None}


def _config_facts(config) -> Dict[str, object]:
  resnet = config.get('resnet')
  return {'hidden_size': config.hidden_size,
          'num_layers': config.transformer.num_layers,
          'mlp_dim': config.transformer.mlp_dim,
          'patch': tuple(config.patches.size),
          'class_token': models.has_class_token(config),
          'resnet': (tuple(resnet.num_layers), resnet.width_factor)
                    if resnet is not None else None}


def match_model(facts: Dict[str, object], *, source: str,
                heads: Optional[int] = None) -> str:
  """The registered ViT config with these facts ('token'/'gap' first)."""
  found = []
  for name, config in model_configs.MODEL_CONFIGS.items():
    if models.is_mixer(config) or _config_facts(config) != facts:
      continue
    if heads is not None and config.transformer.num_heads != heads:
      continue
    found.append((config.classifier not in ('token', 'gap'), name))
  if not found:
    seen = ', '.join(f'{k}={v}' for k, v in facts.items())
    raise npz.CheckpointError(
        f'{source}: no registered model has {seen}'
        + (f', num_heads={heads}' if heads else '') + '. Pass --model=NAME '
        'if a registered config fits (see vit_jax/configs/models.py).')
  return min(found)[1]


def _hf_read(folder: str) -> Tuple[Dict[str, np.ndarray], dict, str]:
  config_path = os.path.join(folder, 'config.json')
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise npz.CheckpointError(f'{config_path}: cannot read the Hugging Face '
                              f'config ({e}).') from None
  if config.get('model_type') != 'vit':
    raise npz.CheckpointError(
        f'{config_path}: model_type {config.get("model_type")!r} is not '
        "'vit'; only ViTModel / ViTForImageClassification folders convert.")
  for name in HF_WEIGHTS:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return read_state_dict(path), config, path
  raise npz.CheckpointError(f'{folder} has no {" or ".join(HF_WEIGHTS)}.')


def from_torch_layout(state, *, kind: str, source: str,
                      model_name: Optional[str] = None,
                      heads: Optional[int] = None) -> Tuple[npz.Params, str]:
  """(params in Linen names, model name) of a timm or HF state dict."""
  _check_known(state, source)
  prefix = 'vit.' if any(k.startswith('vit.') for k in state) else ''
  layout = _layout(state, prefix, kind)
  if model_name is None:
    model_name = match_model(_facts(state, layout, kind), source=source,
                             heads=heads)
  config = models.get_model_config(model_name)
  params = tl.from_torch(state, tl.rules(kind, layout), source=source,
                         heads=heads or config.transformer.num_heads)
  expected = remote.expected_shapes(model_name, params)
  if 'head' not in params:  # A headless file (HF ViTModel) is complete.
    expected.pop('head', None)
  params = pretrained.inspect_params(params=params, expected=expected,
                                     source=f'{source} (model {model_name})')
  return params, model_name


def load_torch(src, *, model_name: Optional[str] = None
               ) -> Tuple[npz.Params, str]:
  """(params, model name) of a timm file or a Hugging Face folder."""
  src = os.fspath(src)
  if os.path.isdir(src):
    state, config, source = _hf_read(src)
    return from_torch_layout(state, kind=tl.HF, source=source,
                             model_name=model_name,
                             heads=config.get('num_attention_heads'))
  state = read_state_dict(src)
  kind = tl.HF if any(k.startswith(('vit.', 'embeddings.'))
                      for k in state) else tl.TIMM
  return from_torch_layout(state, kind=kind, source=src,
                           model_name=model_name)


def convert(src, *, to, model_name: Optional[str] = None) -> str:
  """Writes the official `.npz` of a timm file / HF folder; returns its
  model name. `to` appears atomically, or not at all."""
  params, model_name = load_torch(src, model_name=model_name)
  npz.save(params, to)
  return model_name


def layout_of(params) -> tl.Layout:
  """The torch-table description of a params tree (Linen names)."""
  flat = npz.flatten(params)
  depth = len({k.split('/')[1] for k in flat
               if k.startswith('Transformer/encoderblock_')})
  units = None
  if 'conv_root/kernel' in flat:
    stages = sorted({k.split('/')[0] for k in flat if k.startswith('block')},
                    key=npz.natural_key)
    units = tuple(len({k.split('/')[1] for k in flat
                       if k.startswith(s + '/')}) for s in stages)
  return tl.Layout(depth=depth, has_cls='cls' in flat,
                   has_pre_logits='pre_logits/kernel' in flat,
                   has_head='head/kernel' in flat, resnet_units=units)


def to_timm(params) -> Dict[str, np.ndarray]:
  """timm's state dict (key -> float32 array) of a ViT/hybrid params tree."""
  return tl.to_torch(params, tl.rules(tl.TIMM, layout_of(params)))


def to_hf(params, model_name: str) -> Tuple[Dict[str, np.ndarray], dict]:
  """(state dict, config.json dict) of a Hugging Face ViT for `params`.

  ViTForImageClassification when params have a head (a `pre_logits` layer
  then travels as `vit.pooler.dense`, which that class ignores), else
  ViTModel with the pooler.
  """
  config = models.get_model_config(model_name)
  if config.get('resnet') is not None:
    raise npz.CheckpointError(f'{model_name} is a hybrid; Hugging Face ViT '
                              'has no ResNet root (use the timm layout).')
  layout = layout_of(params)
  classify = layout.has_head
  layout = tl.Layout(**{**layout.__dict__,
                        'hf_prefix': 'vit.' if classify else ''})
  state = tl.to_torch(params, tl.rules(tl.HF, layout))
  posemb = pretrained.get_posemb(params)
  grid = int(np.sqrt(posemb.shape[1] - int(layout.has_cls)))
  hf = {'architectures': ['ViTForImageClassification' if classify
                          else 'ViTModel'],
        'model_type': 'vit', 'hidden_size': config.hidden_size,
        'num_hidden_layers': config.transformer.num_layers,
        'num_attention_heads': config.transformer.num_heads,
        'intermediate_size': config.transformer.mlp_dim,
        'hidden_act': 'gelu_pytorch_tanh',  # The original's GELU.
        'layer_norm_eps': 1e-6, 'qkv_bias': True, 'num_channels': 3,
        'patch_size': config.patches.size[0],
        'image_size': grid * config.patches.size[0],
        'hidden_dropout_prob': 0.0, 'attention_probs_dropout_prob': 0.0}
  if classify:
    n = np.shape(npz.flatten(params)['head/kernel'])[-1]
    hf['id2label'] = {str(i): f'LABEL_{i}' for i in range(n)}
  return state, hf


def to_timm_file(params, path) -> None:
  """Writes `to_timm(params)` as a .safetensors file, atomically."""
  safetensors_file.write(path, to_timm(params), {'format': 'pt'})


def to_hf_folder(params, folder, *, model_name: str) -> None:
  """Writes config.json + model.safetensors of `to_hf` into `folder`."""
  state, config = to_hf(params, model_name)
  os.makedirs(folder, exist_ok=True)
  safetensors_file.write(os.path.join(folder, HF_WEIGHTS[0]), state,
                         {'format': 'pt'})
  files.atomic_write(os.path.join(folder, 'config.json'),
                     lambda f: json.dump(config, f, indent=2), binary=False)
