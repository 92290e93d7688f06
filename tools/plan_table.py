r"""docs/plan.md's table: the published fine-tuning runs planned for TPU slices.

  nice -n 10 python tools/plan_table.py run --results=docs/plan_results.jsonl
  python tools/plan_table.py markdown --results=docs/plan_results.jsonl

`run` compiles each row with `python -m vit_jax.plan --noeval` (the
original's configs/vit.py cifar10 preset: crop 384, batch 512, accum_steps
8, float32), then runs each row's `--fit` search, and appends every JSON
line, with the command, commit, `git rev-parse HEAD:vit_jax` (`code`: the
records hold for every commit with that tree) and CPU, to the results file.
Jobs already there are skipped and a job being compiled is claimed with a
lock file, so several `run`s can share the work and a killed one can be
restarted. `markdown` prints the table from the results.
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


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(results, only):
  """Compiles the rows not yet in `results` (or in `only`), one at a time."""
  for job, row, cmd in jobs():
    if (only and job not in only) or job in _done(results):
      continue
    _compile_job(results, job, row, cmd)


def search(results, only):
  """The --fit search of `only`'s rows, one recorded compile per step.

  Reuses each row's accum_steps=8 result (a `run` job), tries
  accum_steps=1, then binary-searches the divisors of the per-device batch
  like `python -m vit_jax.plan --fit`, recording every compile as job
  '<row>~a<accum_steps>'. Same answer as --fit (memory falls as the
  micro-batch shrinks); one compile where a whole batch share fits.
  """
  base_jobs = {job: (row, cmd) for job, row, cmd in jobs()}
  for row in only:
    base = _done(results).get(row)
    if not base or 'plan' not in base:
      print(row, ': no accum_steps=8 result yet', flush=True)
      continue
    p = base['plan']
    per_device = p['batch'] // p['mesh']['data']
    divisors = [d for d in range(1, per_device + 1) if per_device % d == 0]
    lo, hi = 0, len(divisors) - 1
    if p['accum_steps'] in divisors:  # The row's own compile bounds it.
      at = divisors.index(p['accum_steps'])
      lo, hi = (lo, at - 1) if _fits(p) else (at + 1, hi)
    first = True
    while lo <= hi:
      # One image per micro-batch first: where it fits (most rows on the
      # 32 and 95 GiB chips) one compile answers; then a binary search.
      mid = lo if first else (lo + hi) // 2
      first = False
      fits = _fits_at(results, row, divisors[mid])
      if fits is None:
        cmd = base_jobs[row][1] + [f'--config.accum_steps={divisors[mid]}']
        if not _compile_job(results, f'{row}~a{divisors[mid]}', row, cmd):
          break  # Another search holds it.
        fits = _fits_at(results, row, divisors[mid])
      if fits:
        hi = mid - 1
      else:
        lo = mid + 1


def _fits(p):
  """Whether a recorded train step fits, by vit_jax.plan's rule (every
  byte within what the chip's compiler offers a program): records made
  before that rule was last changed are judged by the current one."""
  from vit_jax import plan  # pylint: disable=g-import-not-at-top
  usable = plan.chip_of(p['topology']).usable_bytes
  # pylint: disable-next=protected-access
  return plan._train_fits(dict(p, usable_hbm_bytes=usable))


def _fits_at(results, row, accum):
  """True/False from a recorded compile of `row` at `accum`, else None."""
  for job, r in _done(results).items():
    if r['row'] == row and 'plan' in r and (
        r['plan']['accum_steps'] == accum) and '#fit' not in job:
      return _fits(r['plan'])
  return None


def _git(*args):
  return subprocess.run(['git', *args], cwd=REPO, capture_output=True,
                        text=True).stdout.strip()


def _compile_job(results, job, row, cmd):
  """Runs one plan command, appends its record; False if claimed."""
  commit = _git('rev-parse', '--short', 'HEAD')
  # The code that builds and compiles the step (configs included), by
  # content: a record holds for any commit whose vit_jax/ tree is this one.
  code = _git('rev-parse', '--short', 'HEAD:vit_jax')
  if _git('status', '--porcelain', '--', 'vit_jax'):
    code += ' (uncommitted changes)'
  try:
    lock = os.open(f'{results}.{job}.lock', os.O_CREAT | os.O_EXCL)
  except FileExistsError:
    return False  # Another `run` is compiling it.
  os.close(lock)
  t0 = time.time()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  record = {'job': job, 'row': row,
            'command': ' '.join(['python'] + cmd[1:]),
            'commit': commit, 'code': code, 'cpu': _cpu(),
            'wall_s': time.time() - t0,
            'returncode': proc.returncode}
  if proc.returncode == 0:
    record['plan'] = json.loads(proc.stdout.strip().splitlines()[-1])
  else:
    record['error'] = (proc.stderr.strip().splitlines() or ['?'])[-1]
  with open(results, 'a') as f:
    f.write(json.dumps(record) + '\n')
  os.remove(f'{results}.{job}.lock')
  print(job, 'done in', int(time.time() - t0), 's', flush=True)
  return True


def _gib(n):
  return 'OOM' if n is None else f'{n / 2**30:.2f}'


def _searched(done, row):
  """'smallest accum_steps (GiB/chip)' from `search`'s compiles, or None."""
  tried = {r['plan']['accum_steps']: r['plan'] for job, r in done.items()
           if r['row'] == row and 'plan' in r and '#fit' not in job}
  fitting = sorted(a for a, p in tried.items() if _fits(p))
  if not fitting:
    return None
  best = fitting[0]
  smaller = [a for a in tried if a < best]
  total = tried[best]['per_device_bytes']['train']['total']
  if best == 1 or (smaller and max(smaller) in _divisor_below(tried, best)):
    return f'{best} ({_gib(total)})'
  return f'<= {best} ({_gib(total)}); smaller ones not compiled'


def _divisor_below(tried, best):
  """The largest divisor of the per-device batch below `best`, as a set."""
  p = tried[best]
  per_device = p['batch'] // p['mesh']['data']
  below = [d for d in range(1, best) if per_device % d == 0]
  return {below[-1]} if below else set()


def _fit_cell(record, done, row):
  """'smallest accum_steps (GiB/chip)' of a --fit job, or why not."""
  if record is None:
    return _searched(done, row) or 'not measured (deadline)'
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
      '| fits at accum 8 | smallest accum_steps that fits (GiB/chip) '
      '| roofline s/step at accum 8 | train-step compile s |',
      '|' + '---|' * 9]
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
        f"{'yes' if _fits(p) else 'no'} | {_fit_cell(fit, done, row)} | "
        f"{'-' if roof is None else f'{roof:.2f}'} | "
        f"{p['train_compile_s']:.0f} |")
  return '\n'.join(lines + [''] + provenance(done))


def provenance(done):
  """Which commits (and vit_jax/ trees) compiled the records in use: a
  job recorded twice counts once, by its last record."""
  rows_ = {row for row, *_ in rows()}
  runs = {}
  for job, r in done.items():
    if r['row'] in rows_ and 'plan' in r:
      kind = 'searches' if '~a' in job else 'rows'
      key = (r['commit'], r.get('code', '?').strip())
      runs.setdefault(key, {'rows': 0, 'searches': 0})[kind] += 1
  return [f'- Compiled by commit {commit} (vit_jax/ tree {code}): '
          f"{n['rows']} rows at the config's accum_steps,\n  "
          f"{n['searches']} search compiles."
          for (commit, code), n in sorted(runs.items())]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('mode', choices=('run', 'search', 'markdown'))
  parser.add_argument('--results', default='docs/plan_results.jsonl')
  parser.add_argument('--rows', default='',
                      help='Comma-separated row ids (default: all).')
  args = parser.parse_args()
  rows_ = [r for r in args.rows.split(',') if r]
  if args.mode == 'run':
    run(args.results, rows_)
  elif args.mode == 'search':
    search(args.results, rows_)
  else:
    print(markdown(args.results))


if __name__ == '__main__':
  main()
