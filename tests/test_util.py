"""Helpers shared by the tests."""

import jax
import jax.numpy as jnp
import numpy as np

# A model.json 'model' entry (exported config): 2 layers, patch 8, so a 4x4
# grid at 32 px.
TINY_VIT = {
    'model_name': 'tiny-vit', 'patches': {'size': [8, 8]}, 'hidden_size': 16,
    'transformer': {'mlp_dim': 16, 'num_heads': 2, 'num_layers': 2,
                    'attention_dropout_rate': 0.0, 'dropout_rate': 0.0},
    'classifier': 'token', 'representation_size': None,
}


def random_params(model, height, width=None, *, seed=0, scale=0.1,
                  unit_scales=False):
  """Random float32 numpy params in the model's tree, shaped by eval_shape.

  Nothing is initialised eagerly, so this is fast. With `unit_scales`,
  LayerNorm/GroupNorm scales are 1 + noise, which keeps activations of order
  one so that predictions depend on the image.
  """
  x = jax.ShapeDtypeStruct((1, height, width or height, 3), jnp.float32)
  shapes = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    base = float(unit_scales and path[-1].key == 'scale')
    return (base + scale * rng.standard_normal(s.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(leaf, shapes['params'])
