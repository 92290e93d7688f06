r"""Command line: fine-tuning, or the inference-time benchmark, from a config.

  python -m vit_jax.main --workdir=/tmp/vit \
      --config=$(pwd)/vit_jax/configs/vit.py:b16,cifar10 \
      --config.pretrained_dir=checkpoints
  python main.py --config=configs/b16_cifar10.py --workdir=/tmp/b16

The original release's command and flags; the repository's `main.py` is the
short form. `--config` takes a config file (a path, or `configs/...`
relative to this package) with an optional `:argument`, and `--config.x=y`
overrides. `config.trainer` picks 'train' (`train.run`) or
'inference_time' (configs/inference_time.py). Logging also goes to
`{workdir}/train.log`.

Multi-host: pass --coordinator_address, --num_processes and --process_id
(or --multihost on TPU pods / SLURM, where JAX finds them itself).
`--cpu_tuning` opts into the CPU settings measured in bench/RESULTS.md
(XLA:CPU flags, transparent huge pages, a frozen garbage collector; read
by vit_jax/cli.py, which also prints bad input as `vit_jax.main: message`
with exit status 1).
"""

import logging as python_logging
import os
import sys

from absl import flags
from absl import logging
from ml_collections import config_flags

from vit_jax import cli

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Checkpoints, TensorBoard events, train.log and the '
    'exported model.')
config_flags.DEFINE_config_file(
    'config', None, 'A config file, e.g. vit_jax/configs/vit.py:b16,cifar10.',
    lock_config=True)
_MULTIHOST = flags.DEFINE_bool(
    'multihost', False, 'Call jax.distributed.initialize() (TPU pods, SLURM).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 (multi-process).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process.')


class _QuietLibraries(python_logging.Filter):
  """Drops INFO chatter of orbax (several lines per checkpoint)."""

  def filter(self, record):
    return record.levelno >= python_logging.WARNING or '/orbax/' not in (
        record.pathname or '')


def _initialize_distributed():
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value:
    if jax.config.jax_platforms == 'cpu':  # JAX_PLATFORMS or cli.main's.
      # CPU processes need a collectives backend to talk to each other.
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(
        coordinator_address=_COORDINATOR.value,
        num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _MULTIHOST.value:
    jax.distributed.initialize()


def trainer(config) -> str:
  """'train' or 'inference_time'; the original's inference_time config
  names it in a field `train`."""
  return config.get('trainer') or config.get('train') or 'train'


def _train_or_time(config, workdir: str) -> None:
  """Dispatches on the trainer; logs what was written where."""
  from vit_jax import utils  # pylint: disable=g-import-not-at-top
  _initialize_distributed()
  utils.enable_compilation_cache(config.get('compilation_cache'), workdir)
  import jax  # pylint: disable=g-import-not-at-top
  logging.info('JAX process: %d / %d', jax.process_index(),
               jax.process_count())
  logging.info('JAX devices: %s', jax.devices())
  logging.info('Config:\n%s', config)
  from vit_jax import host  # pylint: disable=g-import-not-at-top
  from vit_jax import inference_time  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  host.freeze_late_imports()  # Bad flags fail before these imports.
  if trainer(config) == 'inference_time':
    inference_time.inference_time(config, workdir)
    return
  result = train.run(config, workdir)
  logging.info('Done: step %d, test accuracy %.5f. Written: %s', result.step,
               result.accuracy, '; '.join(
                   f'{k}: {v}' for k, v in result.written.items()))


def main(argv):
  """absl's main: one config and workdir, no positional arguments."""
  if len(argv) > 1:
    raise cli.FlagsError(f'unexpected arguments {" ".join(argv[1:])}: all '
                         'options are --flags.')
  # On the logger, not a handler: absl's handler is not always the one used.
  logging.get_absl_logger().addFilter(_QuietLibraries())
  config, workdir = flags.FLAGS.config, _WORKDIR.value
  from vit_jax import utils  # pylint: disable=g-import-not-at-top
  os.makedirs(workdir, exist_ok=True)
  handler = utils.add_gfile_logger(workdir)
  try:
    _train_or_time(config, workdir)
  finally:
    handler.flush()


def command():
  """Entry point of `python -m vit_jax.main` and of the root main.py."""
  import jax  # pylint: disable=g-import-not-at-top
  flags.mark_flags_as_required(['config', 'workdir'])
  jax.config.config_with_absl()  # --jax_backend_target etc., as the original.
  # The backends start in `main`, after jax.distributed.initialize.
  sys.exit(cli.main('vit_jax.main', cli.absl_body(main),
                    start_backends=False))


if __name__ == '__main__':
  command()
