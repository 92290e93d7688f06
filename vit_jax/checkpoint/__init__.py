"""Weights on disk: the official `.npz` format and everything around it.

The files in gs://vit_models and gs://mixer_models are NumPy `.npz` archives
of float32 arrays keyed by `/`-joined parameter paths in the pre-Linen
numbering (see `npz.py`). The package's modules, one concept each:
- `npz`: read, check, pre-Linen names, save (`load`, `save`, ...);
- `pretrained`: `inspect_params`, position-embedding resizing,
  `load_pretrained`;
- `names`: official file names and addresses; `remote`: download;
- `convert` (+ `torch_layout`, `safetensors_file`): timm / Hugging Face
  weights in and out;
- `files`: the one atomic write (`atomic_write`) and network probe;
- `listing`, `command`, `__main__`: `python -m vit_jax.checkpoint
  download|inspect|convert`.
Every name of the original release's `vit_jax.checkpoint` module is
importable from here (`from vit_jax import checkpoint; checkpoint.load`).
"""

from vit_jax.checkpoint.files import atomic_write
from vit_jax.checkpoint.npz import check_exists
from vit_jax.checkpoint.npz import CheckpointError
from vit_jax.checkpoint.npz import copy
from vit_jax.checkpoint.npz import from_stored
from vit_jax.checkpoint.npz import get_augreg_df
from vit_jax.checkpoint.npz import load
from vit_jax.checkpoint.npz import loaded_names
from vit_jax.checkpoint.npz import Params
from vit_jax.checkpoint.npz import read_stored
from vit_jax.checkpoint.npz import save
from vit_jax.checkpoint.npz import to_official_layout
from vit_jax.checkpoint.pretrained import fit_posemb
from vit_jax.checkpoint.pretrained import get_posemb
from vit_jax.checkpoint.pretrained import inspect_params
from vit_jax.checkpoint.pretrained import interpolate_posembed
from vit_jax.checkpoint.pretrained import load_pretrained
from vit_jax.checkpoint.pretrained import POSEMB_PATH
from vit_jax.checkpoint.pretrained import recover_tree
