"""Inspecting Vision Transformer: the analyses of the paper's §4.5.

  embedding_filters    PCA of the patch-embedding filters (Fig. 7 left).
  posemb_similarity    cosine similarity of position embeddings (Fig. 7
  similarity_mosaic    centre, Fig. 10) and its tiled layout.
  attention_weights    every layer's attention from one forward pass.
  mean_attention_distance   (Fig. 7 right, Fig. 11).
  attention_rollout, rollout_map   (Fig. 6, Fig. 14).
  make_analysis_fn     forward + capture + distance + rollout in one jit.

Figures live in `vit_jax.inspect.plots` (imported on demand, so importing
this package does not import matplotlib); the command line is
`python -m vit_jax.inspect`. The choices the paper leaves open are in each
module's docstring.
"""

from vit_jax.inspect.analysis import Analysis
from vit_jax.inspect.analysis import make_analysis_fn
from vit_jax.inspect.analysis import make_forward_fn
from vit_jax.inspect.capture import attention_weights
from vit_jax.inspect.capture import geometry
from vit_jax.inspect.capture import Geometry
from vit_jax.inspect.distance import distance_matrix
from vit_jax.inspect.distance import mean_attention_distance
from vit_jax.inspect.filters import embedding_filters
from vit_jax.inspect.filters import EmbeddingFilters
from vit_jax.inspect.filters import normalize_filters
from vit_jax.inspect.position import posemb_similarity
from vit_jax.inspect.position import similarity_mosaic
from vit_jax.inspect.rollout import attention_rollout
from vit_jax.inspect.rollout import rollout_map
