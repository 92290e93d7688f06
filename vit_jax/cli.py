"""The one prologue and epilogue of every command line.

A command module ends with

  if __name__ == '__main__':
    sys.exit(cli.main('vit_jax.predict', predict_command))

where the body takes the arguments (a list of str, without the program
name and without the CPU-tuning flag) and returns an exit status or None.
`main` then, in this order:
1. takes `--cpu_tuning` / `--no_cpu_tuning` / `--nocpu_tuning` out of the
   arguments (`split_cpu_tuning`; the default is `cpu_tuning_default`): the
   one place this flag is parsed (`ArgumentParser` shows `CPU_TUNING_HELP`
   in its help). When on, it calls `host.tune_process` (re-runs the
   process with huge pages, sets the XLA:CPU flags unless
   `xla_flags=False`, freezes the imports' objects);
2. sets JAX's `jax_platforms`: `platforms` if the command names one (the
   planner: 'cpu'), else 'cpu' where libtpu is installed but the machine has
   no TPU (`host.platforms_without_tpu`); never when the user set
   JAX_PLATFORMS;
3. starts the backends (`jax.devices()`), unless `start_backends=False`
   (a multi-process command calls `jax.distributed.initialize` first);
4. runs the body. A `errors.UserError` becomes one line `prog: message` on
   stderr and exit status 1; any other exception keeps its traceback. Bad
   flags are UserErrors too (`FlagsError`): the bodies parse with
   `ArgumentParser` or `parse_absl_flags` (`absl_body`), which raise it
   instead of printing usage their own way.

Because the body runs inside `main`, the CPU-tuning re-run happens after the
command module's imports (they are paid twice, only with --cpu_tuning).
Nothing here redirects a file descriptor: native libraries' lines reach the
console as they are written, and a crash keeps its last words.
"""

import argparse
import os
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple

from vit_jax import errors
from vit_jax import host

Body = Callable[[List[str]], Optional[int]]
CPU_TUNING_HELP = (
    '--cpu_tuning (or --no_cpu_tuning): CPU only: XLA:CPU flags, huge pages '
    '(re-runs the process) and a frozen GC; see README "Speed".')


def split_cpu_tuning(argv: Sequence[str], *,
                     default: bool = False) -> Tuple[bool, List[str]]:
  """(CPU tuning on?, the other arguments in their order).

  The one parser of `--cpu_tuning` / `--no_cpu_tuning` / `--nocpu_tuning`
  (absl's spelling); the last one wins, arguments after '--' are left
  alone and no other flag is abbreviated to these. A value
  (`--cpu_tuning=false`) is a FlagsError.
  """
  parser = ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument('--cpu_tuning', action='store_true', default=default)
  parser.add_argument('--no_cpu_tuning', '--nocpu_tuning', dest='cpu_tuning',
                      action='store_false')
  known, rest = parser.parse_known_args(list(argv))
  return known.cpu_tuning, rest


def choose_platforms(platforms: Optional[str] = None) -> Optional[str]:
  """Sets `jax_platforms` (see the module docstring); returns what it set,
  or None when JAX keeps its own choice."""
  if os.environ.get('JAX_PLATFORMS'):
    return None  # The user's choice.
  platforms = platforms or host.platforms_without_tpu()
  if platforms:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_platforms', platforms)
  return platforms


class FlagsError(errors.UserError):
  """A bad command-line argument: one argparse or absl rejects, a --config
  file that does not load, or an unknown --config.x field."""


class ArgumentParser(argparse.ArgumentParser):
  """argparse for a command's body: a bad argument raises FlagsError (one
  line, exit status 1, as any bad input) instead of printing the usage and
  exiting with 2; the help ends with CPU_TUNING_HELP unless told otherwise.
  """

  def __init__(self, *args, **kwargs):
    kwargs.setdefault('epilog', CPU_TUNING_HELP)
    super().__init__(*args, **kwargs)

  def error(self, message: str):
    raise FlagsError(f'{message} (--help lists the options).')


def _flags_error(error: BaseException) -> FlagsError:
  """One line out of absl's or ml_collections' (nested) error."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  reason, missing = error, False
  while isinstance(reason, BaseException) and reason.args:
    missing |= isinstance(reason, KeyError)  # An unknown config field.
    reason = reason.args[0]  # ml_collections nests a KeyError's text.
  if missing:
    reason = f'--config: no field {reason}'
  elif not isinstance(error, flags.Error):  # The config file's own error.
    reason = f'--config: {reason}'
  return FlagsError(' '.join(str(reason).split()))


def parse_absl_flags(argv: Sequence[str]) -> List[str]:
  """absl's flag parsing for a command; returns what absl leaves (the
  program name first).

  `--config=configs/x.py[:arg]` names this package's file where there is
  no such file here. A bad flag, a config file that does not load (which
  ml_collections would report only when the config is first used) or an
  unknown `--config.x` field raise FlagsError, one line, instead of absl's
  FATAL lines or a traceback.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vit_jax import configs  # pylint: disable=g-import-not-at-top
  prefix = '--config='
  argv = [prefix + configs.locate(a[len(prefix):]) if a.startswith(prefix)
          else a for a in argv]
  try:
    rest = flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError) as e:
    raise _flags_error(e) from None
  config = flags.FLAGS['config'] if 'config' in flags.FLAGS else None
  if config is not None and config.present:
    try:
      config.value.get('trainer')  # Raises if the file did not load.
    except (OSError, AttributeError, KeyError, ValueError) as e:
      raise _flags_error(e) from None
  return rest


def absl_body(absl_main: Callable[[List[str]], Any]) -> Body:
  """The body of a command whose flags are absl's: `app.run(absl_main)` on
  the arguments, flags parsed by `parse_absl_flags`."""

  def body(args: List[str]) -> None:
    from absl import app  # pylint: disable=g-import-not-at-top
    app.run(absl_main, argv=[sys.argv[0]] + list(args),
            flags_parser=parse_absl_flags)

  return body


def _report(prog: str, error: errors.UserError) -> int:
  """Prints `prog: message` on stderr; returns the exit status, 1."""
  print(f'{prog}: {error}', file=sys.stderr)
  return 1


def main(prog: str, body: Body, argv: Optional[Sequence[str]] = None, *,
         cpu_tuning_default: bool = False, xla_flags: bool = True,
         platforms: Optional[str] = None,
         start_backends: bool = True, tell_cpu_tuning: bool = False) -> int:
  """Runs a command: prologue, `body(args)`, epilogue; returns the exit
  status (the body's, else 0; 1 after a UserError). `argv`: the arguments
  without the program name (default `sys.argv[1:]`). With
  `tell_cpu_tuning`, the body is called as `body(args, cpu_tuning=bool)`
  (a benchmark records it)."""
  try:
    tuning, args = split_cpu_tuning(
        sys.argv[1:] if argv is None else argv, default=cpu_tuning_default)
    if tuning:
      host.tune_process(xla_flags=xla_flags)
    choose_platforms(platforms)
    if start_backends:
      import jax  # pylint: disable=g-import-not-at-top
      jax.devices()
    status = (body(args, cpu_tuning=tuning) if tell_cpu_tuning
              else body(args))
  except errors.UserError as e:
    return _report(prog, e)
  return 0 if status is None else int(status)
