r"""Plans a TPU run on any machine: compiles the real train step for a topology.

  python -m vit_jax.plan --config=configs/b16_cifar10.py --topology=v5e:2x4
  python -m vit_jax.plan --config=configs/vit.py:l16,cifar10 \
      --topology=v4:2x2x1 --config.dtype=bfloat16 --fit

With libtpu installed (`pip install -e '.[tpu]'`), JAX describes the chips of
a TPU slice without owning one, and its TPU compiler runs on the CPU. The
planner builds exactly what `main.py` would run -- `steps.build` with an
abstract state -- over a mesh of those abstract devices, lowers it with
abstract inputs (nothing is allocated, no dataset or checkpoint is read)
and compiles it. XLA's memory analysis then gives
the bytes every chip needs, so a run that would end in RESOURCE_EXHAUSTED
after queueing is caught on a laptop. `--fit` searches the smallest
`accum_steps` that fits. Compiling ViT-B/16 at 384 px takes minutes on two
CPU cores.
"""

import dataclasses
import importlib.util
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jax
import jax.extend.core as jex_core
import jax.numpy as jnp
import ml_collections

from vit_jax import cli
from vit_jax import config_validation
from vit_jax import errors
from vit_jax import host
from vit_jax import models
from vit_jax import partitioning
from vit_jax import steps

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Published per-chip figures of a TPU generation (one JAX device each)."""

  hbm_bytes: int  # HBM capacity.
  peak_flops: float  # Peak bf16 FLOP/s.
  hbm_bandwidth: float  # HBM bytes/s.
  # What of it the TPU compiler offers a program: the "available HBM" of
  # its out-of-memory message (libtpu 0.0.42; checked by tests/plan_test).
  usable_bytes: int
  topology_kwargs: Tuple[Tuple[str, str], ...] = ()


# Figures from the Cloud TPU system-architecture pages
# (https://cloud.google.com/tpu/docs/<v4|v5e|v5p|v6e>). HBM sizes are binary:
# the pages say "16 GB" for v5e, and its TPU compiler's allocator reports a
# memory size of 17179869184 bytes = 16 GiB. The usable part is the
# compiler's: it refuses a program whose temporaries exceed it, and a step
# fits when all its bytes (arguments too) do not (see `plan`).
CHIPS: Dict[str, Chip] = {
    # docs/v4: 275 TFLOPs bf16, HBM2 32 GiB at 1200 GBps. A v4 chip has two
    # TensorCores that JAX drives as one device ("megacore"), as on a v4 VM.
    'v4': Chip(32 * GIB, 275e12, 1200e9, int(30.75 * GIB),
               (('chip_config_name', 'megacore'),)),
    # docs/v5e: 197 TFLOPs bf16, HBM2 16 GB at 819 GBps.
    'v5e': Chip(16 * GIB, 197e12, 819e9, int(15.75 * GIB)),
    # docs/v5p: 459 TFLOPs bf16, 95 GiB HBM at 2765 GBps (two TensorCores
    # per chip, one JAX device). Its compiler offers 95.74 GiB.
    'v5p': Chip(95 * GIB, 459e12, 2765e9, int(95.74 * GIB)),
    # docs/v6e (Trillium): 918 TFLOPs bf16, 32 GB HBM at 1640 GBps.
    'v6e': Chip(32 * GIB, 918e12, 1640e9, int(31.25 * GIB)),
}
EXAMPLES = 'v5e:2x4, v4:2x2x1, v5p:2x2x1, v6e:2x4'

# Classes of the dataset presets in configs/common.py (never read here).
NUM_CLASSES = {'cifar10': 10, 'cifar100': 100, 'imagenet2012': 1000,
               'oxford_iiit_pet': 37, 'oxford_flowers102': 102, 'digits': 10}


class PlanError(errors.UserError):
  """Bad planner input (topology, libtpu, num_classes); says what to do."""


def known_topologies() -> str:
  return (f'known chips: {", ".join(CHIPS)}, as <chip>:<shape>, e.g. '
          f'{EXAMPLES}')


def chip_of(topology: str) -> Chip:
  """The Chip of 'v5e:2x4' etc., or PlanError listing the known ones."""
  name, sep, shape = topology.partition(':')
  if not sep or name not in CHIPS or not shape:
    raise PlanError(f'Unknown topology {topology!r}; {known_topologies()}.')
  return CHIPS[name]


def topology_devices(topology: str) -> List[Any]:
  """Abstract (compile-only) TPU devices of a slice, e.g. 'v5e:2x4'."""
  chip = chip_of(topology)
  if (importlib.util.find_spec('libtpu') is None and
      not os.environ.get('TPU_LIBRARY_PATH')):
    raise PlanError(
        "Planning for TPU needs libtpu: pip install -e '.[tpu]' (or pip "
        f"install 'jax[tpu]=={jax.__version__}').")
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  try:
    desc = topologies.get_topology_desc(
        topology_name=topology, platform='tpu', **dict(chip.topology_kwargs))
  except RuntimeError as e:  # JaxRuntimeError: libtpu's INVALID_ARGUMENT.
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    if 'lockfile' in reason:
      reason += (' (another process holds libtpu; set '
                 'ALLOW_MULTIPLE_LIBTPU_LOAD=1, as the plan command does)')
    raise PlanError(f'libtpu rejected topology {topology!r}: {reason}. '
                    f'{known_topologies()[0].upper()}'
                    f'{known_topologies()[1:]}.') from e
  return list(desc.devices)


def num_classes_of(config, num_classes: Optional[int]) -> int:
  """--num_classes, else the class count of the config's dataset preset."""
  if num_classes:
    return num_classes
  if config.dataset in NUM_CLASSES:
    return NUM_CLASSES[config.dataset]
  raise PlanError(
      f'The planner reads no data, so it cannot count the classes of '
      f'{config.dataset!r}: pass --num_classes (presets: '
      f'{", ".join(NUM_CLASSES)}).')


def abstract_batch(config, mesh, *, train_batch: bool) -> Dict[str, Any]:
  """Shapes of the batches input_pipeline feeds, sharded like train.py's."""
  n = config.batch if train_batch else config.batch_eval
  crop, s = config.pp.crop, partitioning.batch_sharding(mesh)
  batch = {'image': jax.ShapeDtypeStruct((n, crop, crop, 3), jnp.float32,
                                         sharding=s),
           'label': jax.ShapeDtypeStruct((n,), jnp.int32, sharding=s)}
  if not train_batch:
    batch['mask'] = jax.ShapeDtypeStruct((n,), jnp.float32, sharding=s)
  return batch


def lower_steps(config, *, num_classes: int, devices: Sequence[Any]):
  """(lowered train step, lowered eval step, model): main.py's steps.

  `config` must be resolved (config_validation.resolve_and_validate).
  """
  built = steps.build(config, num_classes, devices=devices, abstract=True)
  lowered_train = built.train_fn.lower(
      built.state, abstract_batch(config, built.mesh, train_batch=True))
  lowered_eval = built.eval_fn.lower(
      built.state.params,
      abstract_batch(config, built.mesh, train_batch=False))
  return lowered_train, lowered_eval, built.model


def memory_bytes(compiled) -> Dict[str, int]:
  """Per-device bytes of a compiled step (XLA's memory analysis).

  total = arguments + outputs - aliased (donated state reused for the new
  state) + temporaries + generated code: what must fit in HBM at once.
  """
  m = compiled.memory_analysis()
  out = {'arguments': m.argument_size_in_bytes,
         'temporaries': m.temp_size_in_bytes,
         'outputs': m.output_size_in_bytes,
         'aliased': m.alias_size_in_bytes,
         'code': m.generated_code_size_in_bytes}
  out['total'] = (out['arguments'] + out['outputs'] - out['aliased'] +
                  out['temporaries'] + out['code'])
  return out


def cost(compiled) -> Tuple[float, float]:
  """(FLOPs, bytes accessed) per device of one call, as XLA counts them."""
  c = compiled.cost_analysis()
  if isinstance(c, (list, tuple)):
    c = c[0] if c else {}
  c = c or {}
  return float(c.get('flops', 0.0)), float(c.get('bytes accessed', 0.0))


def _jaxpr_flops(jaxpr) -> float:
  """2 x multiply-adds of every matmul and convolution in a jaxpr."""
  total = 0.0
  for eqn in jaxpr.eqns:
    out = math.prod(eqn.outvars[0].aval.shape) if eqn.outvars else 0
    if eqn.primitive.name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * out * math.prod(lhs[d] for d in contract)
    elif eqn.primitive.name == 'conv_general_dilated':
      rhs = eqn.invars[1].aval.shape  # Kernel: out features x the rest.
      out_features = rhs[eqn.params['dimension_numbers'].rhs_spec[0]]
      total += 2.0 * out * math.prod(rhs) / out_features
    times = eqn.params.get('length', 1) if eqn.primitive.name == 'scan' else 1
    for sub in jex_core.jaxprs_in_params(eqn.params):
      total += times * _jaxpr_flops(sub)
  return total


def analytic_flops(model, crop: int) -> float:
  """Training FLOPs per image: 3 x the forward pass's matmuls and convs.

  Counted from the model's own computation graph (one image, abstract
  params), so it holds for ViT, hybrids and Mixer alike; the backward pass
  is taken as twice the forward, the usual convention.
  """
  params = models.abstract_params(model, crop)
  x = jax.ShapeDtypeStruct((1, crop, crop, 3), jnp.float32)
  jaxpr = jax.make_jaxpr(
      lambda p, x: model.apply({'params': p}, x, train=False))(params, x)
  return 3.0 * _jaxpr_flops(jaxpr.jaxpr)


def resolve(config, devices: Sequence[Any],
            topology: str) -> ml_collections.ConfigDict:
  """main.py's config checks, against the topology's device count."""
  try:
    partitioning.mesh_shape(config.mesh.data, config.mesh.model, len(devices))
  except partitioning.MeshError as e:
    raise PlanError(
        f'--config.mesh.data={config.mesh.data} x --config.mesh.model='
        f'{config.mesh.model} does not fit the {len(devices)} devices of '
        f'{topology}; set one of them to -1 ("all remaining").') from e
  return config_validation.resolve_and_validate(config,
                                                num_devices=len(devices))


def _compile(lowered) -> Tuple[Any, float, str]:
  """(compiled or None, seconds, '' or the compiler's out-of-memory line).

  The TPU compiler refuses a program that needs more HBM than the chip
  offers; that answer is the plan's "does not fit".
  """
  t0 = time.perf_counter()
  try:
    compiled, oom = lowered.compile(), ''
  except jax.errors.JaxRuntimeError as e:
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    compiled, oom = None, str(e).splitlines()[0]
  return compiled, time.perf_counter() - t0, oom


def plan(config: ml_collections.ConfigDict, *, topology: str,
         num_classes: Optional[int] = None,
         with_eval: bool = True) -> Dict[str, Any]:
  """Compiles main.py's train (and eval) step for `topology`; the report.

  Returns a JSON-able dict: per-device bytes of each step, the chip's HBM,
  `fits`, FLOPs (compiler and analytic), the roofline bound and compile
  seconds. A step the TPU compiler rejects for lack of HBM has bytes None,
  'fits' False and the compiler's message in 'compiler_oom'.
  """
  chip = chip_of(topology)
  devices = topology_devices(topology)
  config = resolve(config, devices, topology)
  n_classes = num_classes_of(config, num_classes)
  t0 = time.perf_counter()
  lowered_train, lowered_eval, model = lower_steps(
      config, num_classes=n_classes, devices=devices)
  compiled, compile_s, oom = _compile(lowered_train)
  per_step = {'train': memory_bytes(compiled) if compiled else None}
  if with_eval:
    eval_compiled, _, eval_oom = _compile(lowered_eval)
    per_step['eval'] = memory_bytes(eval_compiled) if eval_compiled else None
    oom = oom or eval_oom
  n = len(devices)
  data, model_axis = partitioning.mesh_shape(config.mesh.data,
                                             config.mesh.model, n)
  record = {
      'model': config_validation.model_name(config), 'topology': topology,
      'chip': devices[0].device_kind, 'devices': n,
      'mesh': {'data': data, 'model': model_axis}, 'fsdp': config.fsdp,
      'batch': config.batch, 'batch_eval': config.batch_eval,
      'accum_steps': config.accum_steps, 'crop': config.pp.crop,
      'dtype': config.dtype, 'remat': config.remat,
      'per_device_bytes': per_step, 'hbm_bytes': chip.hbm_bytes,
      'usable_hbm_bytes': chip.usable_bytes,
      'fits': not oom and all(
          s['total'] <= chip.usable_bytes for s in per_step.values()),
      'compiler_oom': oom,
      'analytic_flops_per_image': analytic_flops(model, config.pp.crop)}
  record.update(_speed(compiled, chip, config, n))
  record.update(compile_s=round(time.perf_counter() - t0, 1),
                train_compile_s=round(compile_s, 1))
  return record


def _speed(compiled, chip: Chip, config, n: int) -> Dict[str, Any]:
  """Compiler FLOPs per step and image, and the roofline bound (seconds).

  XLA's cost analysis counts the body of the accumulation loop once, so its
  per-device figures are scaled by accum_steps (the optimizer update,
  outside the loop, is a negligible part of them). The bound is the larger
  of FLOPs at the chip's peak and bytes accessed at its HBM bandwidth.
  """
  keys = ('compiler_flops_per_step', 'compiler_flops_per_image',
          'roofline_step_s', 'roofline_compute_s', 'roofline_hbm_s')
  if compiled is None:
    return dict.fromkeys(keys)
  flops, accessed = cost(compiled)
  flops, accessed = flops * config.accum_steps, accessed * config.accum_steps
  compute_s = flops / chip.peak_flops
  memory_s = accessed / chip.hbm_bandwidth
  return dict(zip(keys, (flops * n, flops * n / config.batch,
                         max(compute_s, memory_s), compute_s, memory_s)))


def _with(config, **changes) -> ml_collections.ConfigDict:
  """A copy of `config` with dotted fields changed ('mesh.model': 2)."""
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for key, value in changes.items():
      *parents, leaf = key.split('.')
      node = config
      for p in parents:
        node = node[p]
      node[leaf] = value
  return config


def fit(config: ml_collections.ConfigDict, *, topology: str,
        num_classes: Optional[int] = None,
        with_eval: bool = True) -> Dict[str, Any]:
  """The config's plan plus the smallest accum_steps whose step fits.

  accum_steps runs over the divisors of the per-device batch; memory falls
  as it grows, so a binary search compiles about log2(#divisors) steps.
  Returns the plan with 'fit': {'accum_steps' (None if none fits),
  'tried': {accum: total bytes}, 'alternatives': [...]} where the
  alternatives (FSDP, then a model axis) are tried only if nothing fits.
  """
  kw = dict(topology=topology, num_classes=num_classes)
  base = plan(config, with_eval=with_eval, **kw)
  per_device = base['batch'] // base['mesh']['data']
  divisors = [d for d in range(1, per_device + 1) if per_device % d == 0]
  plans = {base['accum_steps']: base}
  lo, hi, best = 0, len(divisors) - 1, None
  while lo <= hi:
    mid = (lo + hi) // 2
    accum = divisors[mid]
    if accum not in plans:
      plans[accum] = plan(_with(config, accum_steps=accum), with_eval=False,
                          **kw)
    if _train_fits(plans[accum]):
      best, hi = accum, mid - 1
    else:
      lo = mid + 1
  base['fit'] = {
      'accum_steps': best,
      'tried': {a: _train_total(p) for a, p in sorted(plans.items())},
      'alternatives': [] if best else _alternatives(config, base, **kw)}
  if best and best != base['accum_steps']:
    base['fit']['plan'] = {k: plans[best][k] for k in (
        'per_device_bytes', 'roofline_step_s', 'compiler_flops_per_step')}
  return base


def _train_fits(p: Dict[str, Any]) -> bool:
  train_bytes = p['per_device_bytes']['train']
  return bool(train_bytes) and train_bytes['total'] <= p['usable_hbm_bytes']


def _train_total(p: Dict[str, Any]) -> Optional[int]:
  """Per-device bytes of the train step (None: the compiler ran out)."""
  return (p['per_device_bytes']['train'] or {}).get('total')


def _alternatives(config, base, **kw) -> List[Dict[str, Any]]:
  """FSDP, then FSDP with a 2/4/8-way model axis, at one image per device
  and micro-batch; stops at the first that fits."""
  options = [] if config.fsdp else [{'fsdp': True}]
  options += [{'fsdp': True, 'mesh.model': m, 'mesh.data': -1}
              for m in (2, 4, 8) if base['devices'] % m == 0 and
              m < base['devices']]
  out = []
  for changes in options:
    data = base['devices'] // changes.get('mesh.model', base['mesh']['model'])
    changes['accum_steps'] = max(base['batch'] // data, 1)
    try:
      p = plan(_with(config, **changes), with_eval=False, **kw)
    except (PlanError, config_validation.ConfigError) as e:
      out.append({'changes': changes, 'error': str(e)})
      continue
    out.append({'changes': changes, 'fits': _train_fits(p),
                'total': _train_total(p)})
    if out[-1]['fits']:
      break
  return out


def _gib(n: float) -> str:
  """Bytes as GiB, or MiB below 1 GiB (tiny models)."""
  return f'{n / GIB:.2f} GiB' if n >= GIB else f'{n / 2**20:.1f} MiB'


def _seconds(s: float) -> str:
  return f'{s:.3f} s' if s >= 0.01 else f'{s * 1e3:.3f} ms'


def format_report(p: Dict[str, Any]) -> str:
  """The human-readable table of a plan (see `plan`)."""
  per_step = {k: v or {} for k, v in p['per_device_bytes'].items()}
  lines = [
      f"{p['model']} on {p['topology']}: {p['devices']} x {p['chip']}, "
      f"mesh data={p['mesh']['data']} model={p['mesh']['model']}"
      f"{' fsdp' if p['fsdp'] else ''}; batch {p['batch']}, accum_steps "
      f"{p['accum_steps']}, crop {p['crop']}, dtype {p['dtype']}",
      f"{'per device':<22}" + ''.join(f'{k + " step":>16}' for k in per_step)]
  for key in ('arguments', 'temporaries', 'outputs', 'aliased', 'code',
              'total'):
    lines.append(f'  {key:<20}' + ''.join(
        f'{_gib(s[key]) if s else "OOM":>16}' for s in per_step.values()))
  lines.append(f"  {'HBM of the chip':<20}{_gib(p['hbm_bytes']):>16}")
  lines.append(f"  {'usable by a program':<20}"
               f"{_gib(p['usable_hbm_bytes']):>16}")
  lines.append(f"fits: {'yes' if p['fits'] else 'NO'}")
  if p['compiler_oom']:
    lines.append(f"  the TPU compiler: {p['compiler_oom']}")
  if not p['fits']:
    lines.append('  rerun with --fit to find the smallest accum_steps that '
                 'fits, or whether --config.fsdp=True or a model axis '
                 '(--config.mesh.model) would')
  if p['compiler_flops_per_step'] is not None:
    lines += [
        f"FLOPs per step (XLA, all devices): "
        f"{p['compiler_flops_per_step']:.3e}",
        f"FLOPs per image: XLA {p['compiler_flops_per_image']:.3e}, "
        f"analytic {p['analytic_flops_per_image']:.3e} (3 x forward "
        'matmuls/convs)',
        f"roofline lower bound per step: {_seconds(p['roofline_step_s'])} "
        f"(compute {_seconds(p['roofline_compute_s'])} at peak bf16, HBM "
        f"{_seconds(p['roofline_hbm_s'])})"]
  lines.append(f"compile: {p['compile_s']} s (train step "
               f"{p['train_compile_s']} s)")
  return '\n'.join(lines)


def format_fit(p: Dict[str, Any], command: str) -> str:
  """What --fit found, with the command line to use (or why none)."""
  f = p['fit']
  tried = ', '.join(f'{a}: {_gib(b) if b else "OOM"}'
                    for a, b in f['tried'].items())
  lines = [f'accum_steps tried (train step total per device): {tried}']
  if f['accum_steps']:
    lines.append(f"smallest accum_steps that fits: {f['accum_steps']}")
    changes = {'accum_steps': f['accum_steps']}
  else:
    lines.append(f"no accum_steps fits in {_gib(p['usable_hbm_bytes'])} "
                 'per chip.')
    changes = None
    for alt in f['alternatives']:
      what = ' '.join(f'--config.{k}={v}' for k, v in alt['changes'].items())
      if 'error' in alt:
        lines.append(f'  {what}: {alt["error"]}')
        continue
      size = _gib(alt['total']) if alt['total'] else 'OOM'
      lines.append(f"  {what}: {size} -> "
                   f"{'fits' if alt['fits'] else 'does not fit'}")
      if alt['fits']:
        changes = alt['changes']
    if changes is None:
      lines.append('Neither FSDP nor a model axis makes it fit: use a '
                   'bigger slice, --config.remat=True, --config.dtype='
                   'bfloat16 or a smaller --config.batch.')
      return '\n'.join(lines)
  if not p['fits'] and 'eval' in p['per_device_bytes'] and (
      p['per_device_bytes']['eval']['total'] > p['usable_hbm_bytes']):
    lines.append('The eval step does not fit either: lower '
                 '--config.batch_eval.')
  extra = ' '.join(f'--config.{k}={v}' for k, v in changes.items())
  lines.append(f'use: {command} {extra} --workdir=WORKDIR')
  return '\n'.join(lines)


def json_line(p: Dict[str, Any]) -> str:
  """The plan as one JSON line (keys of `plan`, plus 'fit' with --fit)."""
  return json.dumps(p, sort_keys=True, default=str)


def main_command(argv: Sequence[str], changed: Sequence[str]) -> str:
  """The main.py command line of this plan, minus the fields to change."""
  keep = [a for a in argv[1:] if a.startswith('--config') and not any(
      a.startswith(f'--config.{c}=') for c in changed)]
  return ' '.join(['python main.py'] + keep)


def _parse_flags(argv: Sequence[str]):
  """absl flags of the planner -> (config, topology, fit, num_classes,
  with_eval); a bad flag or config file is a cli.FlagsError."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file('config', None, 'A main.py config file.',
                                  lock_config=True)
  topology = flags.DEFINE_string('topology', None,
                                 f'TPU slice: {known_topologies()}.')
  do_fit = flags.DEFINE_bool('fit', False,
                             'Search the smallest accum_steps that fits.')
  classes = flags.DEFINE_integer('num_classes', None, 'Classes (default: '
                                 "from the dataset preset).")
  with_eval = flags.DEFINE_bool('eval', True, 'Also compile the eval step.')
  cli.parse_absl_flags(argv)
  if not flags.FLAGS['config'].present or not topology.value:
    raise PlanError('Pass --config=<config file> and --topology=<chip>:'
                    f'<shape> ({known_topologies()}).')
  return (flags.FLAGS.config, topology.value, do_fit.value, classes.value,
          with_eval.value)


def plan_command(args: Sequence[str]) -> None:
  """The body of `python -m vit_jax.plan` (args: without the program)."""
  argv = [sys.argv[0]] + list(args)
  config, topology, fit_, num_classes, with_eval = _parse_flags(argv)
  chip_of(topology)  # Fail fast, before any config is built.
  _plan_and_print(config, argv, topology=topology, fit_=fit_,
                  num_classes=num_classes, with_eval=with_eval)


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`python -m vit_jax.plan`: parse flags, plan, print; returns exit code.

  `argv`: the arguments without the program name (default sys.argv[1:]).
  The backends are CPU only: local accelerators play no part (JAX_PLATFORMS
  of your own wins), and libtpu's compile-only path needs no TPU backend.
  """
  # libtpu's one-process lock guards a real TPU; compiling needs none, and
  # another JAX process on this machine may hold it.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  if not host.tpu_device_present():
    # Loaded to compile, libtpu asks which slice this host belongs to and
    # prints a dozen lines when no TPU VM answers: it is a single host.
    # The compile-only topology is the --topology asked for either way.
    os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
    os.environ.setdefault('TPU_HOST_BOUNDS', '1,1,1')
  return cli.main('vit_jax.plan', plan_command, argv, platforms='cpu')


def _plan_and_print(config, argv, *, topology, fit_, num_classes,
                    with_eval) -> None:
  p = (fit if fit_ else plan)(config, topology=topology,
                              num_classes=num_classes, with_eval=with_eval)
  print(format_report(p))
  if fit_:
    changed = ['accum_steps', 'fsdp', 'mesh.model', 'mesh.data']
    print(format_fit(p, main_command(argv, changed)))
  print(json_line(p))


if __name__ == '__main__':
  sys.exit(main())
