#!/usr/bin/env python3
r"""The GPU check: vit_jax vs timm, bf16 compute with float32 params.

  python bench/gpu_check.py [--dry_run] [--out=DIR] [--budget_s=450]

(bench/gpu_check.sh wraps it and installs the missing wheels first.) Runs,
in this order, each case in a fresh process so that its peak device memory
is its own:
  for ViT-B/16 at 224 px, batch 128, then ViT-L/16 at 384 px, batch 32:
    vit_jax infer and train with attention_impl 'xla' and 'cudnn' (the
    first cudnn infer also checks cudnn's logits against xla's and a
    float32 reference; bench/gpu_check_jax.py), timm infer and train
    under AMP bf16, eager (bench/gpu_check_timm.py);
  then timm under `torch.compile` for both models, while the budget lasts.
A case whose estimated time no longer fits in --budget_s is recorded as
'skipped' (and a running one is stopped at the budget's end), so the whole
check ends inside one device command.

Prints one JSON line per case (and per check) as it finishes, then a
markdown table: img/s, the ratio to timm eager, step ms, MFU, peak device
memory, first-step (compile) time, the train loss after the timed steps
(vit_jax 'xla' and 'cudnn' start from the same init and batch, so theirs
should be close; timm's init differs). MFU counts the
model's matmul FLOPs (`vit_flops`: the full network, 3x the forward for a
train step, the same count for both sides) against the chip's dense bf16
peak (PEAK_FLOPS, by device name; where the chip is not listed, e.g. on a
CPU, the matmul ceiling that the first vit_jax case measures). With --out
(default $OUT), writes gpu_check.jsonl, gpu_check.md and
gpu_check_workers.log (the workers' stderr).

--dry_run: the 'testing' model at 32 px, batch 4, 2 steps, on the CPU
(JAX_PLATFORMS=cpu), without torch.compile: the cudnn cases and the check
are reported as skipped, the timm cases too where torch or timm is missing.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, NamedTuple, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # The model configs of this checkout.

# pylint: disable-next=wrong-import-position
from vit_jax.configs import models as model_configs

# Dense bf16 matmul peak by device name (vendor datasheets, SXM parts: the
# H200 has the H100's arithmetic; /work/.library/device/H200.md). Measured
# on one H200 here: 769-798 TFLOP/s for 8192^3 on random data.
PEAK_FLOPS = {'H200': 989.4e12, 'H100': 989.4e12}
NUM_CLASSES = 10
DTYPE = 'bfloat16'
CHECK_FLOOR = 1e-2  # See gpu_check_jax.attention_check.
LOG_TAIL = 20_000  # Characters of each worker's stderr kept in the log.


class ModelCase(NamedTuple):
  """A model at one resolution and batch, with rough seconds per case
  (process start + compile + steps) keyed by 'impl-variant/mode'."""
  model: str
  res: int
  batch: int
  estimate_s: Dict[str, float]


def _estimates(jax_infer, jax_train, eager, compile_infer, compile_train):
  return {'vit_jax/infer': jax_infer, 'vit_jax/train': jax_train,
          'timm-eager/infer': eager, 'timm-eager/train': eager,
          'timm-compile/infer': compile_infer,
          'timm-compile/train': compile_train}


# Guesses for an H200 (the check has not run on one yet); a measured
# vit_jax 'xla' case replaces the guess for its 'cudnn' twin.
GPU_MODELS = (ModelCase('ViT-B_16', 224, 128, _estimates(30, 45, 20, 60, 100)),
              ModelCase('ViT-L_16', 384, 32, _estimates(40, 70, 25, 80, 130)))
DRY_MODELS = (ModelCase('testing', 32, 4, _estimates(15, 20, 15, 60, 60)),)


def vit_flops(model: str, res: int, num_classes: int = NUM_CLASSES) -> float:
  """Matmul FLOPs (2 x multiply-adds) of one image's forward pass.

  Patch embedding, then per block the qkv, scores, weighted sum, output and
  MLP matmuls over all tokens, and the head: the full network, which is
  what timm computes (vit_jax's last block computes only the class token,
  so its true count is a little lower; the same count keeps MFU and img/s
  in the same ratio).
  """
  cfg = model_configs.MODEL_CONFIGS[model]
  d, patch = cfg.hidden_size, cfg.patches['size'][0]
  mlp, layers = cfg.transformer['mlp_dim'], cfg.transformer['num_layers']
  patches = (res // patch)**2
  tokens = patches + 1  # The class token.
  embed = 2 * patches * patch * patch * 3 * d
  block = (2 * tokens * d * (3 * d + d + 2 * mlp)  # qkv, out, MLP.
           + 2 * 2 * tokens * tokens * d)  # Scores and weighted sum.
  return embed + layers * block + 2 * d * num_classes


def plan_cases(args) -> List[Dict[str, Any]]:
  """The cases in the order they run (most wanted first)."""
  cases, compiled = [], []
  common = dict(steps=args.steps, warmup=args.warmup, dtype=DTYPE,
                num_classes=NUM_CLASSES, check_floor=CHECK_FLOOR)
  for m in args.models:
    cfg = model_configs.MODEL_CONFIGS[m.model]
    dims = dict(hidden=cfg.hidden_size, mlp=cfg.transformer['mlp_dim'],
                heads=cfg.transformer['num_heads'],
                layers=cfg.transformer['num_layers'],
                patch=cfg.patches['size'][0],
                dropout=cfg.transformer['dropout_rate'])
    base = dict(common, model=m.model, res=m.res, batch=m.batch)
    for mode in ('infer', 'train'):
      for impl in ('xla', 'cudnn'):
        cases.append(dict(base, impl='vit_jax', variant=impl, mode=mode,
                          check=impl == 'cudnn' and mode == 'infer',
                          estimate_s=m.estimate_s[f'vit_jax/{mode}']))
    for variant in ('eager', 'compile'):
      for mode in ('infer', 'train'):
        case = dict(base, **dims, impl='timm', variant=variant, mode=mode,
                    estimate_s=m.estimate_s[f'timm-{variant}/{mode}'])
        (compiled if variant == 'compile' else cases).append(case)
  for case in compiled if not args.compile else ():
    case['skip_reason'] = 'torch.compile off (--compile, --dry_run)'
  cases += compiled
  for case in cases:
    case['name'] = (f"{case['model']}@{case['res']}/b{case['batch']}/"
                    f"{case['mode']}/{case['impl']}-{case['variant']}")
  if args.only:
    keep = args.only.split(',')
    cases = [c for c in cases if any(k in c['name'] for k in keep)]
  first_jax = next((c for c in cases if c['impl'] == 'vit_jax'), None)
  if first_jax:
    first_jax['measure_peak'] = True
  return cases


def _twins(case) -> tuple:
  """Cases of one key take about as long (vit_jax 'xla' and 'cudnn')."""
  return (case['impl'], case['model'], case['mode'],
          case['variant'] if case['impl'] == 'timm' else '')


def _estimate(case, observed: Dict[tuple, float]) -> float:
  """Seconds the case should take: measured on its twin, else the guess."""
  guess = observed.get(_twins(case), case['estimate_s'])
  return guess * (1.5 if case.get('check') else 1.0)  # Three more compiles.


def _observe(case, record, observed: Dict[tuple, float]) -> None:
  if record.get('status') == 'ok' and not case.get('check'):
    observed.setdefault(_twins(case), record['wall_s'])


def _worker(case, args):
  """(command, environment) of the case's worker process."""
  env = dict(os.environ)
  if case['impl'] == 'vit_jax':
    python, script = args.python, 'gpu_check_jax.py'
    env['PYTHONPATH'] = os.pathsep.join(
        [REPO] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    if args.dry_run:
      env['JAX_PLATFORMS'] = 'cpu'
  else:
    python, script = args.timm_python, 'gpu_check_timm.py'
  return [python, os.path.join(HERE, script), json.dumps(case)], env


def run_case(case, args, timeout: float):
  """Runs the case's worker for at most `timeout` s: (records, stderr)."""
  cmd, env = _worker(case, args)
  t0 = time.time()
  # Its own session, so that a stop at the budget's end also stops what it
  # started (torch.compile's compile workers).
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          start_new_session=True)
  try:
    out, err = proc.communicate(timeout=max(timeout, 1))
    stopped = ''
  except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    stopped = f'stopped at the end of the budget, {time.time() - t0:.0f} s. '
  records = [json.loads(line) for line in out.splitlines()
             if line.startswith('{')]
  if not records:
    records = [dict(case, status='error', reason=(
        f'{stopped}exit code {proc.returncode}; stderr: {err[-2000:]}'))]
  if case.get('check') and not any(r['impl'] == 'check' for r in records):
    records.append(dict(case, impl='check', variant='cudnn_vs_xla',
                        status='error', reason=stopped or 'no check record'))
  records[0]['wall_s'] = time.time() - t0
  for r in records:
    r['name'] = case['name'] + ('/check' if r['impl'] == 'check' else '')
  return records, err


def skipped(case, reason: str) -> List[Dict[str, Any]]:
  """Skipped records of a case (and its check) that did not run."""
  out = [dict(case, status='skipped', reason=reason)]
  if case.get('check'):
    out.append(dict(case, impl='check', variant='cudnn_vs_xla',
                    name=case['name'] + '/check', status='skipped',
                    reason=reason))
  return out


def chip_peak(records, override: Optional[float] = None):
  """(FLOP/s, where it came from) that MFU divides by, or (None, ...)."""
  if override:
    return override, 'given (--peak_tflops)'
  for r in records:
    for name, flops in PEAK_FLOPS.items():
      if name in str(r.get('device_kind', '')):
        return flops, f'{name} dense bf16 (datasheet)'
  for r in records:
    if r.get('measured_matmul_flops'):
      return (r['measured_matmul_flops'],
              f"measured {r['measured_matmul_dtype']} matmul")
  return None, 'none (no listed chip, no measured matmul)'


def add_mfu(record, peak: Optional[float], source: str) -> None:
  """Model FLOPs per step and MFU (None for records that did not run)."""
  if record['impl'] == 'check':
    return
  per_img = vit_flops(record['model'], record['res'])
  per_img *= 3 if record['mode'] == 'train' else 1
  record['model_flops_per_step'] = per_img * record['batch']
  ran = record.get('status') == 'ok'
  record['mfu'] = (per_img * record['img_per_sec'] / peak
                   if ran and peak else None)
  record['peak_flops'], record['peak_source'] = peak, source


def _fmt(value, spec: str, none: str = '-') -> str:
  return none if value is None else format(value, spec)


def _why(record) -> str:
  """The last line of a record's reason (a traceback's is the error)."""
  lines = str(record.get('reason', '')).strip().splitlines()
  return lines[-1][:60] if lines else ''


def throughput_table(records) -> List[str]:
  """Markdown rows: one per timed case, grouped by model and mode."""
  rows = ['| model | mode | impl | img/s | x timm eager | step ms | MFU '
          '| peak mem GiB | first step s | last loss | status |',
          '|---|---|---|---|---|---|---|---|---|---|---|']
  timm = {(r['model'], r['mode']): r['img_per_sec'] for r in records
          if r['impl'] == 'timm' and r['variant'] == 'eager'
          and r.get('status') == 'ok'}
  cases = [r for r in records if r['impl'] != 'check']
  for r in sorted(cases, key=lambda r: (r['model'], r['mode'])):
    ok = r.get('status') == 'ok'
    ref = timm.get((r['model'], r['mode']))
    ratio = r['img_per_sec'] / ref if ok and ref else None
    mem = r.get('peak_device_mem_mb')
    loss = (r.get('losses') or [None])[-1] if ok else None
    status = r.get('status', '?') + ('' if ok else ': ' + _why(r))
    rows.append(
        f"| {r['model']}@{r['res']} b{r['batch']} | {r['mode']} | "
        f"{r['impl']}-{r['variant']} | "
        f"{_fmt(r.get('img_per_sec') if ok else None, '.1f')} | "
        f"{_fmt(ratio, '.2f')} | "
        f"{_fmt(r.get('step_ms') if ok else None, '.1f')} | "
        f"{_fmt(r.get('mfu'), '.3f')} | "
        f"{_fmt(mem / 1024 if mem is not None and ok else None, '.2f')} | "
        f"{_fmt(r.get('first_step_s') if ok else None, '.1f')} | "
        f"{_fmt(loss, '.4f')} | {status} |")
  return rows


def check_table(records) -> List[str]:
  """Markdown rows of the cudnn-vs-xla logits checks."""
  rows = ['| model | cudnn vs xla | cudnn vs f32 | xla bf16 vs f32 | tol '
          '| result |', '|---|---|---|---|---|---|']
  for r in records:
    if r['impl'] != 'check':
      continue
    ok = r.get('status') == 'ok'
    get = lambda k, r=r, ok=ok: _fmt(r.get(k) if ok else None, '.2e')
    result = (('pass' if r['passed'] else 'FAIL') if ok else
              f"{r['status']}: {_why(r)}")
    rows.append(f"| {r['model']}@{r['res']} | {get('rel_err_cudnn_xla')} | "
                f"{get('rel_err_cudnn_f32')} | {get('rel_err_xla_f32')} | "
                f"{get('tol')} | {result} |")
  return rows


def report(records, *, peak, source, wall_s: float, budget_s: float) -> str:
  """The header line and both tables, as markdown."""
  kinds = sorted({str(r['device_kind']) for r in records
                  if r.get('device_kind')})
  versions = {}
  for r in records:
    versions.update({k: v for k, v in (r.get('versions') or {}).items()
                     if v is not None})
  measured = [r['measured_matmul_flops'] for r in records
              if r.get('measured_matmul_flops')]
  head = (f"GPU check on {', '.join(kinds) or 'unknown device'}: "
          f"MFU vs {_fmt(peak and peak / 1e12, '.1f')} TFLOP/s ({source}); "
          f"measured matmul "
          f"{_fmt(measured[0] / 1e12 if measured else None, '.1f')} "
          f'TFLOP/s; {DTYPE} compute, float32 params; '
          f"{', '.join(f'{k} {v}' for k, v in sorted(versions.items()))}; "
          f'{wall_s:.0f} s of a {budget_s:.0f} s budget.')
  return '\n'.join([head, ''] + throughput_table(records) + [''] +
                   check_table(records)) + '\n'


def write_atomic(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def parse_args(argv=None) -> argparse.Namespace:
  """Flags; --dry_run changes the defaults of the unset ones."""
  p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  p.add_argument('--dry_run', action='store_true',
                 help="The 'testing' model on the CPU, a few steps.")
  p.add_argument('--out', default=os.environ.get('OUT', ''),
                 help="Folder for the JSON lines, table and log ('': none).")
  p.add_argument('--budget_s', type=float, default=None,
                 help='Seconds for the whole check (default 450; dry 900).')
  p.add_argument('--steps', type=int, default=None,
                 help='Timed steps per case (default 20; dry run 2).')
  p.add_argument('--warmup', type=int, default=None,
                 help='Untimed steps after the first (default 3; dry 1).')
  p.add_argument('--compile', default='auto', choices=['auto', 'on', 'off'],
                 help='timm under torch.compile (auto: on unless --dry_run).')
  p.add_argument('--only', default='',
                 help='Comma-separated substrings of case names to run, '
                 "e.g. 'ViT-B_16,timm-eager'.")
  p.add_argument('--peak_tflops', type=float, default=None,
                 help='The peak MFU divides by (default: PEAK_FLOPS).')
  p.add_argument('--python', default=sys.executable,
                 help='Python with jax for the vit_jax cases.')
  p.add_argument('--timm_python', default=sys.executable,
                 help='Python with torch and timm for the timm cases.')
  args = p.parse_args(argv)
  dry = args.dry_run
  args.models = DRY_MODELS if dry else GPU_MODELS
  if args.budget_s is None:
    args.budget_s = 900.0 if dry else 450.0
  if args.steps is None:
    args.steps = 2 if dry else 20
  if args.warmup is None:
    args.warmup = 1 if dry else 3
  args.compile = args.compile == 'on' or (args.compile == 'auto' and not dry)
  return args


def _peak(records, args):
  return chip_peak(records, args.peak_tflops and args.peak_tflops * 1e12)


def _finish(new, records, args, log: str) -> None:
  """Adds MFU, prints the JSON lines, rewrites gpu_check.jsonl and log."""
  records += new
  peak, source = _peak(records, args)
  for r in records:
    add_mfu(r, peak, source)
  for r in new:
    print(json.dumps(r), flush=True)
  if args.out:
    write_atomic(os.path.join(args.out, 'gpu_check.jsonl'),
                 ''.join(json.dumps(r) + '\n' for r in records))
    if log:
      with open(os.path.join(args.out, 'gpu_check_workers.log'), 'a') as f:
        f.write(f"==== {new[0]['name']}\n{log[-LOG_TAIL:]}\n")


def main(argv=None) -> int:
  """Runs the check; 1 if a case failed or a check did not pass."""
  args = parse_args(argv)
  t0 = time.time()
  if args.out:
    os.makedirs(args.out, exist_ok=True)
  records, observed = [], {}
  for case in plan_cases(args):
    left = args.budget_s - (time.time() - t0)
    need = _estimate(case, observed)
    if case.get('skip_reason'):
      new, log = skipped(case, case['skip_reason']), ''
    elif need > left:
      new, log = skipped(case, f'budget: ~{need:.0f} s needed, '
                         f'{max(left, 0):.0f} s left'), ''
    else:
      new, log = run_case(case, args, timeout=left)
      _observe(case, new[0], observed)
    _finish(new, records, args, log)
    r = new[0]
    print(f"[{time.time() - t0:4.0f} s] {r['name']}: {r['status']} "
          f"{_fmt(r.get('img_per_sec'), '.1f', '')}", file=sys.stderr,
          flush=True)
  peak, source = _peak(records, args)
  text = report(records, peak=peak, source=source,
                wall_s=time.time() - t0, budget_s=args.budget_s)
  print('\n' + text, flush=True)
  if args.out:
    write_atomic(os.path.join(args.out, 'gpu_check.md'), text)
  failed = [r for r in records if r.get('status') == 'error' or
            (r['impl'] == 'check' and r.get('status') == 'ok'
             and not r['passed'])]
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
