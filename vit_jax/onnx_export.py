"""A JAX function -> an ONNX graph, written with `onnx.helper` alone.

`to_onnx(fn, example)` traces `fn` to a jaxpr, with the symbolic dimensions
of `example` (a jax.ShapeDtypeStruct from `jax.export.symbolic_shape`: the
batch, and with `--preprocess` the image height and width) kept symbolic,
and writes each equation as ONNX ops (opset `OPSET`). Equations whose inputs
are all constants and whose shapes are static are evaluated by JAX itself
(the weight standardisation of the ResNet convs, the stacked q/k/v kernels,
iotas): they become initializers, computed as `model.apply` computes them.
What is left is the ~40 primitives of ViT, the hybrids' ResNet, Mixer and
`images.eval_preprocess_jax` (whose TF-order bilinear taps are computed in
the graph from the input's shape, so no ONNX `Resize` with its own rounding
is involved); any other primitive raises `OnnxExportError` naming it.

Why not an existing converter (measured with jax 0.10.2, TF 2.21):
tf2onnx 1.17.0 over the SavedModel fails on its one `XlaCallModule` op
(jax2tf has no non-native mode any more); jax2onnx 0.17.1 requires
orbax-checkpoint<0.11.37 where this project requires >=0.12, and brings
equinox, huggingface_hub, netron and dm-pix. This file needs `onnx` only.

A symbolic dimension d in a shape is built at run time: `Shape` of the input
for each symbol, times the integer d / symbol (d must be a product of
symbols and an integer, as every reshape of these models is).
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
import onnx
from onnx import helper

from vit_jax import errors

OPSET = 18  # Reduce* take their axes as an input from 18 on.
EXTERNAL_DATA_BYTES = 1 << 30  # Larger weights: model.onnx.data beside.
_CALLS = ('jit', 'pjit', 'closed_call', 'core_call', 'custom_jvp_call',
          'custom_vjp_call', 'remat', 'checkpoint')
_UNARY = {'exp': 'Exp', 'log': 'Log', 'tanh': 'Tanh', 'sqrt': 'Sqrt',
          'floor': 'Floor', 'ceil': 'Ceil', 'neg': 'Neg', 'abs': 'Abs',
          'logistic': 'Sigmoid', 'erf': 'Erf', 'sign': 'Sign',
          'stop_gradient': 'Identity', 'copy': 'Identity',
          'copy_p': 'Identity', 'not': 'Not'}
_BINARY = {'add': 'Add', 'sub': 'Sub', 'mul': 'Mul', 'div': 'Div',
           'max': 'Max', 'min': 'Min', 'pow': 'Pow', 'gt': 'Greater',
           'lt': 'Less', 'ge': 'GreaterOrEqual', 'le': 'LessOrEqual',
           'eq': 'Equal', 'and': 'And', 'or': 'Or'}
_REDUCE = {'reduce_sum': 'ReduceSum', 'reduce_max': 'ReduceMax',
           'reduce_min': 'ReduceMin', 'reduce_prod': 'ReduceProd'}


class OnnxExportError(errors.UserError):
  """The function uses something this converter does not translate."""


def _onnx_type(dtype) -> int:
  return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _static(shape) -> bool:
  return all(isinstance(d, int) for d in shape)


class Graph:
  """ONNX nodes and initializers under construction, and the symbols."""

  def __init__(self):
    self.nodes: List[Any] = []
    self.initializers: List[Any] = []
    # str(symbol) -> (the symbolic dimension, int64 [1] tensor of its value).
    self.symbols: Dict[str, Tuple[Any, str]] = {}
    self._dims: Dict[str, str] = {}
    self._consts: Dict[int, Tuple[str, Any]] = {}  # id -> (name, array).
    self._count = 0

  def add_symbols(self, input_name: str, shape) -> None:
    """Each symbolic dimension of the input: a `Shape` slice of it."""
    for axis, d in enumerate(shape):
      if not isinstance(d, int):
        self.symbols[str(d)] = (d, self.op('Shape', input_name, start=axis,
                                           end=axis + 1))

  def op(self, op_type: str, *inputs: str, **attrs) -> str:
    """Adds one node; returns the name of its (only) output."""
    self._count += 1
    out = f'{op_type.lower()}_{self._count}'
    self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                       name=out, **attrs))
    return out

  def t(self, value) -> str:
    """A tensor name: `value` itself, or an initializer holding it."""
    if isinstance(value, str):
      return value
    if id(value) not in self._consts:  # The array is kept: ids stay unique.
      self._count += 1
      name = f'const_{self._count}'
      self.initializers.append(onnx.numpy_helper.from_array(
          np.asarray(value), name))
      self._consts[id(value)] = (name, value)
    return self._consts[id(value)][0]

  def dim(self, d) -> str:
    """int64 [1] tensor of one dimension (an int or a symbolic product)."""
    if isinstance(d, int):
      return self.t(np.array([d], np.int64))
    key = str(d)
    if key in self.symbols:
      return self.symbols[key][1]
    if key not in self._dims:
      self._dims[key] = self._product(d)
    return self._dims[key]

  def _product(self, d) -> str:
    for symbol, tensor in self.symbols.values():
      try:
        rest = d // symbol
        exact = rest * symbol == d
      except Exception:  # pylint: disable=broad-except
        continue  # Not divisible by this symbol.
      if exact and not (isinstance(rest, int) and rest == 0):
        return self.op('Mul', tensor, self.dim(rest))
    raise OnnxExportError(
        f'Dimension {d} is not a product of {", ".join(self.symbols)} and '
        'an integer; export this model as stablehlo or savedmodel instead.')

  def shape(self, dims: Sequence[Any]) -> str:
    """int64 (len(dims),) tensor of a shape that may hold symbols."""
    if _static(dims):
      return self.t(np.array(dims, np.int64))
    return self.op('Concat', *(self.dim(d) for d in dims), axis=0)


def _fold(eqn, values):
  """Evaluates one equation on constants with JAX (exact semantics)."""
  params = eqn.primitive.get_bind_params(eqn.params)  # As eval_jaxpr.
  out = eqn.primitive.bind(*values, **params)
  out = out if eqn.primitive.multiple_results else [out]
  return [np.asarray(o) for o in out]


def _sub_jaxpr(eqn):
  for key in ('jaxpr', 'call_jaxpr', 'fun_jaxpr'):
    if key in eqn.params:
      sub = eqn.params[key]
      return (sub.jaxpr, sub.consts) if hasattr(sub, 'consts') else (sub, [])
  raise OnnxExportError(f'{eqn.primitive.name}: no sub-jaxpr to inline.')


def convert_jaxpr(graph: Graph, jaxpr, consts, args) -> List[Any]:
  """Translates `jaxpr` on `args` (tensor names or numpy constants)."""
  env = {}

  def read(v):  # A Literal holds its value; a Var's is in env.
    return v.val if hasattr(v, 'val') else env[v]

  for var, value in zip(jaxpr.constvars, consts):
    env[var] = np.asarray(value)
  env.update(zip(jaxpr.invars, args))
  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    constant = not any(isinstance(v, str) for v in values)
    if (constant and name != 'dim_as_value' and  # It reads the input's shape.
        all(_static(v.aval.shape) for v in eqn.outvars)):
      outs = _fold(eqn, values)
    elif name in _CALLS:
      outs = convert_jaxpr(graph, *_sub_jaxpr(eqn), values)
    else:
      outs = [_translate(graph, eqn, values)]
    env.update(zip(eqn.outvars, outs))
  return [read(v) for v in jaxpr.outvars]


def _translate(g: Graph, eqn, values) -> str:
  """One equation with a non-constant input -> ONNX nodes."""
  name, p = eqn.primitive.name, eqn.params
  x = values[0] if values else None

  def lit(v, var):  # Python scalars -> arrays of the operand's dtype.
    return v if isinstance(v, str) else np.asarray(v, var.aval.dtype)

  if name in _UNARY:
    return g.op(_UNARY[name], g.t(x))
  if name in _BINARY:
    a, b = (g.t(lit(v, var)) for v, var in zip(values, eqn.invars))
    return g.op(_BINARY[name], a, b)
  if name in _REDUCE:
    axes = g.t(np.array(p['axes'], np.int64))
    return g.op(_REDUCE[name], g.t(x), axes, keepdims=0)
  rule = _RULES.get(name)
  if rule is None:
    raise OnnxExportError(
        f'The JAX primitive {name!r} has no ONNX translation here; export '
        'this model as stablehlo or savedmodel instead.')
  return rule(g, eqn, *values)


def _cast(g, eqn, x):
  return g.op('Cast', g.t(x), to=_onnx_type(eqn.params['new_dtype']))


def _integer_pow(g, eqn, x):
  y = eqn.params['y']
  if y == 0:
    raise OnnxExportError('integer_pow with y=0 has no translation here.')
  out = x = g.t(x)
  for _ in range(abs(y) - 1):
    out = g.op('Mul', out, x)  # As XLA: products, not a float Pow.
  return g.op('Reciprocal', out) if y < 0 else out


def _broadcast_in_dim(g, eqn, x):
  shape, dims = eqn.params['shape'], eqn.params['broadcast_dimensions']
  mid = [1] * len(shape)
  for i, d in zip(dims, eqn.invars[0].aval.shape):
    mid[i] = d
  y = g.t(x)
  if len(mid) != eqn.invars[0].aval.ndim:
    y = g.op('Reshape', y, g.shape(mid))
  if any(not (a == b) for a, b in zip(mid, shape)):
    y = g.op('Expand', y, g.shape(shape))
  return y


def _dot_general(g, eqn, lhs, rhs):
  (lc, rc), (lb, rb) = eqn.params['dimension_numbers']
  ln, rn = eqn.invars[0].aval.ndim, eqn.invars[1].aval.ndim
  if (not lb and tuple(lc) == (ln - 1,) and tuple(rc) == (0,)
      and not isinstance(rhs, str)):  # A Dense layer: one MatMul.
    out = g.op('MatMul', g.t(lhs), g.t(rhs.reshape(rhs.shape[0], -1)))
    if rn != 2:
      out = g.op('Reshape', out, g.shape(eqn.outvars[0].aval.shape))
  else:
    letters = iter('abcdefghijklmnopqrstuvwxyz')
    ls = [next(letters) for _ in range(ln)]
    rs = [next(letters) for _ in range(rn)]
    for i, j in zip(tuple(lc) + tuple(lb), tuple(rc) + tuple(rb)):
      rs[j] = ls[i]
    out_letters = ([ls[i] for i in lb] +
                   [c for i, c in enumerate(ls) if i not in (*lc, *lb)] +
                   [c for j, c in enumerate(rs) if j not in (*rc, *rb)])
    equation = f'{"".join(ls)},{"".join(rs)}->{"".join(out_letters)}'
    out = g.op('Einsum', g.t(lhs), g.t(rhs), equation=equation)
  if eqn.outvars[0].aval.dtype != eqn.invars[0].aval.dtype:
    out = g.op('Cast', out, to=_onnx_type(eqn.outvars[0].aval.dtype))
  return out


def _conv(g, eqn, x, w):
  p = eqn.params
  dn = p['dimension_numbers']
  if any(d != 1 for d in p['lhs_dilation']) or p['batch_group_count'] != 1:
    raise OnnxExportError('conv_general_dilated with lhs_dilation or '
                          'batch groups has no ONNX translation here.')
  w = (np.transpose(w, dn.rhs_spec) if not isinstance(w, str)
       else g.op('Transpose', w, perm=list(dn.rhs_spec)))
  y = g.op('Conv', g.op('Transpose', g.t(x), perm=list(dn.lhs_spec)),
           g.t(w), strides=list(p['window_strides']),
           dilations=list(p['rhs_dilation']),
           pads=[lo for lo, _ in p['padding']] + [hi for _, hi in
                                                 p['padding']],
           group=p['feature_group_count'])
  return g.op('Transpose', y, perm=[int(i) for i in np.argsort(dn.out_spec)])


def _max_pool(g, eqn, x):
  p = eqn.params
  window, strides, pads = (p['window_dimensions'], p['window_strides'],
                           p['padding'])
  if (eqn.invars[0].aval.ndim != 4 or (window[0], window[3]) != (1, 1) or
      (strides[0], strides[3]) != (1, 1) or any(pads[0]) or any(pads[3]) or
      any(d != 1 for d in p['base_dilation'])):
    raise OnnxExportError('reduce_window_max: only NHWC pooling over the '
                          'spatial axes has an ONNX translation here.')
  y = g.op('MaxPool', g.op('Transpose', g.t(x), perm=[0, 3, 1, 2]),
           kernel_shape=list(window[1:3]), strides=list(strides[1:3]),
           dilations=list(p['window_dilation'][1:3]),
           pads=[pads[1][0], pads[2][0], pads[1][1], pads[2][1]])
  return g.op('Transpose', y, perm=[0, 2, 3, 1])


def _gather(g, eqn, x, idx):
  """The gathers of `x[:, 0]`, `x[:, :1]` and `jnp.take` along one axis."""
  dn, sizes = eqn.params['dimension_numbers'], eqn.params['slice_sizes']
  shape, out_ndim = eqn.invars[0].aval.shape, eqn.outvars[0].aval.ndim
  axis = dn.start_index_map[0] if len(dn.start_index_map) == 1 else None
  if (axis is None or dn.operand_batching_dims or any(
      not (s == d) for i, (s, d) in enumerate(zip(sizes, shape))
      if i != axis) or not set(dn.collapsed_slice_dims) <= {axis}):
    raise OnnxExportError(f'gather {dn} has no ONNX translation here.')
  if not isinstance(idx, str) and idx.size == 1:  # A constant start.
    start = int(np.clip(idx.item(), 0, shape[axis] - sizes[axis]))
    y = g.op('Slice', g.t(x), g.t(np.array([start], np.int64)),
             g.t(np.array([start + sizes[axis]], np.int64)),
             g.t(np.array([axis], np.int64)))
    if dn.collapsed_slice_dims:
      y = g.op('Squeeze', y, g.t(np.array([axis], np.int64)))
    return y
  batch = [i for i in range(out_ndim) if i not in dn.offset_dims]
  if batch != list(range(axis, axis + eqn.invars[1].aval.ndim - 1)):
    raise OnnxExportError(f'gather {dn} has no ONNX translation here.')
  idx = g.op('Squeeze', g.op('Cast', g.t(idx), to=onnx.TensorProto.INT64),
             g.t(np.array([-1], np.int64)))
  top = g.op('Sub', g.dim(shape[axis]), g.t(np.array([1], np.int64)))
  idx = g.op('Min', g.op('Max', idx, g.t(np.array(0, np.int64))),
             g.op('Squeeze', top))  # Clamped: mode 'clip' (jnp.take).
  return g.op('Gather', g.t(x), idx, axis=axis)


def _slice(g, eqn, x):
  p, shape = eqn.params, eqn.invars[0].aval.shape
  strides = p['strides'] or (1,) * len(shape)
  axes = [i for i, (s, e, d, n) in enumerate(zip(
      p['start_indices'], p['limit_indices'], strides, shape))
          if s != 0 or d != 1 or not (e == n)]

  def pick(seq):
    return g.t(np.array([seq[i] for i in axes], np.int64))

  return g.op('Slice', g.t(x), pick(p['start_indices']),
              pick(p['limit_indices']), g.t(np.array(axes, np.int64)),
              pick(strides))


def _concat(g, eqn, *xs):
  axis = eqn.params.get('dimension', eqn.params.get('axis'))
  if eqn.primitive.name == 'stack':
    xs = [g.op('Unsqueeze', g.t(x), g.t(np.array([axis], np.int64)))
          for x in xs]
  return g.op('Concat', *(g.t(x) for x in xs), axis=axis)


def _clamp(g, eqn, lo, x, hi):
  dtype = eqn.invars[1].aval.dtype
  low = g.op('Max', g.t(x), g.t(np.asarray(lo, dtype)))
  return g.op('Min', low, g.t(np.asarray(hi, dtype)))


def _dim_as_value(g, eqn):
  value = g.op('Squeeze', g.dim(eqn.params['dim']))
  return g.op('Cast', value, to=_onnx_type(eqn.outvars[0].aval.dtype))


_RULES: Dict[str, Callable[..., str]] = {
    'convert_element_type': _cast,
    'integer_pow': _integer_pow,
    'square': lambda g, eqn, x: g.op('Mul', g.t(x), g.t(x)),
    'rsqrt': lambda g, eqn, x: g.op('Reciprocal', g.op('Sqrt', g.t(x))),
    'select_n': lambda g, eqn, c, f, t: g.op(
        'Where', g.op('Cast', g.t(c), to=onnx.TensorProto.BOOL), g.t(t),
        g.t(f)),
    'clamp': _clamp,
    'reshape': lambda g, eqn, x: g.op('Reshape', g.t(x), g.shape(
        eqn.params['new_sizes'])),
    'broadcast_in_dim': _broadcast_in_dim,
    'tile': lambda g, eqn, x: g.op('Tile', g.t(x), g.shape(
        eqn.params['reps'])),
    'transpose': lambda g, eqn, x: g.op('Transpose', g.t(x), perm=list(
        eqn.params['permutation'])),
    'squeeze': lambda g, eqn, x: g.op('Squeeze', g.t(x), g.t(np.array(
        eqn.params['dimensions'], np.int64))),
    'expand_dims': lambda g, eqn, x: g.op('Unsqueeze', g.t(x), g.t(np.array(
        eqn.params['dimensions'], np.int64))),
    'concatenate': _concat,
    'stack': _concat,
    'dot_general': _dot_general,
    'conv_general_dilated': _conv,
    'reduce_window_max': _max_pool,
    'gather': _gather,
    'slice': _slice,
    'dim_as_value': _dim_as_value,
}


def _value_info(name: str, aval) -> Any:
  dims = [d if isinstance(d, int) else str(d) for d in aval.shape]
  return helper.make_tensor_value_info(name, _onnx_type(aval.dtype), dims)


def to_onnx(fn: Callable[[Any], Dict[str, Any]], example, *,
            input_name: str = 'images',
            metadata: Optional[Dict[str, str]] = None) -> onnx.ModelProto:
  """`fn` (one array -> a dict of arrays) as an ONNX model.

  Args:
    fn: traceable by `jax.make_jaxpr`; its parameters closed over.
    example: jax.ShapeDtypeStruct of the input; symbolic dimensions (from
      `jax.export.symbolic_shape`) stay dynamic in the graph.
    input_name: the graph input's name.
    metadata: ONNX metadata_props (strings).

  Returns:
    A checked ModelProto whose outputs are named by `fn`'s dict keys.
  """
  closed, shapes = jax.make_jaxpr(fn, return_shape=True)(example)
  graph = Graph()
  graph.add_symbols(input_name, example.shape)
  outs = convert_jaxpr(graph, closed.jaxpr, closed.consts, [input_name])
  names = sorted(shapes)  # The order in which JAX flattens a dict.
  for key, value in zip(names, outs):
    graph.nodes.append(helper.make_node('Identity', [graph.t(value)], [key],
                                        name=f'output_{key}'))
  onnx_graph = helper.make_graph(
      graph.nodes, 'vit_jax', [_value_info(input_name, example)],
      [_value_info(k, v.aval) for k, v in zip(names, closed.jaxpr.outvars)],
      graph.initializers)
  model = helper.make_model(
      onnx_graph, producer_name='vit_jax',
      opset_imports=[helper.make_opsetid('', OPSET)])
  helper.set_model_props(model, dict(metadata or {}))
  if model.ByteSize() < EXTERNAL_DATA_BYTES:
    onnx.checker.check_model(model)
  return model


def save(model: onnx.ModelProto, path: str) -> None:
  """Writes `model` to `path`; weights over `EXTERNAL_DATA_BYTES` go to
  `path`.data beside it (protobuf files stop at 2 GiB)."""
  large = sum(t.ByteSize() for t in model.graph.initializer)
  if large < EXTERNAL_DATA_BYTES:
    onnx.save_model(model, path)
  else:
    import os  # pylint: disable=g-import-not-at-top
    onnx.save_model(model, path, save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location=os.path.basename(path) + '.data')
