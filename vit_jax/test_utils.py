"""Fake pretrained checkpoints for tests (the original's `test_utils`).

`create_checkpoint(model_config, path)` writes a randomly initialised model
in the official `.npz` layout, so that tests can run `load_pretrained` and
`train_and_evaluate` without downloading anything.
"""

import os

import jax
import jax.numpy as jnp

from vit_jax import checkpoint
from vit_jax import models


def create_checkpoint(model_config, path: str, *, num_classes: int = 1,
                      image_size: int = 16) -> None:
  """Initialises `model_config` (PRNGKey(0)) and saves it to `path`.

  As the original: a head of `num_classes=1` and parameters initialised at
  16x16 px (so ViTs get a position embedding for that grid, which
  `load_pretrained` resizes). Written with `checkpoint.save`, i.e. in the
  official layout (pre-Linen block names).
  """
  model = models.build_model(model_config, num_classes=num_classes)
  variables = jax.jit(lambda rng: model.init(
      rng, jnp.ones([1, image_size, image_size, 3], jnp.float32),
      train=False))(jax.random.PRNGKey(0))
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  checkpoint.save(variables['params'], path)
