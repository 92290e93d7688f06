"""The base type of the errors that mean "bad input", not "bug".

A leaf module: it imports nothing of the package, so any module can derive
its own error types from `UserError` (CheckpointError, ConfigError,
DatasetError, MeshError, NonFiniteLossError, ...), and command lines catch
`UserError` to print the message (which says what was wrong and what to
do) with a non-zero exit instead of a traceback.
"""

import sys
from typing import Callable


class UserError(ValueError):
  """Bad input or configuration; the message says what to change."""


USER_ERRORS = (UserError,)  # Kept for callers of the earlier spelling.


def exit_status(prog: str, run: Callable[[], object]) -> int:
  """Runs a command's `run()`: 0, or 1 after printing a UserError as one
  line `prog: message` on stderr (no traceback)."""
  try:
    run()
  except UserError as e:
    print(f'{prog}: {e}', file=sys.stderr)
    return 1
  return 0
