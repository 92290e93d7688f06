"""Vision Transformer (ViT) in Flax Linen.

Submodule and parameter names are frozen to the layout of the official
checkpoints after pre-Linen renaming (see `checkpoint.load`):

  cls, embedding/{kernel,bias}, Transformer/posembed_input/pos_embedding,
  Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_0,
  LayerNorm_1, MlpBlock_0/Dense_{0,1}}, Transformer/encoder_norm,
  pre_logits, head.

Renaming a submodule here breaks every official checkpoint.
"""

from typing import Any, Callable, Optional, Tuple, Type

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models_resnet

Array = jax.Array
Dtype = Any
Initializer = Callable[..., Array]

# Attention implementations selectable with `attention_impl`.
ATTENTION_IMPLS = ('einsum', 'xla', 'cudnn')
# Classifiers whose model prepends a class token (see models.has_class_token).
CLASS_TOKEN_CLASSIFIERS = ('token', 'token_unpooled')


class IdentityLayer(nn.Module):
  """Identity with a name, so that `pre_logits` exists in every tree."""

  @nn.compact
  def __call__(self, x: Array) -> Array:
    return x


class AddPositionEmbs(nn.Module):
  """Adds a learned position embedding of shape (1, tokens, hidden)."""

  posemb_init: Initializer
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array) -> Array:
    if inputs.ndim != 3:
      raise ValueError(
          f'AddPositionEmbs expects (batch, tokens, hidden), got {inputs.shape}.'
      )
    shape = (1, inputs.shape[1], inputs.shape[2])
    pe = self.param('pos_embedding', self.posemb_init, shape, self.param_dtype)
    return inputs + pe.astype(self.dtype)


class MlpBlock(nn.Module):
  """Dense -> GELU (tanh approximation) -> Dense, with dropout."""

  # Field order as in the original release (positional construction).
  mlp_dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  out_dim: Optional[int] = None  # None: the input width.
  dropout_rate: float = 0.1
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  bias_init: Initializer = nn.initializers.normal(stddev=1e-6)

  @nn.compact
  def __call__(self, inputs: Array, *, deterministic: bool) -> Array:
    dense = lambda features: nn.Dense(  # pylint: disable=g-long-lambda
        features, dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=self.kernel_init, bias_init=self.bias_init)
    x = dense(self.mlp_dim)(inputs)
    x = nn.gelu(x)  # approximate=True, as in the original release.
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
    x = dense(self.out_dim or inputs.shape[-1])(x)
    return nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)


class DenseGeneralParams(nn.Module):
  """The kernel (in_features, *features) and bias of an `nn.DenseGeneral`.

  Creates exactly the parameters (names, shapes, initial values) that
  `nn.DenseGeneral(features, axis=-1)` creates, but returns them instead of
  applying them, so that several projections can run as one matmul.
  """

  features: Tuple[int, ...]
  kernel_init: Initializer
  bias_init: Initializer
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int) -> Tuple[Array, Array]:
    flat_out = int(np.prod(self.features))

    def kernel_init(rng, shape, dtype):
      # DenseGeneral initialises the flattened 2-D kernel (fan-in/out).
      return self.kernel_init(rng, (in_features, flat_out),
                              dtype).reshape(shape)

    def bias_init(rng, shape, dtype):
      return self.bias_init(rng, (flat_out,), dtype).reshape(shape)

    kernel = self.param('kernel', kernel_init,
                        (in_features,) + tuple(self.features),
                        self.param_dtype)
    bias = self.param('bias', bias_init, tuple(self.features),
                      self.param_dtype)
    return kernel, bias


class MultiHeadDotProductAttention(nn.Module):
  """Multi-head self-attention with the parameter layout of Flax's module.

  Parameters: query/key/value kernels (hidden, heads, head_dim) with biases
  (heads, head_dim), out kernel (heads, head_dim, hidden) with bias (hidden,),
  exactly as `flax.linen.MultiHeadDotProductAttention` creates them, so the
  official checkpoints load unchanged. Written here (rather than used from
  Flax) to control the attention kernel and to always offer the weights to
  `sow`: call the model with `mutable=['intermediates']` to capture them
  under `intermediates/.../attention_weights`, shape (batch, heads, q, k).

  The three input projections run as one matmul with the kernels
  concatenated at run time (a (hidden, 3 * hidden) product is faster than
  three (hidden, hidden) ones, notably on CPU), and the scores are computed
  in the (batch, heads, tokens, head_dim) layout that batched matmuls want.

  `attention_impl`: 'einsum' (explicit softmax, the reference; required for
  capture and attention dropout), 'xla' or 'cudnn' (`jax.nn.dot_product_
  attention`, fused on GPU).
  """

  num_heads: int
  dropout_rate: float = 0.0
  attention_impl: str = 'einsum'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool,
               num_queries: Optional[int] = None) -> Array:
    """Self-attention of `x` (..., tokens, hidden).

    `num_queries`: only the first `num_queries` tokens attend (all tokens
    are keys and values) and only their outputs are returned; the values are
    those of the full computation's first rows.
    """
    hidden = x.shape[-1]
    if hidden % self.num_heads:
      raise ValueError(
          f'hidden size {hidden} is not divisible by num_heads '
          f'{self.num_heads}.')
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f'attention_impl={self.attention_impl!r}; expected one '
                       f'of {ATTENTION_IMPLS}.')
    q, k, v = self._project_qkv(x, hidden // self.num_heads, num_queries)
    capture = self.is_mutable_collection('intermediates')
    use_dropout = not deterministic and self.dropout_rate > 0
    if self.attention_impl == 'einsum' or capture or use_dropout:
      out = self._einsum_attention(q, k, v, use_dropout)
    else:
      out = jax.nn.dot_product_attention(
          q, k, v, implementation=self.attention_impl)
    return nn.DenseGeneral(
        features=hidden, axis=(-2, -1), dtype=self.dtype,
        param_dtype=self.param_dtype, kernel_init=self.kernel_init,
        bias_init=self.bias_init, name='out')(out)

  def _project_qkv(self, x: Array, head_dim: int,
                   num_queries: Optional[int]) -> Tuple[Array, Array, Array]:
    """q, k, v, each (..., tokens, heads, head_dim); q has `num_queries`."""
    kernels, biases = [], []
    for name in ('query', 'key', 'value'):
      kernel, bias = DenseGeneralParams(
          features=(self.num_heads, head_dim), kernel_init=self.kernel_init,
          bias_init=self.bias_init, param_dtype=self.param_dtype,
          name=name)(x.shape[-1])
      kernels.append(kernel.astype(self.dtype))
      biases.append(bias.astype(self.dtype))
    x = x.astype(self.dtype)
    project = lambda x, kernels, biases: (  # pylint: disable=g-long-lambda
        jnp.einsum('...d,dthe->...the', x, jnp.stack(kernels, axis=1))
        + jnp.stack(biases))
    if num_queries is None:
      qkv = project(x, kernels, biases)
      return tuple(qkv[..., i, :, :] for i in range(3))
    q = project(x[..., :num_queries, :], kernels[:1], biases[:1])
    kv = project(x, kernels[1:], biases[1:])
    return q[..., 0, :, :], kv[..., 0, :, :], kv[..., 1, :, :]

  def _einsum_attention(self, q: Array, k: Array, v: Array,
                        use_dropout: bool) -> Array:
    """Explicit softmax attention; returns (..., q_tokens, heads, head_dim)."""
    q = q / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    logits = jnp.einsum('...qhd,...khd->...hqk', q, k)
    weights = jax.nn.softmax(logits).astype(self.dtype)
    self.sow('intermediates', 'attention_weights', weights)
    if use_dropout:
      weights = nn.Dropout(rate=self.dropout_rate, broadcast_dims=())(
          weights, deterministic=False)
    return jnp.einsum('...hqk,...khd->...qhd', weights, v)


class Encoder1DBlock(nn.Module):
  """Pre-LN transformer block: x + MHA(LN(x)), then y + MLP(LN(y)).

  `deterministic` and `first_token_only` may be passed positionally so that
  `nn.remat` can mark them static. With `first_token_only`, the block returns
  only token 0 (all tokens still serve as keys and values): what a 'token'
  classifier reads from the last block, at about a tenth of the cost.
  """

  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  attention_impl: str = 'einsum'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, deterministic: bool,
               first_token_only: bool = False) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = nn.LayerNorm(epsilon=1e-6, **kw)(inputs)
    x = MultiHeadDotProductAttention(
        num_heads=self.num_heads, dropout_rate=self.attention_dropout_rate,
        attention_impl=self.attention_impl, **kw)(
            x, deterministic=deterministic,
            num_queries=1 if first_token_only else None)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
    x = x + (inputs[..., :1, :] if first_token_only else inputs)
    y = nn.LayerNorm(epsilon=1e-6, **kw)(x)
    y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, **kw)(
        y, deterministic=deterministic)
    return x + y


class Encoder(nn.Module):
  """Position embedding, `num_layers` blocks and the final LayerNorm."""

  num_layers: int
  mlp_dim: int
  num_heads: int
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  add_position_embedding: bool = True
  attention_impl: str = 'einsum'
  remat: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, *, train: bool,
               first_token_only: bool = False) -> Array:
    """(batch, tokens, hidden) -> same, or (batch, 1, hidden) for token 0.

    `first_token_only`: the caller reads only token 0 of the output, so the
    last block computes only that row (see `Encoder1DBlock`).
    """
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.add_position_embedding:
      x = AddPositionEmbs(
          posemb_init=nn.initializers.normal(stddev=0.02),
          name='posembed_input', **kw)(x)
      x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
    block_cls = Encoder1DBlock
    if self.remat:
      block_cls = nn.remat(Encoder1DBlock, static_argnums=(2, 3))
    for i in range(self.num_layers):
      last = i == self.num_layers - 1
      x = block_cls(
          mlp_dim=self.mlp_dim, num_heads=self.num_heads,
          dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          attention_impl=self.attention_impl, name=f'encoderblock_{i}', **kw)(
              x, not train, first_token_only and last)
    return nn.LayerNorm(epsilon=1e-6, name='encoder_norm', **kw)(x)


class VisionTransformer(nn.Module):
  """ViT, optionally with a ResNet root (hybrid).

  Fields mirror the model configs of `configs/models.py` (`patches`,
  `transformer`, `hidden_size`, `resnet`, `representation_size`,
  `classifier`), plus precision and kernel knobs.

  `__call__(images, *, train)`: images (batch, H, W, 3) in [-1, 1]; returns
  logits (batch, num_classes) in float32, or the pre-logits features when
  `num_classes` is None. H and W must be multiples of the patch stride.
  """

  num_classes: Optional[int]
  patches: Any
  transformer: Any
  hidden_size: int
  resnet: Optional[Any] = None
  representation_size: Optional[int] = None
  classifier: str = 'token'
  head_bias_init: float = 0.0
  # The encoder class, as in the original. A class other than `Encoder` (or
  # a subclass) is built from `transformer` alone and called as
  # `encoder(x, train=train)`, the original's interface.
  encoder: Type[nn.Module] = Encoder
  model_name: Optional[str] = None
  attention_impl: str = 'einsum'
  remat: bool = False
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: Array, *, train: bool) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    x = inputs.astype(self.dtype)
    if self.resnet is not None:
      x = models_resnet.resnet_root(
          x, num_layers=tuple(self.resnet['num_layers']),
          width_factor=self.resnet['width_factor'], **kw)
    patch = tuple(self.patches['size'])
    x = nn.Conv(self.hidden_size, kernel_size=patch, strides=patch,
                padding='VALID', name='embedding', **kw)(x)
    if self.transformer is not None:
      n, h, w, c = x.shape
      x = jnp.reshape(x, (n, h * w, c))
      if self.classifier in CLASS_TOKEN_CLASSIFIERS:
        cls = self.param('cls', nn.initializers.zeros, (1, 1, c),
                         self.param_dtype)
        x = jnp.concatenate(
            [jnp.tile(cls.astype(x.dtype), (n, 1, 1)), x], axis=1)
      # A 'token' head reads only the class token, so the last block need
      # not compute the others (unless attention weights are being captured).
      first_token_only = (self.classifier == 'token' and
                          not self.is_mutable_collection('intermediates'))
      if issubclass(self.encoder, Encoder):
        x = self.encoder(name='Transformer',
                         attention_impl=self.attention_impl,
                         remat=self.remat, **self.transformer, **kw)(
                             x, train=train, first_token_only=first_token_only)
      else:
        x = self.encoder(name='Transformer', **self.transformer)(
            x, train=train)
    x = self._pool(x)
    if self.representation_size is not None:
      x = nn.Dense(self.representation_size, name='pre_logits', **kw)(x)
      x = nn.tanh(x)
    else:
      x = IdentityLayer(name='pre_logits')(x)
    if self.num_classes:
      x = nn.Dense(
          self.num_classes, name='head', kernel_init=nn.initializers.zeros,
          bias_init=nn.initializers.constant(self.head_bias_init), **kw)(x)
    return x.astype(jnp.float32)

  def _pool(self, x: Array) -> Array:
    if self.classifier == 'token':
      return x[:, 0]
    if self.classifier == 'gap':
      return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    if self.classifier in ('unpooled', 'token_unpooled'):
      return x
    raise ValueError(
        f'Invalid classifier={self.classifier!r}; expected one of token, gap, '
        'unpooled, token_unpooled.')
