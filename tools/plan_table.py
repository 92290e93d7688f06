r"""docs/plan.md's table: the published fine-tuning runs planned for TPU slices.

  nice -n 10 python tools/plan_table.py run --results=docs/plan_results.jsonl
  python tools/plan_table.py markdown --results=docs/plan_results.jsonl

`run` compiles each row with `python -m vit_jax.plan --noeval` (the
original's configs/vit.py cifar10 preset: crop 384, batch 512, accum_steps
8, float32), then runs each row's `--fit` search, and appends every JSON
line, with the command, commit and CPU, to the results file. Jobs already
there are skipped and a job being compiled is claimed with a lock file, so
several `run`s can share the work and a killed one can be restarted. `markdown` prints the table from the results.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

MODELS = ('ViT-B_32', 'ViT-B_16', 'R50+ViT-B_16', 'ViT-L_32', 'ViT-L_16',
          'ViT-H_14')
SLICES = (('v5e-8', 'v5e:2x4'), ('v4-8', 'v4:2x2x1'), ('v5p-8', 'v5p:2x2x1'))
# ViT-H/14 runs at 378 px: 384 is not a multiple of its 14 px patches (the
# original's VALID patch convolution dropped the last 6 pixels, so both
# give the same 27 x 27 tokens). main.py asks for a multiple.
CROP = {'ViT-H_14': ('--config.pp.crop=378',)}
# One pod-scale row: batch 512 over 256 chips is 2 images per chip, so
# accum_steps can only be 1 or 2.
POD = ('ViT-H_14', 'v5e-256', 'v5e:16x16',
       ('--config.fsdp=True', '--config.accum_steps=2'))


def rows():
  """(row id, model, slice name, topology, extra flags), in table order."""
  out = [(f'{m}@{name}', m, name, topo, ()) for name, topo in SLICES
         for m in MODELS]
  m, name, topo, extra = POD
  out.append((f'{m}@{name}+fsdp', m, name, topo, extra))
  # Ids name the crop: rows of other crops in a results file are not these.
  return [(r + ('@378' if m in CROP else ''), m, *rest)
          for r, m, *rest in out]


def jobs():
  """(job id, row, command): every row at the config's accum_steps first
  (one compile each), then every row's --fit search (several)."""
  out = []
  for fit in (False, True):
    for row, model, _, topo, extra in rows():
      cmd = [sys.executable, '-m', 'vit_jax.plan',
             f'--config=configs/vit.py:{model},cifar10',
             f'--topology={topo}', '--noeval', *CROP.get(model, ()), *extra]
      out.append((row + ('#fit' if fit else ''), row,
                  cmd + ['--fit'] if fit else cmd))
  return out


def _done(path):
  """job id -> its record, from the results file."""
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return {r['job']: r for r in map(json.loads, f) if r.get('job')}


def _cpu():
  try:
    out = subprocess.run(['lscpu'], capture_output=True, text=True).stdout
    return next(l.split(':', 1)[1].strip() for l in out.splitlines()
                if l.startswith('Model name'))
  except (OSError, StopIteration):
    return platform.processor()


def run(results, only):
  """Compiles the rows not yet in `results` (or in `only`), one at a time."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=repo,
                          capture_output=True, text=True).stdout.strip()
  for job, row, cmd in jobs():
    if (only and job not in only) or job in _done(results):
      continue
    try:
      lock = os.open(f'{results}.{job}.lock', os.O_CREAT | os.O_EXCL)
    except FileExistsError:
      continue  # Another `run` is compiling it.
    os.close(lock)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    record = {'job': job, 'row': row,
              'command': ' '.join(['python'] + cmd[1:]),
              'commit': commit, 'cpu': _cpu(), 'wall_s': time.time() - t0,
              'returncode': proc.returncode}
    if proc.returncode == 0:
      record['plan'] = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
      record['error'] = (proc.stderr.strip().splitlines() or ['?'])[-1]
    with open(results, 'a') as f:
      f.write(json.dumps(record) + '\n')
    os.remove(f'{results}.{job}.lock')
    print(job, 'done in', int(time.time() - t0), 's', flush=True)


def _gib(n):
  return 'OOM' if n is None else f'{n / 2**30:.2f}'


def _fit_cell(record):
  """'smallest accum_steps (GiB/chip)' of a --fit job, or why not."""
  if record is None:
    return 'not measured (deadline)'
  if 'plan' not in record:
    return f"failed: {record['error']}"
  fit = record['plan']['fit']
  best = fit['accum_steps']
  if best:
    return f"{best} ({_gib(fit['tried'][str(best)])})"
  alts = [a for a in fit['alternatives'] if a.get('fits')]
  return 'none' + (f"; fits with {alts[0]['changes']}" if alts else '')


def markdown(results):
  """The table of docs/plan.md (rows without a result: 'not measured')."""
  done = _done(results)
  lines = [
      '| model | slice | chips | mesh | GiB/chip, train step at accum 8 '
      '| fits | smallest accum_steps that fits (GiB/chip) '
      '| roofline s/step | compile s |', '|' + '---|' * 9]
  for row, model, name, _, extra in rows():
    label = model + (' (378 px)' if model in CROP else '') + (
        ' FSDP, accum 2' if extra else '')
    fit = done.get(row + '#fit')
    base = done.get(row) or (fit if fit and 'plan' in fit else None)
    if not base or 'plan' not in base:
      why = base['error'] if base else 'not finished before the deadline'
      lines.append(f'| {label} | {name} | | | not measured: {why} |'
                   ' | | | |')
      continue
    p = base['plan']
    mesh = f"{p['mesh']['data']}x{p['mesh']['model']}"
    roof = p['roofline_step_s']
    lines.append(
        f"| {label} | {name} | {p['devices']} | {mesh} | "
        f"{_gib((p['per_device_bytes']['train'] or {}).get('total'))} | "
        f"{'yes' if p['fits'] else 'no'} | {_fit_cell(fit)} | "
        f"{'-' if roof is None else f'{roof:.2f}'} | "
        f"{p['train_compile_s']:.0f} |")
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('mode', choices=('run', 'markdown'))
  parser.add_argument('--results', default='docs/plan_results.jsonl')
  parser.add_argument('--rows', default='',
                      help='Comma-separated row ids (default: all).')
  args = parser.parse_args()
  if args.mode == 'run':
    run(args.results, [r for r in args.rows.split(',') if r])
  else:
    print(markdown(args.results))


if __name__ == '__main__':
  main()
