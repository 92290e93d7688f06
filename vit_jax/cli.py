"""The one prologue and epilogue of every command line.

A command module ends with

  if __name__ == '__main__':
    sys.exit(cli.main('vit_jax.predict', predict_images))

where the body takes the arguments (a list of str, without the program
name and without the CPU-tuning flag) and returns an exit status or None.
`main` then, in this order:
1. takes `--cpu_tuning` / `--cpu_tuning=true|false` / `--no_cpu_tuning` /
   `--nocpu_tuning` out of the arguments (the last one wins; the default is
   `cpu_tuning_default`): the one place this flag is parsed (parsers show
   `CPU_TUNING_HELP` in their help text). When on, it
   calls `host.tune_process` (re-runs the process with huge pages, sets the
   XLA:CPU flags unless `xla_flags=False`, freezes the imports' objects);
2. sets JAX's `jax_platforms`: `platforms` if the command names one (the
   planner: 'cpu'), else 'cpu' where libtpu is installed but the machine has
   no TPU (`host.platforms_without_tpu`); never when the user set
   JAX_PLATFORMS;
3. starts the backends (`jax.devices()`), unless `start_backends=False`
   (a multi-process command calls `jax.distributed.initialize` first);
4. runs the body. A `errors.UserError` becomes one line `prog: message` on
   stderr and exit status 1; any other exception keeps its traceback.
   argparse's usage errors (exit 2) and absl's flag errors pass through.

Because the body runs inside `main`, the CPU-tuning re-run happens after the
command module's imports (they are paid twice, only with --cpu_tuning). The
checkpoint and export commands use it the same way:
`sys.exit(cli.main('vit_jax.checkpoint', body))`.
"""

import sys
from typing import Callable, List, Optional, Sequence, Tuple

from vit_jax import errors
from vit_jax import host

Body = Callable[[List[str]], Optional[int]]
# Each spelling of the CPU-tuning flag, and what it asks for.
CPU_TUNING_SPELLINGS = {
    '--cpu_tuning': True, '--cpu_tuning=true': True,
    '--cpu_tuning=false': False, '--no_cpu_tuning': False,
    '--nocpu_tuning': False}
CPU_TUNING_HELP = (
    '--cpu_tuning (or --no_cpu_tuning): CPU only: XLA:CPU flags, huge pages '
    '(re-runs the process) and a frozen GC; see README "Speed".')


def split_cpu_tuning(argv: Sequence[str], *,
                     default: bool = False) -> Tuple[bool, List[str]]:
  """(CPU tuning on?, the other arguments). Arguments after '--' are left
  alone."""
  tuning, rest = default, []
  args = list(argv)
  for i, arg in enumerate(args):
    if arg == '--':
      rest += args[i:]
      break
    if arg in CPU_TUNING_SPELLINGS:
      tuning = CPU_TUNING_SPELLINGS[arg]
    else:
      rest.append(arg)
  return tuning, rest


def choose_platforms(platforms: Optional[str] = None) -> Optional[str]:
  """Sets `jax_platforms` (see the module docstring); returns what it set,
  or None when JAX keeps its own choice."""
  import os  # pylint: disable=g-import-not-at-top
  if os.environ.get('JAX_PLATFORMS'):
    return None  # The user's choice.
  platforms = platforms or host.platforms_without_tpu()
  if platforms:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update('jax_platforms', platforms)
  return platforms


def report(prog: str, error: errors.UserError) -> int:
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
  tuning, args = split_cpu_tuning(
      sys.argv[1:] if argv is None else argv, default=cpu_tuning_default)
  try:
    if tuning:
      host.tune_process(xla_flags=xla_flags)
    choose_platforms(platforms)
    if start_backends:
      import jax  # pylint: disable=g-import-not-at-top
      jax.devices()
    status = (body(args, cpu_tuning=tuning) if tell_cpu_tuning
              else body(args))
  except errors.UserError as e:
    return report(prog, e)
  return 0 if status is None else int(status)
