"""The base type of the errors that mean "bad input", not "bug".

A leaf module: it imports nothing of the package, so any module can derive
its own error types from `UserError` (CheckpointError, ConfigError,
DatasetError, MeshError, PlanError, ...). Command lines (`cli.main`) print
a UserError's message (which says what was wrong and what to do) as one
line `prog: message` with exit status 1; anything else is a bug and keeps
its traceback.
"""


class UserError(ValueError):
  """Bad input or configuration; the message says what to change."""
