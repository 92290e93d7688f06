"""ResNet root of the hybrid ViT models (R50+ViT-B_16, R26+ViT-B_32, ...).

Names follow the official checkpoints: conv_root, gn_root, block{s}/unit{u}
with conv1..3, gn1..3 and (first unit of a stage) conv_proj/gn_proj; stages
and units are 1-based. Convolutions are weight-standardised and bias-free;
GroupNorm has 32 groups and epsilon 1e-6.
"""

from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array
Dtype = Any


def weight_standardize(w: Array, axis: Sequence[int], eps: float) -> Array:
  """(w - mean) / (std + eps) over `axis`, population std, as the original."""
  w = w - jnp.mean(w, axis=axis, keepdims=True)
  return w / (jnp.std(w, axis=axis, keepdims=True) + eps)


class StdConv(nn.Conv):
  """`nn.Conv` whose HWIO kernel is weight-standardised when it is read.

  A subclass of `nn.Conv`, as in the original (so its fields, e.g.
  `use_bias`, `padding`, work): the stored kernel stays raw, as in the
  checkpoints, and is standardised over the H, W and input axes, in
  float32, each time the convolution reads it.
  """

  def param(self, name: str, init_fn: Callable[..., Any], *init_args,
            **init_kwargs) -> Any:
    value = super().param(name, init_fn, *init_args, **init_kwargs)
    if name != 'kernel':
      return value
    standardized = weight_standardize(value.astype(jnp.float32), (0, 1, 2),
                                      1e-5)
    return standardized.astype(value.dtype)


class ResidualUnit(nn.Module):
  """Bottleneck unit: 1x1 -> 3x3 (strided) -> 1x1, output 4 x features."""

  features: int
  strides: Tuple[int, int] = (1, 1)
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    gn = lambda name, **a: nn.GroupNorm(name=name, epsilon=1e-6, **a, **kw)
    residual = x
    if x.shape[-1] != self.features * 4 or self.strides != (1, 1):
      residual = StdConv(self.features * 4, (1, 1), self.strides,
                         use_bias=False, name='conv_proj', **kw)(residual)
      residual = gn('gn_proj')(residual)
    y = StdConv(self.features, (1, 1), use_bias=False, name='conv1', **kw)(x)
    y = nn.relu(gn('gn1')(y))
    y = StdConv(self.features, (3, 3), self.strides, use_bias=False,
                name='conv2', **kw)(y)
    y = nn.relu(gn('gn2')(y))
    y = StdConv(self.features * 4, (1, 1), use_bias=False, name='conv3',
                **kw)(y)
    y = gn('gn3', scale_init=nn.initializers.zeros)(y)
    return nn.relu(residual + y)


class ResNetStage(nn.Module):
  """`block_size` residual units; only the first one strides."""

  block_size: int
  nout: int  # Bottleneck width (the original's name); output is 4 x nout.
  first_stride: Tuple[int, int]
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = ResidualUnit(self.nout, self.first_stride, name='unit1', **kw)(x)
    for i in range(1, self.block_size):
      x = ResidualUnit(self.nout, name=f'unit{i + 1}', **kw)(x)
    return x


def resnet_root(x: Array, *, num_layers: Sequence[int], width_factor: float,
                dtype: Dtype = jnp.float32,
                param_dtype: Dtype = jnp.float32) -> Array:
  """Root conv 7x7/2 + GroupNorm + ReLU + max-pool 3x3/2, then the stages.

  Call it inside the `nn.compact` method of the model: its submodules bind to
  that model, so the parameters stay top-level (`conv_root`, `gn_root`,
  `block1`, ...) exactly as in the checkpoints.
  """
  kw = dict(dtype=dtype, param_dtype=param_dtype)
  width = int(64 * width_factor)
  x = StdConv(width, (7, 7), (2, 2), use_bias=False, name='conv_root',
              **kw)(x)
  x = nn.GroupNorm(name='gn_root', epsilon=1e-6, **kw)(x)
  x = nn.relu(x)
  x = nn.max_pool(x, window_shape=(3, 3), strides=(2, 2), padding='SAME')
  for i, block_size in enumerate(num_layers):
    x = ResNetStage(block_size, width * 2**i,
                    first_stride=(1, 1) if i == 0 else (2, 2),
                    name=f'block{i + 1}', **kw)(x)
  return x
