"""`python -m vit_jax.checkpoint`: see `command.py`.

The package is imported once, as `vit_jax.checkpoint`; only this file runs
as `__main__`, so exception classes are the same objects everywhere.
"""

import sys

from vit_jax.checkpoint import command

sys.exit(command.main())
