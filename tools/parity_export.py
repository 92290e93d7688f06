"""Logit parity of `python -m vit_jax.export` on a real architecture (not a
test: tests/export_test.py covers tiny models in every format).

  PYTHONPATH=. python tools/parity_export.py --model=ViT-Ti_16 --out=/tmp/px

Writes a freshly initialised MODEL (a random head, 10 classes, so the logits
depend on the image) as an official `.npz`, exports it in each format, runs
every artifact in a fresh process with tools/serve_exported.py (its runtime
only) on float images of batch 1 and 7 (and uint8 images of other sizes
with --preprocess), and prints the max |logit difference| from the jitted
`model.apply` (after `images.preprocess_for_eval` with --preprocess).
"""

import argparse
import os
import subprocess
import sys

import jax
import numpy as np

from vit_jax import checkpoint
from vit_jax import export
from vit_jax import images
from vit_jax import models

SERVE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                     'serve_exported.py')


def write_model(name: str, resolution: int, path: str):
  """A random MODEL with 10 classes as an official .npz; (model, params)."""
  model = models.build_model(models.get_model_config(name), num_classes=10)
  params = jax.tree.map(np.asarray, models.init_params(model, resolution))
  head = params['head']['kernel']  # Zeros as initialised: no signal.
  params['head']['kernel'] = np.random.default_rng(0).normal(
      0, 0.1, head.shape).astype(np.float32)
  checkpoint.save(params, path)
  return model, params


def inputs(resolution: int, preprocess: bool):
  rng = np.random.default_rng(1)
  if preprocess:
    return {'b1': rng.integers(0, 256, (1, 300, 260, 3), np.uint8),
            'b7': rng.integers(0, 256, (7, 180, 200, 3), np.uint8)}
  return {f'b{n}': rng.uniform(-1, 1, (n, resolution, resolution, 3))
                     .astype(np.float32) for n in (1, 7)}


def serve(artifact: str, batches, work: str):
  np.savez(os.path.join(work, 'in.npz'), **batches)
  out = os.path.join(work, 'out.npz')
  subprocess.run([sys.executable, SERVE, f'--artifact={artifact}',
                  f'--inputs={os.path.join(work, "in.npz")}', f'--out={out}'],
                 check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
                                      PYTHONPATH=''))
  return np.load(out)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='ViT-Ti_16')
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--formats', default=','.join(export.FORMATS))
  parser.add_argument('--preprocess', action='store_true')
  parser.add_argument('--out', required=True, help='a new folder')
  args = parser.parse_args()
  os.makedirs(args.out)
  npz = os.path.join(args.out, f'{args.model}.npz')
  model, params = write_model(args.model, args.resolution, npz)
  apply = jax.jit(lambda x: model.apply({'params': params}, x, train=False))
  batches = inputs(args.resolution, args.preprocess)
  want = {k: np.asarray(apply(np.asarray(images.preprocess_for_eval(
      x, args.resolution)) if args.preprocess else x))
          for k, x in batches.items()}
  for fmt in args.formats.split(','):
    artifact = os.path.join(args.out, fmt)
    export.export(checkpoint_path=npz, model_name=args.model, format=fmt,
                  out=artifact, preprocess=args.preprocess)
    got = serve(artifact, batches, args.out)
    for key, logits in want.items():
      diff = np.abs(got[f'{key}/logits'] - logits).max()
      top1 = (got[f'{key}/logits'].argmax(-1) == logits.argmax(-1)).all()
      print(f'{args.model} {fmt} preprocess={args.preprocess} batch '
            f'{key[1:]}: max |logit diff| {diff:.2e} (logits up to '
            f'{np.abs(logits).max():.2f}), top-1 equal: {top1}')


if __name__ == '__main__':
  main()
