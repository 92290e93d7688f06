# ---
# jupyter:
#   jupytext:
#     formats: ipynb,.pct.py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Inspecting Vision Transformer
#
# The four analyses of the paper's section 4.5 (`vit_jax.inspect`) on a
# checkpoint, with the paper's reading of each figure. The checkpoint, first
# found wins:
# 1. `CHECKPOINT`: a training workdir, such as the quickstart's
#    (`python main.py --config=vit_jax/configs/quickstart.py
#    --workdir=/tmp/quickstart`), or an official `.npz` of `MODEL_NAME`,
#    analysed on test digits (or on `IMAGES`);
# 2. when the network is reachable (Colab): the official ViT-B/16
#    (ImageNet-21k + ImageNet-1k, 384 px), downloaded with
#    `vit_jax.checkpoint.remote`, analysed on a few photos;
# 3. offline without a workdir: a freshly initialised quickstart-sized model,
#    whose figures show no structure (what the committed outputs show: they
#    come from the test suite's offline run).
#
# The command line `python -m vit_jax.inspect` writes the same figures. The
# source of this notebook is `notebooks/inspect.pct.py` (jupytext).

# %%
# On Colab: installs vit_jax from REPO_URL, the GitHub address of the
# repository (or of your fork): the one place to set it. Skipped where
# vit_jax is importable (a clone after `pip install -e .`, the tests).
REPO_URL = ''  # e.g. 'https://github.com/<org>/vit_jax'

import importlib.util
import os
import subprocess
import sys

if importlib.util.find_spec('vit_jax') is None:
  if not REPO_URL:
    raise RuntimeError(
        'vit_jax is not installed: set REPO_URL in this cell to the GitHub '
        'address of the vit_jax repository and run it again.')
  subprocess.check_call(
      [sys.executable, '-m', 'pip', 'install', '-q', f'git+{REPO_URL}'])

# %% tags=["parameters"]
# Parameters. VIT_JAX_NOTEBOOK_SMALL=1: the tiny offline run of the tests.
SMALL = os.environ.get('VIT_JAX_NOTEBOOK_SMALL', '0') == '1'
USE_NETWORK = not SMALL and os.environ.get('VIT_JAX_OFFLINE', '0') != '1'
# A training workdir, or an official .npz of model MODEL_NAME.
CHECKPOINT = os.environ.get('VIT_JAX_QUICKSTART_WORKDIR', '/tmp/quickstart')
MODEL_NAME = 'ViT-B_16'  # Downloaded when online and CHECKPOINT is missing.
DATASET = 'imagenet21k+imagenet2012'  # Its ImageNet-1k head, 384 px.
CHECKPOINT_DIR = 'checkpoints'
RESOLUTION = None  # Default: the checkpoint's own.
IMAGES = None  # Folder or comma-separated files; default: digits or photos.
NUM_PHOTOS = 8  # Downloaded when the official model is used.
MAX_IMAGES = 8 if SMALL else 128  # The paper averages 128 images.
ROLLOUT_IMAGES = 4 if SMALL else 8
BATCH_SIZE = 32
WORK_DIR = os.environ.get('VIT_JAX_NOTEBOOK_DIR', 'vit_jax_work')  # Outputs.
OUT = os.path.join(WORK_DIR, 'inspect')

# %%
import urllib.request

from IPython.display import Image as ShowImage
import numpy as np

from vit_jax.checkpoint import remote as checkpoint_remote
from vit_jax import datasets
from vit_jax import digits
from vit_jax import inspect as vi
from vit_jax import workdir as workdir_lib
from vit_jax.configs import quickstart
from vit_jax.inspect import loading
from vit_jax.inspect import plots


# %%
def generate_small_model(workdir):
  """An untrained quickstart-sized ViT, exported as a training run would."""
  config = quickstart.get_config()
  info = datasets.dataset_info(config)  # Writes digits if needed.
  workdir_lib.export_untrained(workdir, config=config, info=info)
  return workdir


def download_photos(folder, count):
  """`count` fixed photos (picsum.photos seeds) as folder/photo_<i>.jpg."""
  os.makedirs(folder, exist_ok=True)
  for i in range(count):
    path = os.path.join(folder, f'photo_{i}.jpg')
    if not os.path.exists(path):
      urllib.request.urlretrieve(
          f'https://picsum.photos/seed/vit_jax_{i}/384', path)
  return folder


image_spec = IMAGES or os.path.join(digits.ensure_digits(), 'test')
if os.path.exists(CHECKPOINT):  # A workdir knows its model; a file not.
  source = 'local'
  model_name = None if os.path.isdir(CHECKPOINT) else MODEL_NAME
elif USE_NETWORK and checkpoint_remote.reachable():
  source, model_name = 'official', MODEL_NAME
  CHECKPOINT = checkpoint_remote.download(
      MODEL_NAME, directory=CHECKPOINT_DIR, dataset=DATASET)
  image_spec = IMAGES or download_photos(
      os.path.join(CHECKPOINT_DIR, 'photos'), NUM_PHOTOS)
else:
  source, model_name = 'generated', None
  print(f'{CHECKPOINT} does not exist and the network is off: generating '
        'an untrained model.')
  CHECKPOINT = generate_small_model(os.path.join(WORK_DIR, 'generated'))
loaded = loading.load_model(CHECKPOINT, model_name, RESOLUTION)
res = loaded.resolution
geo = vi.geometry(loaded.model, (res, res))
os.makedirs(OUT, exist_ok=True)
print(f'{loaded.model_name} ({source}) from {CHECKPOINT} at {res} px: '
      f'{geo.grid[0]}x{geo.grid[1]} patches of {geo.patch[0]} px; '
      f'figures in {OUT}')

# %% [markdown]
# ## Embedding filters (Fig. 7, left)
#
# The patch embedding projects each flattened P x P x 3 patch with D filters;
# shown are the top principal components of those filters (centred PCA, each
# tile min-max scaled jointly over its pixels and channels, 4 x 7 like the
# paper).
#
# **The paper's reading:** the components "resemble plausible basis functions
# for a low-dimensional representation of the fine structure within each
# patch". In ViT-L/32 the first few are grey high-frequency patterns
# (checkerboards, stripes), later ones coloured blob- and Gabor-like ones.
# An untrained model (the offline fallback) shows noise.

# %%
kernel = loaded.params['embedding']['kernel']  # (P, P, 3, D)
k = min(28, kernel.shape[-1], int(np.prod(kernel.shape[:3])))
pca = vi.embedding_filters(kernel, k)
print('Explained variance ratio of the first 5 components:',
      np.round(np.asarray(pca.explained_variance_ratio[:5]), 3))
path = os.path.join(OUT, 'filters.png')
plots.plot_filters(pca.components, path)
ShowImage(filename=path)

# %% [markdown]
# ## Position-embedding similarity (Fig. 7, centre)
#
# Tile (r, c) shows the cosine similarity between the position embedding of
# the patch at row r, column c and those of all patches (viridis, -1 to 1; the
# brightest pixel of each tile is the patch itself).
#
# **The paper's reading:** closer patches have more similar embeddings
# (locality), and a row-column structure appears: patches in the same row or
# column are similar. Larger grids sometimes show sinusoidal structure, and
# the pattern depends on the training hyperparameters (Fig. 10).

# %%
pos_embedding = loaded.params['Transformer']['posembed_input'][
    'pos_embedding']
sim = np.asarray(vi.posemb_similarity(pos_embedding, geo.grid,
                                      geo.num_prefix_tokens))
# Locality in one number: neighbours vs all other pairs.
steps = np.asarray(vi.distance_matrix(geo.grid, geo.patch)) / geo.patch[0]
print(f'Mean similarity of adjacent patches {sim[steps == 1].mean():.2f}, '
      f'of all other pairs {sim[steps > 1].mean():.2f}')
path = os.path.join(OUT, 'position.png')
plots.plot_position_similarity(sim, geo.grid, path)
ShowImage(filename=path)

# %% [markdown]
# ## Mean attention distance (Fig. 7, right)
#
# For every layer and head: the distance in pixels between a query patch and
# the patches it attends to, weighted by attention, averaged over queries and
# images (the analogue of a CNN's receptive-field size).
#
# **The paper's reading:** some heads attend to most of the image already in
# the lowest layers, so information is integrated globally from the start;
# others stay local (in ViT-L/16, 7 of 16 heads are below 40 px in layer 0).
# The distance grows with depth, and deep layers attend almost uniformly
# (close to the uniform-attention value printed below).

# %%
candidates = loading.list_images(image_spec)
pick = np.random.default_rng(0).permutation(len(candidates))[:MAX_IMAGES]
paths = [candidates[i] for i in pick]
pixels = loading.load_images(paths, res)  # The one loader: [-1, 1].
analyze = vi.make_analysis_fn(loaded.model, (res, res))
outs = [analyze(loaded.params, pixels[i:i + BATCH_SIZE])
        for i in range(0, len(pixels), BATCH_SIZE)]
distance = np.concatenate([np.asarray(o.distance) for o in outs]).mean(0)
maps = np.concatenate([np.asarray(o.rollout_maps) for o in outs])
uniform = float(np.asarray(vi.distance_matrix(geo.grid, geo.patch)).mean())
print(f'{len(paths)} images; uniform attention would give {uniform:.1f} px')
for layer, row in enumerate(distance):
  print(f'layer {layer}: heads from {row.min():5.1f} to {row.max():5.1f} px')
path = os.path.join(OUT, 'distance.png')
plots.plot_attention_distance(distance, path, title=loaded.model_name)
ShowImage(filename=path)

# %% [markdown]
# ## Attention rollout (Fig. 6, Fig. 14)
#
# Attention averaged over heads, the identity added for the residual
# connections, rows renormalised and multiplied through all layers (Abnar &
# Zuidema); the class token's row over the patches is blurred, resized and
# used as a mask over the image.
#
# **The paper's reading:** the model attends to image regions that are
# semantically relevant for classification: the mask highlights the object
# (the strokes of a digit, the subject of a photo) and darkens the
# background.

# %%
n = min(ROLLOUT_IMAGES, len(pixels))
path = os.path.join(OUT, 'rollout.png')
plots.plot_rollout((pixels[:n] + 1) / 2, maps[:n], geo.patch[0], path)
ShowImage(filename=path)
