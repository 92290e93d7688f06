"""Parity of `checkpoint.load` + `VisionTransformer` with timm, on one file.

A one-off faithfulness check (not a test): a synthetic full-size ViT-B/16
imagenet21k-layout file with random weights is read by our loader and by
timm's `.npz` reader (`timm.models.vision_transformer._load_weights`), and
both models compute logits for the same batch of 2 images in [-1, 1].
timm uses `act_layer='gelu_tanh'` (the original's GELU) and never loads
`pre_logits`, so our model runs with `representation_size=None` too.

JAX and PyTorch must not share a process (importing TF and torch together
crashed here), so the script runs in three steps:

  /root/venv/bin/python tools/parity_timm.py jax --out=/tmp/parity
  /root/timm-ref/bin/python tools/parity_timm.py timm --out=/tmp/parity
  /root/venv/bin/python tools/parity_timm.py compare --out=/tmp/parity

The `jax` step writes ViT-B_16.npz (~394 MiB), inputs.npy and jax_logits.npy;
`timm` writes timm_logits.npy; `compare` prints the max-abs difference.
"""
# Imports live in the step that needs them: torch and JAX never share a
# process. pylint: disable=g-import-not-at-top

import argparse
import os

import numpy as np

NUM_CLASSES = 21843  # The imagenet21k head.


def random_params(shapes, seed: int = 0):
  """std-0.02 weights; LayerNorm scales 1 + 0.02 noise (zeros would hide
  everything after the first normalisation)."""
  rng = np.random.default_rng(seed)

  def init(path, shape):
    noise = 0.02 * rng.standard_normal(shape).astype(np.float32)
    return noise + 1 if path[-1] == 'scale' else noise

  import jax
  return jax.tree_util.tree_map_with_path(
      lambda p, s: init([k.key for k in p], s.shape), shapes)


def run_jax(out: str) -> None:
  """Writes the file and the inputs, and our logits."""
  import jax
  import jax.numpy as jnp
  from vit_jax import checkpoint
  from vit_jax import models
  os.makedirs(out, exist_ok=True)
  upstream = models.get_model('ViT-B_16', num_classes=NUM_CLASSES,
                              representation_size=768)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(
      lambda x: upstream.init(jax.random.PRNGKey(0), x, train=False),
      images)['params']
  path = os.path.join(out, 'ViT-B_16.npz')
  checkpoint.save(random_params(shapes), path)
  print(f'wrote {path}: {os.path.getsize(path):,} bytes')
  x = np.random.default_rng(1).uniform(-1, 1, (2, 224, 224, 3))
  x = x.astype(np.float32)
  np.save(os.path.join(out, 'inputs.npy'), x)
  params = checkpoint.load(path)
  del params['pre_logits']  # timm has no pre_logits layer.
  model = models.get_model('ViT-B_16', num_classes=NUM_CLASSES)
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x, train=False))
  logits = np.asarray(apply(params, x))
  np.save(os.path.join(out, 'jax_logits.npy'), logits)
  print(f'jax logits {logits.shape}, std {logits.std():.4f}')


def run_timm(out: str) -> None:
  """timm's reader and model on the same file and inputs."""
  import timm
  from timm.models import vision_transformer as vt
  import torch
  model = timm.create_model('vit_base_patch16_224', pretrained=False,
                            num_classes=NUM_CLASSES, act_layer='gelu_tanh')
  vt._load_weights(  # pylint: disable=protected-access
      model, os.path.join(out, 'ViT-B_16.npz'))
  model.eval()
  x = np.load(os.path.join(out, 'inputs.npy')).transpose(0, 3, 1, 2)
  with torch.no_grad():
    logits = model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
  np.save(os.path.join(out, 'timm_logits.npy'), logits)
  print(f'timm {timm.__version__}, torch {torch.__version__}: logits '
        f'{logits.shape}, std {logits.std():.4f}')


def compare(out: str) -> None:
  ours = np.load(os.path.join(out, 'jax_logits.npy'))
  theirs = np.load(os.path.join(out, 'timm_logits.npy'))
  diff = np.abs(ours - theirs)
  print(f'max |jax - timm| = {diff.max():.3g} (mean {diff.mean():.3g}); '
        f'logit scale (std) {theirs.std():.3g}; top-1 agree: '
        f'{bool((ours.argmax(-1) == theirs.argmax(-1)).all())}')


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('step', choices=('jax', 'timm', 'compare'))
  parser.add_argument('--out', default='/tmp/parity')
  args = parser.parse_args()
  {'jax': run_jax, 'timm': run_timm, 'compare': compare}[args.step](args.out)


if __name__ == '__main__':
  main()
