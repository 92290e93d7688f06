r"""Entry point: fine-tuning (and the throughput benchmark) from a config.

  python main.py --config=configs/b16_cifar10.py --workdir=/tmp/b16 \
      --config.pretrained_dir=checkpoints --config.batch=256

`--config` takes a file in vit_jax/configs/ (the short `configs/...` path
works from the repository root), optionally with `:argument`, and
`--config.x=y` overrides. Multi-host: pass --coordinator_address,
--num_processes and --process_id (or --multihost on TPU pods / SLURM, where
JAX finds them itself).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Checkpoints, TensorBoard events and the exported model.')
config_flags.DEFINE_config_file(
    'config', None, 'A config file in vit_jax/configs/ (with :argument).',
    lock_config=True)
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Call jax.distributed.initialize() (TPU pods, SLURM).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 (multi-process).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process.')

_HERE = os.path.dirname(os.path.abspath(__file__))


def resolve_config_arg(argv):
  """Maps `--config=configs/x.py[:arg]` to vit_jax/configs/x.py if needed."""
  out = []
  for arg in argv:
    if arg.startswith('--config='):
      path, sep, rest = arg[len('--config='):].partition(':')
      if not os.path.exists(path):
        for candidate in (os.path.join(_HERE, 'vit_jax', path),
                          os.path.join(_HERE, path)):
          if os.path.exists(candidate):
            arg = f'--config={candidate}{sep}{rest}'
            break
    out.append(arg)
  return out


def _initialize_distributed():
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value:
    if os.environ.get('JAX_PLATFORMS', '') == 'cpu':
      # CPU processes need a collectives backend to talk to each other.
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _MULTIHOST.value:
    jax.distributed.initialize()


def _enable_compilation_cache(config, workdir):
  import jax  # pylint: disable=g-import-not-at-top
  if not config.compilation_cache:
    return
  path = os.path.expanduser(config.compilation_cache)
  if not os.path.isabs(path):
    path = os.path.join(workdir, path)
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.5)


def parse_flags(argv):
  """absl's flag parsing, plus a clean exit for a bad --config.

  ml_collections reports a config file that fails to load only when the
  config is first used, and an unknown `--config.x` key as an
  AttributeError: both would end in a traceback rather than a message.
  """
  try:
    rest = app.parse_flags_with_usage(argv)
    flags.FLAGS.config.get('trainer')  # Raises if the file failed to load.
  except (OSError, AttributeError, KeyError) as e:
    reason = e
    while isinstance(reason, BaseException) and reason.args:
      reason = reason.args[0]  # ml_collections nests a KeyError's text.
    print(f'FATAL Flags parsing error: --config: {reason}', file=sys.stderr)
    sys.exit(1)
  return rest


class _QuietLibraries(logging.logging.Filter):
  """Drops INFO chatter of orbax (several lines per checkpoint)."""

  def filter(self, record):
    return record.levelno >= logging.logging.WARNING or '/orbax/' not in (
        record.pathname or '')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # On the logger, not a handler: absl's handler is not always the one used.
  logging.get_absl_logger().addFilter(_QuietLibraries())
  config, workdir = flags.FLAGS.config, _WORKDIR.value
  from vit_jax import host  # pylint: disable=g-import-not-at-top
  if config.get('huge_pages', True):  # Before JAX starts: see host.py.
    host.rerun_with_huge_pages()
  # Imported here so that `--help` and flag errors are instant.
  from vit_jax import errors  # pylint: disable=g-import-not-at-top
  from vit_jax import utils  # pylint: disable=g-import-not-at-top
  try:
    utils.set_xla_flags()  # XLA:CPU settings, before JAX's backends exist.
    _initialize_distributed()
    _enable_compilation_cache(config, workdir)
    if config.trainer == 'inference_time':
      from vit_jax import inference_time  # pylint: disable=g-import-not-at-top
      host.freeze_imported_objects()
      inference_time.inference_time(config, workdir)
    else:
      from vit_jax import train  # pylint: disable=g-import-not-at-top
      host.freeze_imported_objects()
      result = train.train_and_evaluate(config, workdir)
      logging.info('Done: %s', result)
  except errors.USER_ERRORS as e:
    print(f'\nERROR: {e}', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  sys.argv = resolve_config_arg(sys.argv)
  app.run(main, flags_parser=parse_flags)
