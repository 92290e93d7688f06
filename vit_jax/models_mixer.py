"""MLP-Mixer in Flax Linen, with the parameter names of the official files.

stem/{kernel,bias}, MixerBlock_{i}/{LayerNorm_0, token_mixing/Dense_{0,1},
LayerNorm_1, channel_mixing/Dense_{0,1}}, pre_head_layer_norm, head.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any


class MlpBlock(nn.Module):
  """Dense -> GELU -> Dense along the last axis."""

  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.gelu(nn.Dense(self.mlp_dim, **kw)(x))
    return nn.Dense(x.shape[-1], **kw)(y)


class MixerBlock(nn.Module):
  """Token mixing (MLP across patches) then channel mixing, both pre-LN."""

  tokens_mlp_dim: int
  channels_mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.LayerNorm(epsilon=1e-6, **kw)(x)
    y = jnp.swapaxes(y, 1, 2)
    y = MlpBlock(self.tokens_mlp_dim, name='token_mixing', **kw)(y)
    x = x + jnp.swapaxes(y, 1, 2)
    y = nn.LayerNorm(epsilon=1e-6, **kw)(x)
    return x + MlpBlock(self.channels_mlp_dim, name='channel_mixing', **kw)(y)


class MlpMixer(nn.Module):
  """MLP-Mixer. `__call__(images, *, train)` -> float32 logits.

  The token-mixing weights fix the number of patches, so a checkpoint only
  runs at the resolution it was trained for.
  """

  patches: Any
  num_classes: Optional[int]
  num_blocks: int
  hidden_dim: int
  tokens_mlp_dim: int
  channels_mlp_dim: int
  model_name: Optional[str] = None
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, *, train: bool) -> Array:
    del train  # Mixer has no dropout.
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    patch = tuple(self.patches['size'])
    x = nn.Conv(self.hidden_dim, patch, strides=patch, name='stem', **kw)(
        inputs.astype(self.dtype))
    n, h, w, c = x.shape
    x = jnp.reshape(x, (n, h * w, c))
    for _ in range(self.num_blocks):
      x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim, **kw)(x)
    x = nn.LayerNorm(epsilon=1e-6, name='pre_head_layer_norm', **kw)(x)
    x = jnp.mean(x, axis=1)
    if self.num_classes:
      x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros,
                   name='head', **kw)(x)
    return x.astype(jnp.float32)
