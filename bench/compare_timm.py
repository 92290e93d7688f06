#!/usr/bin/env python3
r"""Side-by-side throughput: vit_jax's benchmark vs PyTorch timm.

  python bench/compare_timm.py --rounds=3 [--targets=B16-train,Ti16-infer]

For each target, runs `python -m vit_jax.benchmark` (this Python) and
/work/shared/bench/timm_reference.py (in its own venv) in alternation, each
in a fresh process (TF and torch never share one), `--rounds` times, then
prints a markdown table of the medians and their ratio. Every raw JSON
record goes to --out (appended as JSON lines), with the load average at its
start and the commit of this checkout.
The machine is shared: alternation spreads the load over both sides.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

# name -> (model, res, batch, mode): the four targets of the issue.
TARGETS = {
    'B16-train': ('ViT-B_16', 224, 8, 'train'),
    'B16-infer': ('ViT-B_16', 224, 16, 'infer'),
    'Ti16-train': ('ViT-Ti_16', 224, 16, 'train'),
    'Ti16-infer': ('ViT-Ti_16', 224, 32, 'infer'),
}


def _run(cmd, cwd):
  """Runs `cmd`; returns its last stdout line as JSON (or an error)."""
  load = os.getloadavg()[0]
  proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                        check=False)
  lines = proc.stdout.strip().splitlines()
  if proc.returncode or not lines:
    return {'error': proc.stderr[-2000:], 'cmd': cmd}
  record = json.loads(lines[-1])
  record['load_before'] = load
  return record


def commands(target, args):
  """(ours, timm) command lines for one target."""
  model, res, batch, mode = TARGETS[target]
  common = [f'--model={model}', f'--res={res}', f'--batch={batch}',
            f'--mode={mode}', f'--steps={args.steps}']
  ours = [args.python, '-m', 'vit_jax.benchmark'] + common + args.extra
  timm = [args.timm_python, args.timm_script] + common
  return ours, timm


def table(results):
  """Markdown table of medians per target."""
  rows = ['| target | vit_jax img/s | timm img/s | ratio | vit_jax step ms '
          '| timm step ms | MFU vs matmul peak | compile s | runs | '
          'load (1 min) |',
          '|---|---|---|---|---|---|---|---|---|---|']
  for target, pair in results.items():
    med = lambda recs, k: statistics.median(r[k] for r in recs)  # pylint: disable=cell-var-from-loop
    ours, timm = pair['vit_jax'], pair['timm']
    if not ours or not timm:
      rows.append(f'| {target} | failed | | | | | | | | |')
      continue
    o, t = med(ours, 'img_per_sec'), med(timm, 'img_per_sec')
    loads = [r['load_before'] for r in ours + timm]
    rows.append(
        f'| {target} | {o:.2f} | {t:.2f} | **{o / t:.2f}x** | '
        f'{med(ours, "step_ms"):.0f} | {med(timm, "step_ms"):.0f} | '
        f'{med(ours, "mfu_vs_matmul_peak"):.2f} | '
        f'{med(ours, "compile_s"):.1f} | {len(ours)}+{len(timm)} | '
        f'{min(loads):.1f}-{max(loads):.1f} |')
  return '\n'.join(rows)


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--targets', default=','.join(TARGETS))
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--steps', type=int, default=5)
  p.add_argument('--python', default=sys.executable,
                 help='The Python that has vit_jax installed.')
  p.add_argument('--timm_python',
                 default=os.path.expanduser('~/.venvs/timm-ref/bin/python'),
                 help='A Python with torch and timm (see timm_script).')
  p.add_argument('--timm_script',
                 default='/work/shared/bench/timm_reference.py')
  p.add_argument('--out', default=os.path.join(HERE, 'results.jsonl'))
  p.add_argument('extra', nargs='*',
                 help='Extra flags for vit_jax.benchmark (after --).')
  args = p.parse_args()
  for path, what in ((args.timm_python, '--timm_python'),
                     (args.timm_script, '--timm_script')):
    if not os.path.exists(path):
      sys.exit(f'{what}={path} does not exist. The timm side needs its own '
               'venv with torch and timm (never a project dependency), set '
               'up as the docstring of shared/bench/timm_reference.py says; '
               f'pass its paths with {what}.')
  commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO,
                          capture_output=True, text=True,
                          check=False).stdout.strip()
  results = {}
  for target in args.targets.split(','):
    ours_cmd, timm_cmd = commands(target, args)
    pair = results.setdefault(target, {'vit_jax': [], 'timm': []})
    for k in range(args.rounds):
      # Alternate which side goes first, so a load trend hits both.
      order = [('vit_jax', ours_cmd), ('timm', timm_cmd)]
      for impl, cmd in order if k % 2 == 0 else order[::-1]:
        record = _run(cmd, REPO)
        record.update(target=target, round=k, time=time.time(),
                      commit=commit)
        with open(args.out, 'a') as f:
          f.write(json.dumps(record) + '\n')
        if 'error' in record:
          print(f'{target} {impl} failed:\n{record["error"]}',
                file=sys.stderr)
        else:
          pair[impl].append(record)
          print(f'{target} {impl} round {k}: '
                f'{record["img_per_sec"]:.2f} img/s '
                f'(load {record["load_before"]:.1f})', file=sys.stderr)
  print(table(results))


if __name__ == '__main__':
  main()
