"""Device mesh and shardings for parameters, optimizer state and batches.

The mesh has two axes: 'data' (data parallelism; also FSDP when enabled) and
'model' (tensor parallelism). Parameters are placed by *logical axis rules*:
each parameter gets logical axis names from its path in the Linen tree
(`PARAM_RULES`), and `logical_to_mesh` maps logical names to mesh axes:

  heads, mlp -> 'model'         (Megatron-style attention and MLP splits)
  embed      -> 'data' if fsdp  (the hidden dimension of kernels)

A dimension whose size is not divisible by its mesh axis stays replicated, so
every model runs on every mesh (e.g. 3 heads on a 2-way model axis).
"""

import re
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
from jax.experimental import mesh_utils
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from vit_jax import errors

DATA = 'data'
MODEL = 'model'

# (regex on the '/'-joined parameter path, logical axes of its dimensions).
# The first match wins; unmatched parameters are replicated.
PARAM_RULES: Tuple[Tuple[str, Tuple[Optional[str], ...]], ...] = (
    (r'MultiHeadDotProductAttention_\d+/(query|key|value)/kernel$',
     ('embed', 'heads', None)),
    (r'MultiHeadDotProductAttention_\d+/(query|key|value)/bias$',
     ('heads', None)),
    (r'MultiHeadDotProductAttention_\d+/out/kernel$', ('heads', None, 'embed')),
    (r'MlpBlock_\d+/Dense_0/kernel$', ('embed', 'mlp')),
    (r'MlpBlock_\d+/Dense_0/bias$', ('mlp',)),
    (r'MlpBlock_\d+/Dense_1/kernel$', ('mlp', 'embed')),
    (r'(channel_mixing|token_mixing)/Dense_0/kernel$', ('embed', 'mlp')),
    (r'(channel_mixing|token_mixing)/Dense_0/bias$', ('mlp',)),
    (r'(channel_mixing|token_mixing)/Dense_1/kernel$', ('mlp', 'embed')),
    (r'(embedding|stem)/kernel$', (None, None, None, 'embed')),
    (r'head/kernel$', ('embed', None)),
    (r'pre_logits/kernel$', ('embed', None)),
    (r'posembed_input/pos_embedding$', (None, None, 'embed')),
)


class MeshError(errors.UserError):
  """The configured mesh does not fit the devices."""


def mesh_shape(data: int, model: int, num_devices: int) -> Tuple[int, int]:
  """Resolves -1 entries and checks that data * model == num_devices."""
  if model == -1 and data == -1:
    raise MeshError('Only one of config.mesh.data and config.mesh.model can '
                    'be -1.')
  if model == -1:
    model = num_devices // max(data, 1)
  if data == -1:
    data = num_devices // max(model, 1)
  if data < 1 or model < 1 or data * model != num_devices:
    raise MeshError(
        f'config.mesh (data={data}, model={model}) needs {data * model} '
        f'devices but {num_devices} are available '
        f'({jax.devices()[0].platform}). Set --config.mesh.data and '
        '--config.mesh.model so that their product is the device count '
        '(-1 means "all remaining").')
  return data, model


def create_mesh(mesh_config, devices: Optional[Sequence[Any]] = None) -> Mesh:
  """A ('data', 'model') mesh over all (or the given) devices."""
  devices = list(jax.devices() if devices is None else devices)
  data, model = mesh_shape(mesh_config.data, mesh_config.model, len(devices))
  try:  # Topology-aware placement on TPU/GPU; plain reshape elsewhere.
    grid = mesh_utils.create_device_mesh(
        (data, model), devices=devices)
  except Exception:  # pylint: disable=broad-except
    grid = np.asarray(devices).reshape(data, model)
  return Mesh(grid, (DATA, MODEL))


def logical_to_mesh(fsdp: bool) -> Dict[str, Optional[str]]:
  """The logical-axis rules: logical dimension name -> mesh axis."""
  return {'heads': MODEL, 'mlp': MODEL, 'embed': DATA if fsdp else None}


def _path_str(path) -> str:
  """'/'-joined dict keys of a pytree path (other entries are skipped)."""
  keys = [str(p.key) for p in path if isinstance(p, jax.tree_util.DictKey)]
  return '/'.join(keys)


def param_spec(name: str, shape: Sequence[int], mesh: Mesh, *,
               fsdp: bool = False) -> P:
  """PartitionSpec of one parameter (or a same-shaped optimizer leaf)."""
  rules = logical_to_mesh(fsdp)
  for pattern, axes in PARAM_RULES:
    if re.search(pattern, name) and len(axes) == len(shape):
      spec = []
      for dim, logical in zip(shape, axes):
        axis = rules.get(logical) if logical else None
        if axis and dim % mesh.shape[axis] == 0 and mesh.shape[axis] > 1:
          spec.append(axis)
        else:
          spec.append(None)
      return P(*spec)
  return P()


def tree_shardings(tree: Any, mesh: Mesh, *, fsdp: bool = False) -> Any:
  """NamedShardings for a pytree of params, optimizer state or train state.

  Leaves are matched by the dict keys of their path, so the momentum of
  `.../query/kernel` is sharded like the kernel itself; scalars (step
  counters) are replicated.
  """

  def leaf(path, x):
    shape = getattr(x, 'shape', ())
    return NamedSharding(mesh, param_spec(_path_str(path), shape, mesh,
                                          fsdp=fsdp))

  return jax.tree_util.tree_map_with_path(leaf, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Batches are split over 'data' and replicated over 'model'."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
