"""Config files for `python -m vit_jax.main --config=...`.

`locate` finds a config file named relative to this package, so that
`--config=configs/b16_cifar10.py` works from anywhere.
"""

import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def locate(spec: str) -> str:
  """'configs/x.py[:arg]' or 'vit_jax/configs/x.py[:arg]' -> an existing
  path (with the same ':arg'); `spec` unchanged if no such file exists."""
  path, sep, rest = spec.partition(':')
  if os.path.exists(path):
    return spec
  package = os.path.dirname(_HERE)
  for candidate in (os.path.join(package, path),
                    os.path.join(os.path.dirname(package), path)):
    if os.path.exists(candidate):
      return f'{candidate}{sep}{rest}'
  return spec
