#!/usr/bin/env python3
"""One timm case of the GPU check: `python gpu_check_timm.py CASE_JSON`.

Times timm's VisionTransformer, built with the dimensions of the vit_jax
config it is compared to (tanh GELU and dropout where vit_jax has them, so
both sides compute the same function), with float32 parameters under
`torch.autocast(bfloat16)` (AMP), eagerly or through `torch.compile`.
Train is forward + cross-entropy + backward + global-norm clipping at 1.0 +
SGD momentum 0.9 (lr 0.01), as bench/compare_timm.py's reference; infer is
a forward pass under `torch.inference_mode()`. Prints one JSON line.

Imports neither jax nor vit_jax: it runs in any Python with torch and timm
(on the GPU machine, the same Python as the vit_jax side; here, a separate
venv). Without torch or timm it prints a 'skipped' record and exits 0.
"""

import json
import statistics
import sys
import time
import traceback


def build_model(case, timm):
  """timm's ViT with the case's dimensions (hidden, mlp, heads, ...)."""
  return timm.models.vision_transformer.VisionTransformer(
      img_size=case['res'], patch_size=case['patch'],
      num_classes=case['num_classes'], embed_dim=case['hidden'],
      depth=case['layers'], num_heads=case['heads'],
      mlp_ratio=case['mlp'] / case['hidden'], act_layer='gelu_tanh',
      pos_drop_rate=case['dropout'], proj_drop_rate=case['dropout'])


def make_step(case, model, torch):
  """A function running one train or infer step, synchronised."""
  device = next(model.parameters()).device
  x = torch.rand(case['batch'], 3, case['res'], case['res'],
                 device=device) * 2 - 1
  y = torch.arange(case['batch'], device=device) % case['num_classes']
  amp = lambda: torch.autocast(device.type, dtype=torch.bfloat16)
  sync = torch.cuda.synchronize if device.type == 'cuda' else lambda: None
  net = torch.compile(model) if case['variant'] == 'compile' else model
  if case['mode'] == 'infer':
    model.eval()

    def step():
      with torch.inference_mode(), amp():
        net(x)
      sync()
      return None
    return step
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

  def train_step():
    with amp():
      loss = torch.nn.functional.cross_entropy(net(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sync()
    return loss.detach()
  return train_step


def time_case(case, torch, timm):
  """The case's record: first step (compile included), median of steps."""
  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  if cuda:
    torch.cuda.reset_peak_memory_stats()
  torch.manual_seed(0)
  model = build_model(case, timm).to(device)
  step = make_step(case, model, torch)
  t0 = time.perf_counter()
  first_loss = step()
  first_step_s = time.perf_counter() - t0
  for _ in range(case['warmup']):
    step()
  times = []
  for _ in range(case['steps']):
    t0 = time.perf_counter()
    last_loss = step()
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  as_float = lambda v: None if v is None else float(v)
  return dict(
      status='ok', img_per_sec=case['batch'] / med, step_ms=1e3 * med,
      first_step_s=first_step_s, step_times_s=times,
      compile_s=first_step_s if case['variant'] == 'compile' else None,
      losses=([as_float(first_loss), as_float(last_loss)]
              if case['mode'] == 'train' else None),
      peak_device_mem_mb=(torch.cuda.max_memory_allocated() / 2**20
                          if cuda else None),
      reserved_device_mem_mb=(torch.cuda.max_memory_reserved() / 2**20
                              if cuda else None),
      backend='gpu' if cuda else 'cpu',
      device_kind=torch.cuda.get_device_name() if cuda else 'cpu',
      versions=dict(torch=torch.__version__, timm=timm.__version__,
                    cudnn=torch.backends.cudnn.version() if cuda else None),
      threads=torch.get_num_threads())


def main(argv):
  case = json.loads(argv[1])
  record = dict(case)
  try:
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    record.update(status='skipped', reason=f'torch/timm not importable: {e}')
  else:
    try:
      record.update(time_case(case, torch, timm))
    except Exception:  # pylint: disable=broad-except
      # One failing case (out of memory, a compile error) must not stop the
      # check: the driver records it and goes on.
      record.update(status='error', reason=traceback.format_exc()[-3000:])
  print(json.dumps(record), flush=True)


if __name__ == '__main__':
  main(sys.argv)
