"""Serving exports: a workdir or `.npz` -> StableHLO, TF SavedModel or ONNX.

  python -m vit_jax.export --checkpoint=WORKDIR_OR_NPZ [--model=NAME]
      [--resolution=N] --format=stablehlo|savedmodel|onnx [--preprocess]
      --out=DIR

Every format holds one function of a batch of any size (a symbolic batch
dimension), with the parameters inside:
- without --preprocess: float32 (batch, R, R, 3) in [-1, 1] -> {'logits',
  'probabilities'} ({'features'} for a model without a head);
- with --preprocess: uint8 (batch, h, w, 3) of any h, w -> the same, after
  the eval pipeline's resize to R x R and [-1, 1] scaling
  (`images.eval_preprocess_jax`, translated op for op into the ONNX graph;
  the SavedModel calls TensorFlow's own `images.preprocess_for_eval`).
The formats, and who can run them:
- stablehlo: `model.stablehlo`, a serialized `jax.export.Exported`; JAX
  alone runs it: `jax.export.deserialize(bytearray(data)).call(images)`;
- savedmodel: a TF SavedModel (jax2tf: the same StableHLO inside an
  XlaCallModule op, parameters as variables) with a `serving_default`
  signature; TensorFlow alone loads it (TF Serving, `tf.saved_model.load`);
- onnx: `model.onnx` (opset 18, written by `onnx_export`, which says why
  no existing converter), for onnxruntime; needs the `[export]` extra.
Beside it, `export.json` (model name, resolution, input, outputs, class
names) and `class_names.txt` (one per line; also a SavedModel asset and
ONNX metadata). The artifact is built in a temporary folder beside --out
and renamed into place when complete: --out appears whole or not at all.
"""

import json
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence

import numpy as np

from vit_jax import cli
from vit_jax import errors
from vit_jax import images as images_lib
from vit_jax import workdir

FORMATS = ('stablehlo', 'savedmodel', 'onnx')
STABLEHLO_FILE = 'model.stablehlo'
ONNX_FILE = 'model.onnx'
METADATA_FILE = 'export.json'
CLASS_NAMES_FILE = 'class_names.txt'
PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')  # What jax.export lowers for.


class ExportError(errors.UserError):
  """The export cannot be made from the arguments; says what to do."""


class Exported(NamedTuple):
  """What `export` wrote."""
  path: str  # The output folder.
  format: str
  model_name: str
  resolution: int  # The model's input side (pixels).
  metadata: Dict[str, Any]  # The contents of export.json.


def serving_fn(loaded: workdir.LoadedModel, *,
               preprocess: bool) -> Callable[[Any], Dict[str, Any]]:
  """images -> {'logits', 'probabilities'} (or {'features'}) in jax.numpy.

  `images`: float32 (B, R, R, 3) in [-1, 1], or with `preprocess` uint8
  (B, h, w, 3) of any size, resized as the eval pipeline does. The
  parameters are closed over (they become constants of an export).
  """
  import jax  # pylint: disable=g-import-not-at-top
  model, params, side = loaded.model, loaded.params, loaded.resolution

  def fn(images):
    if preprocess:
      images = images_lib.eval_preprocess_jax(images, side)
    out = model.apply({'params': params}, images, train=False)
    if model.num_classes is None:
      return {'features': out}
    return {'logits': out, 'probabilities': jax.nn.softmax(out, axis=-1)}

  return fn


def input_spec(resolution: int, *, preprocess: bool) -> Dict[str, Any]:
  """The input of the exported function: shape (None = any) and dtype."""
  if preprocess:
    return {'shape': [None, None, None, 3], 'dtype': 'uint8',
            'range': [0, 255]}
  return {'shape': [None, resolution, resolution, 3], 'dtype': 'float32',
          'range': [-1.0, 1.0]}


def _abstract_input(spec: Dict[str, Any]):
  """jax.ShapeDtypeStruct of `spec`, its None dimensions symbolic."""
  import jax  # pylint: disable=g-import-not-at-top
  names = iter(('batch', 'height', 'width'))
  dims = ', '.join(next(names) if d is None else str(d)
                   for d in spec['shape'])
  shape = jax.export.symbolic_shape(dims)
  return jax.ShapeDtypeStruct(shape, np.dtype(spec['dtype']))


def export_stablehlo(fn, spec: Dict[str, Any], out_dir: str, *,
                     platforms: Sequence[str]) -> str:
  """Writes {out_dir}/model.stablehlo (`jax.export`'s serialization)."""
  import jax  # pylint: disable=g-import-not-at-top
  exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(
      _abstract_input(spec))
  path = os.path.join(out_dir, STABLEHLO_FILE)
  with open(path, 'wb') as f:
    f.write(exported.serialize())
  return path


def export_savedmodel(loaded: workdir.LoadedModel, spec: Dict[str, Any],
                      out_dir: str, *, preprocess: bool,
                      platforms: Sequence[str], class_names_file: str) -> str:
  """Writes a TF SavedModel with a batch-polymorphic `serving_default`.

  jax2tf turns the model (preprocessing excluded) into one XlaCallModule
  op whose parameters are tf.Variables; with `preprocess`, TensorFlow's
  `images.preprocess_for_eval` (the eval pipeline itself) runs first.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  side = loaded.resolution

  def with_params(params, x):  # Parameters as arguments: tf.Variables.
    return serving_fn(loaded._replace(params=params), preprocess=False)(x)

  converted = jax2tf.convert(
      with_params, polymorphic_shapes=[None, f'(batch, {side}, {side}, 3)'],
      with_gradient=False, native_serialization_platforms=tuple(platforms))
  module = tf.Module()
  module.params = tf.nest.map_structure(
      lambda p: tf.Variable(np.asarray(p), trainable=False),
      jax.tree.map(np.asarray, loaded.params))
  module.class_names = tf.saved_model.Asset(class_names_file)
  dtype = tf.uint8 if preprocess else tf.float32

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec(spec['shape'], dtype, name='images')])
  def serve(images):
    if preprocess:
      images = images_lib.preprocess_for_eval(images, side)
    return converted(module.params, images)

  module.serve = serve
  tf.saved_model.save(module, out_dir, signatures={'serving_default': serve})
  return out_dir


def export_onnx(fn, spec: Dict[str, Any], out_dir: str, *,
                metadata: Dict[str, Any]) -> str:
  """Writes {out_dir}/model.onnx (`onnx_export`: opset 18, for
  onnxruntime), `metadata` and the class names in its metadata_props."""
  try:
    from vit_jax import onnx_export  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ExportError(
        f'--format=onnx needs the onnx package ({e}): pip install '
        "'vit_jax[export]'.") from None
  props = {'vit_jax': json.dumps(metadata),
           'class_names': '\n'.join(metadata['class_names'])}
  model = onnx_export.to_onnx(fn, _abstract_input(spec), metadata=props)
  path = os.path.join(out_dir, ONNX_FILE)
  onnx_export.save(model, path)
  return path


def _metadata(loaded, fmt: str, spec, *, preprocess: bool) -> Dict[str, Any]:
  outputs = (['features'] if loaded.model.num_classes is None
             else ['logits', 'probabilities'])
  return {
      'format': fmt, 'model_name': loaded.model_name,
      'resolution': loaded.resolution, 'preprocess': preprocess,
      'input': spec, 'outputs': outputs,
      'num_classes': loaded.model.num_classes,
      'class_names': list(loaded.class_names or []),
  }


def _check_arguments(fmt: str, out: str, platforms: Sequence[str]) -> None:
  """Raises ExportError before anything is loaded or written."""
  if fmt not in FORMATS:
    raise ExportError(f'--format={fmt} is not one of {", ".join(FORMATS)}.')
  unknown = [p for p in platforms if p not in PLATFORMS]
  if unknown or not platforms:
    raise ExportError(f'--platforms={",".join(platforms)}: each must be one '
                      f'of {", ".join(PLATFORMS)}.')
  if not out:
    raise ExportError('--out is empty: name the folder to write.')
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ExportError(
        f'--out={out} exists and is not an empty folder: pass a new path '
        '(nothing is overwritten).')
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise ExportError(f'The folder of --out={out} ({parent}) does not exist.')


def _write_artifact(loaded, fmt: str, tmp: str, *, preprocess: bool,
                    platforms: Sequence[str]) -> Dict[str, Any]:
  """Writes the artifact and its metadata into the folder `tmp`."""
  spec = input_spec(loaded.resolution, preprocess=preprocess)
  meta = _metadata(loaded, fmt, spec, preprocess=preprocess)
  names_file = os.path.join(tmp, CLASS_NAMES_FILE)
  with open(names_file, 'w') as f:
    f.write(''.join(f'{name}\n' for name in meta['class_names']))
  if fmt == 'stablehlo':
    meta['platforms'] = list(platforms)
    export_stablehlo(serving_fn(loaded, preprocess=preprocess), spec, tmp,
                     platforms=platforms)
  elif fmt == 'savedmodel':
    meta['platforms'] = list(platforms)
    export_savedmodel(loaded, spec, tmp, preprocess=preprocess,
                      platforms=platforms, class_names_file=names_file)
  else:
    export_onnx(serving_fn(loaded, preprocess=preprocess), spec, tmp,
                metadata=meta)
  with open(os.path.join(tmp, METADATA_FILE), 'w') as f:
    json.dump(meta, f, indent=2)
  return meta


def export(*, checkpoint_path: str, format: str, out: str,  # pylint: disable=redefined-builtin
           model_name: Optional[str] = None,
           resolution: Optional[int] = None, preprocess: bool = False,
           platforms: Sequence[str] = ('cpu',)) -> Exported:
  """Exports a workdir or official-layout `.npz` for serving (module doc).

  Args:
    checkpoint_path: what `workdir.load_model` takes (workdir, model.npz,
      official `.npz`).
    format: one of `FORMATS`.
    out: the folder to create (absent or empty).
    model_name: registered name; required for official `.npz` files.
    resolution: input side in pixels (default: the checkpoint's).
    preprocess: bake the eval preprocessing in (uint8 input of any size).
    platforms: what the StableHLO / SavedModel is lowered for (`PLATFORMS`).

  Returns:
    Exported, once `out` holds the complete artifact.

  Raises:
    ExportError, checkpoint.CheckpointError (UserErrors): bad arguments,
      before anything is written.
  """
  _check_arguments(format, out, platforms)
  loaded = workdir.load_model(checkpoint_path, model_name, resolution)
  parent = os.path.dirname(os.path.abspath(out))
  tmp = tempfile.mkdtemp(dir=parent,
                         prefix=f'.{os.path.basename(os.path.abspath(out))}.')
  try:
    meta = _write_artifact(loaded, format, tmp, preprocess=preprocess,
                           platforms=platforms)
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700 folders.
    if os.path.isdir(out):
      os.rmdir(out)  # Empty (checked): the rename needs it gone.
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return Exported(os.path.abspath(out), format, loaded.model_name,
                  loaded.resolution, meta)


def _parser() -> cli.ArgumentParser:
  parser = cli.ArgumentParser(
      prog='python -m vit_jax.export',
      description='Export a ViT/hybrid/Mixer checkpoint for serving.')
  workdir.add_load_model_flags(parser)
  parser.add_argument('--format', required=True,
                      help=f'one of {", ".join(FORMATS)}')
  parser.add_argument('--preprocess', action='store_true',
                      help='take uint8 images of any size (the eval resize '
                      'and [-1, 1] scaling inside)')
  parser.add_argument('--platforms', default='cpu',
                      help='stablehlo/savedmodel: comma-separated platforms '
                      f'to lower for ({", ".join(PLATFORMS)})')
  parser.add_argument('--out', required=True,
                      help='folder to create (absent or empty)')
  return parser


def export_command(args: Sequence[str]) -> None:
  """The command's body: exports as `args` say, prints what was written."""
  args = _parser().parse_args(args)
  result = export(checkpoint_path=args.checkpoint, format=args.format,
                  out=args.out, model_name=args.model,
                  resolution=args.resolution, preprocess=args.preprocess,
                  platforms=tuple(p for p in args.platforms.split(',') if p))
  meta = result.metadata
  print(f'{result.model_name} at {result.resolution} px -> {result.format} '
        f'in {result.path}: input {meta["input"]["dtype"]} '
        f'{meta["input"]["shape"]}, outputs {", ".join(meta["outputs"])}')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line; returns the exit status (0, or 1 on bad input)."""
  return cli.main('vit_jax.export', export_command, argv)


if __name__ == '__main__':
  sys.exit(main())
