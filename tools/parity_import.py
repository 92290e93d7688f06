"""Logit parity of `checkpoint.convert` with timm's own forward (not a test).

timm models with random weights are saved as `.safetensors` by the
`safetensors` package, converted by `python -m vit_jax.checkpoint convert`,
and both forwards run on the same images in [-1, 1]; then the converted file
is exported back (`convert.to_timm_file`) and loaded by timm with
`strict=True`, and its tensors compared bit for bit with timm's. timm uses
`act_layer='gelu_tanh'` (the original's GELU). JAX and torch never share a
process, so three steps, in two virtual environments:

  /work/venv-torch/bin/python tools/parity_import.py timm --out=/tmp/imp
  PYTHONPATH=. .venv/bin/python tools/parity_import.py jax --out=/tmp/imp
  /work/venv-torch/bin/python tools/parity_import.py check --out=/tmp/imp

(/work/venv-torch: `pip install torch==2.14.1 torchvision==0.29.1 timm
safetensors`; timm needs a torchvision that matches torch.)
"""
# Imports live in the step that needs them: torch and JAX never share a
# process. pylint: disable=g-import-not-at-top

import argparse
import json
import os

import numpy as np

# timm name -> (registered name, classes).
MODELS = {'vit_tiny_patch16_224': 'ViT-Ti_16',
          'vit_tiny_r_s16_p8_224': 'R+ViT-Ti_16',
          'vit_base_patch16_224': 'ViT-B_16'}
NUM_CLASSES = 10


def _timm_model(name):
  import timm
  return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES,
                           act_layer='gelu_tanh').eval()


def _logits(model, x):
  import torch
  with torch.no_grad():
    return model(torch.from_numpy(np.ascontiguousarray(
        x.transpose(0, 3, 1, 2)))).numpy()


def run_timm(out: str) -> None:
  """Random timm models, their safetensors files and logits."""
  import safetensors.torch
  import torch
  os.makedirs(out, exist_ok=True)
  torch.manual_seed(0)
  x = np.random.default_rng(1).uniform(-1, 1, (2, 224, 224, 3))
  np.save(os.path.join(out, 'inputs.npy'), x.astype(np.float32))
  for name in MODELS:
    model = _timm_model(name)
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        os.path.join(out, f'{name}.safetensors'))
    np.save(os.path.join(out, f'{name}.timm.npy'),
            _logits(model, np.load(os.path.join(out, 'inputs.npy'))))
    print(f'{name}: saved')


def run_jax(out: str) -> None:
  """Converts each file, runs our model, exports it back to timm's layout."""
  import jax
  from vit_jax import checkpoint
  from vit_jax import models
  from vit_jax.checkpoint import convert
  x = np.load(os.path.join(out, 'inputs.npy'))
  for name, expected in MODELS.items():
    npz_path = os.path.join(out, f'{name}.npz')
    model_name = convert.convert(os.path.join(out, f'{name}.safetensors'),
                                 to=npz_path)
    assert model_name == expected, (model_name, expected)
    params = checkpoint.load(npz_path)
    model = models.get_model(model_name, num_classes=NUM_CLASSES)
    logits = jax.jit(lambda p, x, m=model: m.apply(
        {'params': p}, x, train=False))(params, x)
    np.save(os.path.join(out, f'{name}.jax.npy'), np.asarray(logits))
    convert.to_timm_file(params, os.path.join(out, f'{name}.back.safetensors'))
    print(f'{name} -> {model_name}: converted')


def check(out: str) -> None:
  """Parity numbers, and timm's strict load of the exported files."""
  import safetensors.torch
  report = {}
  for name in MODELS:
    ours = np.load(os.path.join(out, f'{name}.jax.npy'))
    theirs = np.load(os.path.join(out, f'{name}.timm.npy'))
    model = _timm_model(name)
    back = safetensors.torch.load_file(
        os.path.join(out, f'{name}.back.safetensors'))
    model.load_state_dict(back, strict=True)
    exact = all(bool((v == back[k]).all())
                for k, v in safetensors.torch.load_file(
                    os.path.join(out, f'{name}.safetensors')).items())
    report[name] = {'max_abs_logit_diff': float(np.abs(ours - theirs).max()),
                    'logit_std': float(theirs.std()),
                    'top1_agree': bool((ours.argmax(-1) ==
                                        theirs.argmax(-1)).all()),
                    'export_strict_load_bit_exact': exact}
    print(name, report[name])
  with open(os.path.join(out, 'report.json'), 'w') as f:
    json.dump(report, f, indent=2)


STEPS = {'timm': run_timm, 'jax': run_jax, 'check': check}

if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('step', choices=tuple(STEPS), help='see above')
  parser.add_argument('--out', default='/tmp/parity_import')
  STEPS[parser.parse_args().step](parser.parse_args().out)
