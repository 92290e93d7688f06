"""One jitted pass: forward, attention capture and the attention analyses.

The (L, B, H, T, T) attention tensor never leaves the jit and is never
stacked: each layer's (B, H, T, T) weights are reduced where they are
produced, to per-image distances (B, H) and a head mean (B, T, T) for the
rollout. Outputs are small, so a dataset can be processed in chunks and the
per-image results concatenated on the host.
"""

from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp

from vit_jax.inspect import capture
from vit_jax.inspect import distance
from vit_jax.inspect import position
from vit_jax.inspect import rollout

Array = jax.Array


class Analysis(NamedTuple):
  """Per-image results of `make_analysis_fn`.

  logits: (B, classes) float32 (or pre-logits features without a head).
  distance: (B, L, H) mean attention distance in pixels per image.
  rollout_maps: (B, gh, gw) class-token rollout map, max 1 per image.
  """
  logits: Array
  distance: Array
  rollout_maps: Array


def build_analysis(model, image_hw: Sequence[int], renormalize: bool = False
                   ) -> Callable[[Any, Array], Analysis]:
  """Traceable (not jitted) `analyze(params, images)`, to compose in a jit."""
  geo = capture.geometry(model, image_hw)

  def analyze(params, images: Array) -> Analysis:
    logits, weights = capture.forward_with_attention(model, params, images)
    position.check_grid(geo.grid, weights[0].shape[-1],
                        geo.num_prefix_tokens, 'captured attention')
    dist = jnp.stack([
        distance.per_image_distance(w, geo.grid, geo.patch,
                                    geo.num_prefix_tokens, renormalize)
        for w in weights], axis=1)
    heads_mean = jnp.stack(
        [jnp.mean(w.astype(jnp.float32), axis=1) for w in weights])
    row = rollout.rollout_row(heads_mean, geo.num_prefix_tokens)
    maps = rollout.map_from_row(row, geo.grid, geo.num_prefix_tokens)
    return Analysis(logits, dist, maps)

  return analyze


def make_analysis_fn(model, image_hw: Sequence[int],
                     renormalize: bool = False
                     ) -> Callable[[Any, Array], Analysis]:
  """Returns jitted `analyze(params, images) -> Analysis`.

  Args:
    model: a ViT or hybrid `VisionTransformer`.
    image_hw: (H, W) of the images that will be passed, in pixels.
    renormalize: passed to the attention-distance formula.
  """
  capture.check_has_attention(model)
  hw = tuple(int(v) for v in image_hw)
  kind = f'analysis-{hw}-{bool(renormalize)}'
  return capture.cached_jit(kind, model,
                            lambda m: build_analysis(m, hw, bool(renormalize)))


def make_forward_fn(model) -> Callable[[Any, Array], Array]:
  """Returns jitted `forward(params, images) -> logits` (the baseline)."""
  return capture.cached_jit(
      'forward', model,
      lambda m: lambda p, x: m.apply({'params': p}, x, train=False))
