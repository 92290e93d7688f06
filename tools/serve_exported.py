"""Runs an exported model as a server would: its runtime only, no vit_jax.

  python tools/serve_exported.py --artifact=DIR --inputs=X.npy --out=Y.npz

Loads DIR (written by `python -m vit_jax.export`) with JAX alone
(stablehlo), TensorFlow alone (savedmodel) or onnxruntime alone (onnx),
reading export.json for the format, runs it on the array of X.npy (or on
each array of X.npz) and writes the outputs (logits and probabilities, or
features; `{array name}/{output}` for X.npz) to Y.npz, plus `modules`: the
top-level packages this process imported.

Before the runtime is imported, the packages a server of that format would
not have are made unimportable (`BLOCKED`): vit_jax and TensorFlow for
stablehlo; vit_jax and JAX for savedmodel (TensorFlow imports JAX by itself
where both are installed, for tf.lite, and goes on without it) and onnx.
So a run that succeeds shows that the artifact needs its runtime only.
This file imports nothing of vit_jax; run it in a fresh process.
"""

import argparse
import importlib.abc
import json
import os
import sys

import numpy as np

BLOCKED = {'stablehlo': ('vit_jax', 'tensorflow'),
           'savedmodel': ('vit_jax', 'jax', 'jaxlib'),
           'onnx': ('vit_jax', 'jax', 'jaxlib', 'tensorflow')}


class Blocker(importlib.abc.MetaPathFinder):
  """Makes the top-level packages `names` (and their modules) unimportable."""

  def __init__(self, names):
    self.names = set(names)

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname.split('.')[0] in self.names:
      raise ModuleNotFoundError(f'{fullname} is blocked in this process.')
    return None


def load_stablehlo(artifact: str):
  from jax import export  # pylint: disable=g-import-not-at-top
  with open(os.path.join(artifact, 'model.stablehlo'), 'rb') as f:
    exported = export.deserialize(bytearray(f.read()))
  return lambda x: {k: np.asarray(v) for k, v in exported.call(x).items()}


def load_savedmodel(artifact: str):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  serve = tf.saved_model.load(artifact).signatures['serving_default']
  return lambda x: {k: v.numpy() for k, v in serve(
      images=tf.constant(x)).items()}


def load_onnx(artifact: str):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  session = onnxruntime.InferenceSession(
      os.path.join(artifact, 'model.onnx'),
      providers=['CPUExecutionProvider'])
  names = [o.name for o in session.get_outputs()]
  return lambda x: dict(zip(names, session.run(names, {'images': x})))


LOADERS = {'stablehlo': load_stablehlo, 'savedmodel': load_savedmodel,
           'onnx': load_onnx}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--artifact', required=True, help='exported folder')
  parser.add_argument('--inputs', required=True, help='.npy or .npz of images')
  parser.add_argument('--out', required=True, help='.npz to write')
  args = parser.parse_args()
  with open(os.path.join(args.artifact, 'export.json')) as f:
    fmt = json.load(f)['format']
  sys.meta_path.insert(0, Blocker(BLOCKED[fmt]))
  run = LOADERS[fmt](args.artifact)
  if args.inputs.endswith('.npz'):
    outputs = {f'{key}/{name}': value
               for key, images in np.load(args.inputs).items()
               for name, value in run(images).items()}
  else:
    outputs = run(np.load(args.inputs))
  modules = sorted({name.split('.')[0] for name in sys.modules})
  np.savez(args.out, modules=np.array(modules), **outputs)


if __name__ == '__main__':
  main()
