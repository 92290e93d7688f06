"""Capturing attention weights from a ViT and the geometry of its tokens.

`models_vit.MultiHeadDotProductAttention` sows its softmax weights into the
`intermediates` collection when that collection is mutable, under
`Transformer/encoderblock_{i}/MultiHeadDotProductAttention_0/
attention_weights` (a tuple with one (batch, heads, q, k) array per call).
Nothing is renamed, so official checkpoints load unchanged. Works for plain
ViTs and hybrids (ResNet root); MLP-Mixer has no attention.
"""

import collections
import re
from typing import Any, Callable, List, NamedTuple, Sequence, Tuple

from flax import traverse_util
import jax
import jax.numpy as jnp

from vit_jax import errors
from vit_jax import models

Array = jax.Array
Params = Any

_BLOCK = re.compile(r'encoderblock_(\d+)$')
_CACHE_SIZE = 8
_jit_cache = collections.OrderedDict()


class Geometry(NamedTuple):
  """How tokens map to the image.

  grid: (gh, gw) patch tokens per column and row.
  patch: (sh, sw) pixels per patch token (for hybrids the ResNet stride
    times the patch size).
  num_prefix_tokens: tokens before the patches (1 class token, 0 for GAP).
  """
  grid: Tuple[int, int]
  patch: Tuple[int, int]
  num_prefix_tokens: int


def check_has_attention(model) -> None:
  """Raises a clear error for models without self-attention (MLP-Mixer)."""
  if isinstance(model, models.MlpMixer):
    raise errors.UserError(
        f'{getattr(model, "model_name", None) or "MLP-Mixer"} is an MLP-Mixer:'
        ' it has no attention weights, so attention distance and rollout are '
        'undefined. Use a ViT or hybrid model.')
  if getattr(model, 'transformer', None) is None:
    raise ValueError(f'{type(model).__name__} has no transformer encoder, '
                     'so it has no attention weights to capture.')


def geometry(model, image_hw: Sequence[int]) -> Geometry:
  """Grid, pixels per token and prefix-token count for a ViT at H x W."""
  check_has_attention(model)
  sh, sw = models.patch_stride(model)
  h, w = (int(v) for v in image_hw)
  if h % sh or w % sw:
    raise errors.UserError(
        f'image size {h}x{w} is not a multiple of the token stride '
        f'{sh}x{sw} of {model.model_name}.')
  prefix = int(models.has_class_token(model))
  return Geometry((h // sh, w // sw), (sh, sw), prefix)


def layer_weights(intermediates) -> List[Array]:
  """Sown attention weights, one (B, H, T, T) array per layer, in order."""
  found = {}
  flat = traverse_util.flatten_dict(intermediates, keep_empty_nodes=False)
  for path, value in flat.items():
    if path[-1] != 'attention_weights':
      continue
    blocks = [int(m.group(1)) for p in path if (m := _BLOCK.match(p))]
    if not blocks:
      continue
    # A tuple with one entry per call; the encoder calls each block once.
    found[blocks[-1]] = value[-1] if isinstance(value, tuple) else value
  if not found:
    raise ValueError(
        'the model did not sow any attention weights into `intermediates` '
        '(expected .../encoderblock_{i}/.../attention_weights).')
  return [found[i] for i in sorted(found)]


def forward_with_attention(model, params: Params,
                           images: Array) -> Tuple[Array, List[Array]]:
  """One forward pass: logits (B, classes) and per-layer weights (traceable)."""
  check_has_attention(model)
  logits, state = model.apply({'params': params}, images, train=False,
                              mutable=['intermediates'])
  return logits, layer_weights(state['intermediates'])


def cached_jit(kind: str, model, build: Callable[[Any], Callable]):
  """A jitted closure over `model`, reused for equal models.

  Flax modules holding ConfigDicts are unhashable, so they cannot be static
  jit arguments; their repr lists every field and serves as the key.
  """
  key = (kind, repr(model))
  if key not in _jit_cache:
    _jit_cache[key] = jax.jit(build(model))
    while len(_jit_cache) > _CACHE_SIZE:
      _jit_cache.popitem(last=False)
  return _jit_cache[key]


def _build_capture(model):
  def capture(params, images):
    _, weights = forward_with_attention(model, params, images)
    return jnp.stack(weights).astype(jnp.float32)
  return capture


def attention_weights(model, params: Params, images: Array) -> Array:
  """Every layer's attention weights from one forward pass.

  Args:
    model: a `models.VisionTransformer` (plain or hybrid).
    params: its parameters (the 'params' collection).
    images: (B, H, W, 3) in [-1, 1].

  Returns:
    (L, B, H, T, T) float32: layers, images, heads, queries, keys.
    Memory is L*B*H*T*T*4 bytes (2.9 GB for ViT-B/16 at 224 px with B=128):
    for whole datasets prefer `analysis.make_analysis_fn`, which reduces each
    layer inside the jit.
  """
  check_has_attention(model)
  if images.ndim != 4:
    raise ValueError(f'images must be (B, H, W, C), got {images.shape}.')
  return cached_jit('capture', model, _build_capture)(params, images)
