"""The base type of the errors that mean "bad input", not "bug".

A leaf module: it imports nothing of the package, so any module can derive
its own error types from `UserError` (CheckpointError, ConfigError,
DatasetError, MeshError, NonFiniteLossError, ...), and command lines catch
`UserError` to print the message (which says what was wrong and what to
do) with a non-zero exit instead of a traceback.
"""


class UserError(ValueError):
  """Bad input or configuration; the message says what to change."""


USER_ERRORS = (UserError,)  # Kept for callers of the earlier spelling.
