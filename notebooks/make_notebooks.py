"""Writes notebooks/vit_jax.ipynb and notebooks/inspect.ipynb, without outputs.

  python notebooks/make_notebooks.py

The notebooks are generated so that they stay clean (no outputs, fixed cell
ids) and share their setup cells; edit this file, not the .ipynb files
(tests/notebooks_test.py checks that both agree). Both run top to bottom
offline; `VIT_JAX_NOTEBOOK_SMALL=1` selects a tiny configuration (a few
steps, a few images) that the tests execute.
"""

import os
import re
from typing import List, Tuple

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
Cell = Tuple[str, str]  # ('markdown' | 'code', source).

# Where Colab installs the project from.
PIP_SPEC = 'git+https://github.com/OWNER/vit_jax.git'

INSTALL = '''\
# On Colab: install vit_jax unless it is already importable (e.g. after
# `pip install -e .` in a clone, as on CI).
try:
  import vit_jax  # pylint: disable=unused-import
except ImportError:
  import subprocess
  import sys
  # Any pip requirement for vit_jax: set VIT_JAX_PIP_SPEC (a fork, a wheel,
  # a clone on Drive), or replace OWNER with the GitHub account that hosts
  # the repository you cloned (the project has no PyPI release).
  spec = os.environ.get('VIT_JAX_PIP_SPEC',
                        '%s')
  subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', spec])
'''

GENERATE = '''\
def generate_small_model(workdir):
  """Exports an untrained quickstart-sized ViT (model.npz + model.json).

  The offline fallback when there is neither an official checkpoint nor a
  quickstart workdir: the same files `train.train_and_evaluate` exports.
  """
  config = quickstart.get_config()
  info = input_pipeline.dataset_info(config)  # Writes digits if needed.
  model = train.create_model(config, info.num_classes)
  x = np.zeros((1, config.pp.crop, config.pp.crop, 3), np.float32)
  params = model.init(jax.random.PRNGKey(0), x, train=False)['params']
  export.export_model(workdir, params=params, config=config, info=info)
  return workdir
'''


def _vit_jax_cells() -> List[Cell]:
  """Load a checkpoint, predict, fine-tune, export and reload."""
  return [
      ('markdown', '''\
# vit_jax: load a checkpoint, predict, fine-tune, export

1. **Load** a checkpoint: the official ViT-B/16 (ImageNet-21k pre-trained,
   ImageNet-1k fine-tuned, 384 px) when the network is reachable; offline,
   the export of the quickstart
   (`python main.py --config=vit_jax/configs/quickstart.py
   --workdir=/tmp/quickstart`), else a freshly initialised quickstart-sized
   model. The cell prints which one it used.
2. **Predict** the top-5 classes of an image, with class names.
3. **Fine-tune** that checkpoint for a few steps on the offline digits
   dataset with `train.train_and_evaluate`, and evaluate it.
4. **Export** to the official `.npz` layout and reload it.

Images are mapped to [-1, 1] by the project's one preprocessing
(`input_pipeline.preprocess_for_eval`), for every model.'''),
      ('code', 'import os\n\n' + INSTALL % PIP_SPEC),
      ('code', '''\
# Parameters. VIT_JAX_NOTEBOOK_SMALL=1: the tiny offline run of the tests.
SMALL = os.environ.get('VIT_JAX_NOTEBOOK_SMALL', '0') == '1'
USE_NETWORK = not SMALL and os.environ.get('VIT_JAX_OFFLINE', '0') != '1'
MODEL_NAME = 'ViT-B_16'  # The official checkpoint, when online.
DATASET = 'imagenet21k+imagenet2012'  # Its ImageNet-1k head, 384 px.
CHECKPOINT_DIR = 'checkpoints'
LABELS_URL = ('https://storage.googleapis.com/bit_models/'
              'ilsvrc2012_wordnet_lemmas.txt')
QUICKSTART_WORKDIR = os.environ.get('VIT_JAX_QUICKSTART_WORKDIR',
                                    '/tmp/quickstart')
TOP_K = 5
FINETUNE_STEPS = 4 if SMALL else 200
FINETUNE_BATCH = 16 if SMALL else 64
FINETUNE_CROP = 64  # Official model only; quickstart models keep theirs.'''),
      ('code', '''\
import glob
import socket
import tempfile
import urllib.request

import jax
import numpy as np
from PIL import Image

from vit_jax import checkpoint
from vit_jax import checkpoint_download
from vit_jax import digits
from vit_jax import export
from vit_jax import input_pipeline
from vit_jax import models
from vit_jax import predict
from vit_jax import train
from vit_jax.configs import quickstart'''),
      ('markdown', '''\
## 1. Load a checkpoint

`predict.load_model` reads a training workdir (its `model.json` gives the
model, class names and resolution) or an official `.npz` (the model is
named; the number of classes comes from the head).'''),
      ('code', GENERATE + '''

def network_available(host='storage.googleapis.com', timeout=3.0):
  """True when `host` accepts an HTTPS connection."""
  try:
    socket.create_connection((host, 443), timeout=timeout).close()
    return True
  except OSError:
    return False


labels = None
if USE_NETWORK and network_available():
  source = 'official'
  checkpoint_path = checkpoint_download.download(
      MODEL_NAME, directory=CHECKPOINT_DIR, dataset=DATASET)
  labels = os.path.join(CHECKPOINT_DIR, 'ilsvrc2012_wordnet_lemmas.txt')
  if not os.path.exists(labels):
    urllib.request.urlretrieve(LABELS_URL, labels)
  loaded = predict.load_model(checkpoint_path, MODEL_NAME)
elif os.path.exists(os.path.join(QUICKSTART_WORKDIR, export.MODEL_NPZ)):
  source = 'quickstart'
  checkpoint_path = QUICKSTART_WORKDIR
  loaded = predict.load_model(checkpoint_path)
else:
  source = 'generated'
  checkpoint_path = generate_small_model(
      tempfile.mkdtemp(prefix='vit_jax_generated_'))
  loaded = predict.load_model(checkpoint_path)
names = predict.get_class_names(loaded.model.num_classes, labels,
                                loaded.class_names)
print(f'Checkpoint source: {source} ({checkpoint_path})')
print(f'{loaded.model_name} at {loaded.resolution} px, {len(names)} classes')
if source == 'generated':
  print('Untrained weights: expect near-uniform predictions until the '
        'fine-tuning below.')'''),
      ('markdown', '''\
## 2. Predict the top-5 classes of an image

Online: a random photo for the ImageNet model. Offline: a test digit.'''),
      ('code', '''\
digit_path = sorted(
    glob.glob(os.path.join(digits.ensure_digits(), 'test', '3', '*.png')))[0]
if source == 'official':
  image_path = os.path.join(CHECKPOINT_DIR, 'picsum.jpg')
  urllib.request.urlretrieve('https://picsum.photos/384', image_path)
else:
  image_path = digit_path
image = predict.load_image(image_path, loaded.resolution)
print(f'{image_path}: {image.shape}, values in [{image.min():.2f}, '
      f'{image.max():.2f}]')
display(Image.open(image_path).convert('RGB').resize(
    (128, 128), Image.Resampling.NEAREST))
top = predict.predict(loaded.model, loaded.params, image, top_k=TOP_K,
                      class_names=names)[0]
for name, prob in top:
  print(f'{prob:8.2%}  {name}')'''),
      ('markdown', '''\
## 3. Fine-tune on digits

The quickstart config with `pretrained_path` set to the checkpoint:
`checkpoint.load_pretrained` gives it a fresh 10-class head (and resizes
the position embedding if the crop differs). The run writes orbax
checkpoints, TensorBoard events and, at the end, `model.npz` +
`model.json` into its workdir.'''),
      ('code', '''\
config = quickstart.get_config()
if source == 'official':
  config.model = models.get_model_config(MODEL_NAME)
  config.pretrained_path = checkpoint_path
  config.pp.crop = FINETUNE_CROP
  # The original's fine-tuning recipe: SGD with momentum, base_lr 0.03.
  config.optimizer, config.base_lr = 'sgd', 0.03
else:  # The quickstart's own optimizer (Adam) and learning rate.
  config.model = export.read_metadata(checkpoint_path)['model']
  config.pretrained_path = os.path.join(checkpoint_path, export.MODEL_NPZ)
config.total_steps = FINETUNE_STEPS
config.warmup_steps = min(config.warmup_steps, FINETUNE_STEPS // 2)
config.batch = FINETUNE_BATCH
config.eval_every = config.checkpoint_every = FINETUNE_STEPS
config.progress_every = max(1, FINETUNE_STEPS // 4)
finetune_dir = tempfile.mkdtemp(prefix='vit_jax_finetune_')
result = train.run(config, finetune_dir)
print(f'Test accuracy after {result.step} steps: {result.accuracy:.1%}')'''),
      ('markdown', '''\
## 4. Export and reload

`model.npz` has the official layout (pre-Linen names), so the original
release and timm read it too; `save` and `load` round-trip exactly.'''),
      ('code', '''\
print(sorted(os.listdir(finetune_dir)))
model, params, meta = export.load_exported(finetune_dir)
copy_path = os.path.join(finetune_dir, 'copy.npz')
checkpoint.save(params, copy_path)
same = jax.tree.map(np.array_equal, params, checkpoint.load(copy_path))
assert all(jax.tree.leaves(same)), 'save/load did not round-trip'
print(f'Reloaded {meta["model_name"]}: {meta["num_classes"]} classes '
      f'{meta["class_names"]}, {meta["resolution"]} px')

finetuned = predict.load_model(finetune_dir)
image = predict.load_image(digit_path, finetuned.resolution)
for name, prob in predict.predict(finetuned.model, finetuned.params, image,
                                  top_k=TOP_K,
                                  class_names=finetuned.class_names)[0]:
  print(f'{prob:8.2%}  {name}')'''),
  ]


_READINGS = {
    'filters': '''\
## Embedding filters (Fig. 7, left)

The patch embedding projects each flattened P x P x 3 patch with D filters;
shown are the top principal components of those filters (centred PCA, each
tile min-max scaled jointly over its pixels and channels, 4 x 7 like the
paper).

**The paper's reading:** the components "resemble plausible basis functions
for a low-dimensional representation of the fine structure within each
patch". In ViT-L/32 the first few are grey high-frequency patterns
(checkerboards, stripes), later ones coloured blob- and Gabor-like ones.
An untrained model shows noise.''',
    'position': '''\
## Position-embedding similarity (Fig. 7, centre)

Tile (r, c) shows the cosine similarity between the position embedding of
the patch at row r, column c and those of all patches (viridis, -1 to 1; the
brightest pixel of each tile is the patch itself).

**The paper's reading:** closer patches have more similar embeddings
(locality), and a row-column structure appears: patches in the same row or
column are similar. Larger grids sometimes show sinusoidal structure, and
the pattern depends on the training hyperparameters (Fig. 10).''',
    'distance': '''\
## Mean attention distance (Fig. 7, right)

For every layer and head: the distance in pixels between a query patch and
the patches it attends to, weighted by attention, averaged over queries and
images (the analogue of a CNN's receptive-field size).

**The paper's reading:** some heads attend to most of the image already in
the lowest layers, so information is integrated globally from the start;
others stay local (in ViT-L/16, 7 of 16 heads are below 40 px in layer 0).
The distance grows with depth, and deep layers attend almost uniformly
(close to the uniform-attention value printed below).''',
    'rollout': '''\
## Attention rollout (Fig. 6, Fig. 14)

Attention averaged over heads, the identity added for the residual
connections, rows renormalised and multiplied through all layers (Abnar &
Zuidema); the class token's row over the patches is blurred, resized and
used as a mask over the image.

**The paper's reading:** the model attends to image regions that are
semantically relevant for classification: the mask highlights the object
(here, the strokes of the digit) and darkens the background.''',
}


def _inspect_cells() -> List[Cell]:
  """The four figures of `vit_jax.inspect` with the paper's readings."""
  return [
      ('markdown', '''\
# Inspecting Vision Transformer

The four analyses of the paper's section 4.5 (`vit_jax.inspect`) on a
checkpoint: a training workdir such as the quickstart's
(`python main.py --config=vit_jax/configs/quickstart.py
--workdir=/tmp/quickstart`) or an official `.npz` (set `MODEL_NAME`). The
command line `python -m vit_jax.inspect` writes the same figures. Without
a checkpoint the notebook generates an untrained model, whose figures show
no structure.'''),
      ('code', 'import os\n\n' + INSTALL % PIP_SPEC),
      ('code', '''\
# Parameters. VIT_JAX_NOTEBOOK_SMALL=1: the tiny offline run of the tests.
SMALL = os.environ.get('VIT_JAX_NOTEBOOK_SMALL', '0') == '1'
CHECKPOINT = os.environ.get('VIT_JAX_QUICKSTART_WORKDIR', '/tmp/quickstart')
MODEL_NAME = None  # Required for official .npz files, e.g. 'ViT-L_16'.
RESOLUTION = None  # Default: the workdir's, else 224.
IMAGES = None  # Folder or comma-separated files; default: test digits.
MAX_IMAGES = 8 if SMALL else 128  # The paper averages 128 images.
ROLLOUT_IMAGES = 4 if SMALL else 8
BATCH_SIZE = 32
OUT = os.environ.get('VIT_JAX_INSPECT_OUT', '/tmp/vit_jax_inspect')'''),
      ('code', '''\
import tempfile

from IPython.display import Image as ShowImage
import jax
import numpy as np

from vit_jax import digits
from vit_jax import export
from vit_jax import input_pipeline
from vit_jax import inspect as vi
from vit_jax import train
from vit_jax.configs import quickstart
from vit_jax.inspect import loading
from vit_jax.inspect import plots'''),
      ('code', GENERATE + '''

if not os.path.exists(CHECKPOINT):
  print(f'{CHECKPOINT} does not exist: generating an untrained model.')
  CHECKPOINT = generate_small_model(
      tempfile.mkdtemp(prefix='vit_jax_generated_'))
loaded = loading.load_model(CHECKPOINT, MODEL_NAME, RESOLUTION)
res = loaded.resolution
geo = vi.geometry(loaded.model, (res, res))
os.makedirs(OUT, exist_ok=True)
print(f'{loaded.model_name} from {CHECKPOINT} at {res} px: '
      f'{geo.grid[0]}x{geo.grid[1]} patches of {geo.patch[0]} px; '
      f'figures in {OUT}')'''),
      ('markdown', _READINGS['filters']),
      ('code', '''\
kernel = loaded.params['embedding']['kernel']  # (P, P, 3, D)
k = min(28, kernel.shape[-1], int(np.prod(kernel.shape[:3])))
pca = vi.embedding_filters(kernel, k)
print('Explained variance ratio of the first 5 components:',
      np.round(np.asarray(pca.explained_variance_ratio[:5]), 3))
path = os.path.join(OUT, 'filters.png')
plots.plot_filters(pca.components, path)
ShowImage(filename=path)'''),
      ('markdown', _READINGS['position']),
      ('code', '''\
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
ShowImage(filename=path)'''),
      ('markdown', _READINGS['distance']),
      ('code', '''\
candidates = loading.list_images(
    IMAGES or os.path.join(digits.ensure_digits(), 'test'))
pick = np.random.default_rng(0).permutation(len(candidates))[:MAX_IMAGES]
paths = [candidates[i] for i in pick]
images = loading.load_images(paths, res)  # [-1, 1]
analyze = vi.make_analysis_fn(loaded.model, (res, res))
outs = [analyze(loaded.params, images[i:i + BATCH_SIZE])
        for i in range(0, len(images), BATCH_SIZE)]
distance = np.concatenate([np.asarray(o.distance) for o in outs]).mean(0)
maps = np.concatenate([np.asarray(o.rollout_maps) for o in outs])
uniform = float(np.asarray(vi.distance_matrix(geo.grid, geo.patch)).mean())
print(f'{len(paths)} images; uniform attention would give {uniform:.1f} px')
for layer, row in enumerate(distance):
  print(f'layer {layer}: heads from {row.min():5.1f} to {row.max():5.1f} px')
path = os.path.join(OUT, 'distance.png')
plots.plot_attention_distance(distance, path, title=loaded.model_name)
ShowImage(filename=path)'''),
      ('markdown', _READINGS['rollout']),
      ('code', '''\
n = min(ROLLOUT_IMAGES, len(images))
path = os.path.join(OUT, 'rollout.png')
plots.plot_rollout((images[:n] + 1) / 2, maps[:n], geo.patch[0], path)
ShowImage(filename=path)'''),
  ]


def _slug(text: str) -> str:
  return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-')[:40]


def build(cells: List[Cell]) -> nbformat.NotebookNode:
  """A clean notebook (no outputs) with deterministic cell ids."""
  nb = nbformat.v4.new_notebook()
  nb.metadata = {
      'kernelspec': {'display_name': 'Python 3', 'language': 'python',
                     'name': 'python3'},
      'language_info': {'name': 'python'},
  }
  for i, (kind, source) in enumerate(cells):
    make = (nbformat.v4.new_markdown_cell if kind == 'markdown'
            else nbformat.v4.new_code_cell)
    cell = make(source)
    first_line = source.lstrip('# ').splitlines()[0]
    cell['id'] = f'{i:02d}-{_slug(first_line)}'
    if source.startswith('# Parameters.'):
      cell.metadata['tags'] = ['parameters']  # papermill's convention.
    nb.cells.append(cell)
  nbformat.validate(nb)
  return nb


NOTEBOOKS = {'vit_jax.ipynb': _vit_jax_cells, 'inspect.ipynb': _inspect_cells}


def render(name: str) -> str:
  """The text of notebooks/<name> as this script writes it."""
  return nbformat.writes(build(NOTEBOOKS[name]()), version=4) + '\n'


def main() -> None:
  for name in NOTEBOOKS:
    path = os.path.join(HERE, name)
    with open(path, 'w', encoding='utf-8') as f:
      f.write(render(name))
    print(f'Wrote {path}')


if __name__ == '__main__':
  main()
