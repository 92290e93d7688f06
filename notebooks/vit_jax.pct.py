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
# # vit_jax: load a checkpoint, predict, fine-tune, export
#
# 1. **Load** a checkpoint: the official ViT-B/16 (ImageNet-21k pre-trained,
#    ImageNet-1k fine-tuned, 384 px) when the network is reachable (Colab);
#    offline, the export of the quickstart
#    (`python main.py --config=vit_jax/configs/quickstart.py
#    --workdir=/tmp/quickstart`), else a freshly initialised quickstart-sized
#    model. The cell prints which one it used.
# 2. **Predict** the top-5 classes of an image, with class names.
# 3. **Fine-tune** that checkpoint for a few steps on the offline digits
#    dataset with `train.run`, and evaluate it.
# 4. **Export** to the official `.npz` layout and reload it.
#
# Images go through the project's one image loader (`vit_jax.images`): the
# eval pipeline's decode, resize and [-1, 1] normalisation.
#
# The source of this notebook is `notebooks/vit_jax.pct.py` (jupytext); its
# outputs come from the test suite's offline run.

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
MODEL_NAME = 'ViT-B_16'  # The official checkpoint, when online.
DATASET = 'imagenet21k+imagenet2012'  # Its ImageNet-1k head, 384 px.
CHECKPOINT_DIR = 'checkpoints'
LABELS_URL = ('https://storage.googleapis.com/bit_models/'
              'ilsvrc2012_wordnet_lemmas.txt')
QUICKSTART_WORKDIR = os.environ.get('VIT_JAX_QUICKSTART_WORKDIR',
                                    '/tmp/quickstart')
WORK_DIR = os.environ.get('VIT_JAX_NOTEBOOK_DIR', 'vit_jax_work')  # Outputs.
TOP_K = 5
FINETUNE_STEPS = 4 if SMALL else 200
FINETUNE_BATCH = 16 if SMALL else 64
FINETUNE_CROP = 64  # Official model only; quickstart models keep theirs.

# %%
import glob
import shutil
import urllib.request

from IPython.display import display
import jax
import numpy as np
from PIL import Image

from vit_jax import checkpoint
from vit_jax.checkpoint import remote as checkpoint_remote
from vit_jax import datasets
from vit_jax import digits
from vit_jax import images
from vit_jax import models
from vit_jax import predict
from vit_jax import train
from vit_jax import workdir as workdir_lib
from vit_jax.configs import quickstart

# %% [markdown]
# ## 1. Load a checkpoint
#
# `predict.load_model` reads a training workdir (its `model.json` gives the
# model, class names and resolution) or an official `.npz` (the model is
# named; the number of classes comes from the head).


# %%
def generate_small_model(workdir):
  """An untrained quickstart-sized ViT, exported as a training run would."""
  config = quickstart.get_config()
  info = datasets.dataset_info(config)  # Writes digits if needed.
  workdir_lib.export_untrained(workdir, config=config, info=info)
  return workdir


labels = None
if USE_NETWORK and checkpoint_remote.reachable():
  source = 'official'
  checkpoint_path = checkpoint_remote.download(
      MODEL_NAME, directory=CHECKPOINT_DIR, dataset=DATASET)
  labels = os.path.join(CHECKPOINT_DIR, 'ilsvrc2012_wordnet_lemmas.txt')
  if not os.path.exists(labels):
    urllib.request.urlretrieve(LABELS_URL, labels)
  loaded = predict.load_model(checkpoint_path, MODEL_NAME)
elif os.path.exists(os.path.join(QUICKSTART_WORKDIR, workdir_lib.MODEL_NPZ)):
  source = 'quickstart'
  checkpoint_path = QUICKSTART_WORKDIR
  loaded = predict.load_model(checkpoint_path)
else:
  source = 'generated'
  checkpoint_path = generate_small_model(os.path.join(WORK_DIR, 'generated'))
  loaded = predict.load_model(checkpoint_path)
names = predict.get_class_names(loaded.model.num_classes, labels,
                                loaded.class_names)
print(f'Checkpoint source: {source} ({checkpoint_path})')
print(f'{loaded.model_name} at {loaded.resolution} px, {len(names)} classes')
if source == 'generated':
  print('Untrained weights: expect near-uniform predictions until the '
        'fine-tuning below.')

# %% [markdown]
# ## 2. Predict the top-5 classes of an image
#
# Online: a photo for the ImageNet model. Offline: a test digit. Shown is
# what the model sees: the loader's output, mapped back from [-1, 1].

# %%
digit_path = sorted(
    glob.glob(os.path.join(digits.ensure_digits(), 'test', '3', '*.png')))[0]
if source == 'official':
  image_path = os.path.join(CHECKPOINT_DIR, 'photo.jpg')
  urllib.request.urlretrieve('https://picsum.photos/seed/vit_jax/384',
                             image_path)
else:
  image_path = digit_path
image = images.load_image(image_path, loaded.resolution)
print(f'{image_path}: {image.shape}, values in [{image.min():.2f}, '
      f'{image.max():.2f}]')
display(Image.fromarray(np.uint8(np.round((image + 1) * 127.5))).resize(
    (128, 128), Image.Resampling.NEAREST))
top = predict.predict(loaded.model, loaded.params, image, top_k=TOP_K,
                      class_names=names)[0]
for name, prob in top:
  print(f'{prob:8.2%}  {name}')

# %% [markdown]
# ## 3. Fine-tune on digits
#
# The quickstart config with `pretrained_path` set to the checkpoint:
# `checkpoint.load_pretrained` gives it a fresh 10-class head (and resizes
# the position embedding if the crop differs). The run writes orbax
# checkpoints, TensorBoard events and, at the end, `model.npz` +
# `model.json` into its workdir.

# %%
config = quickstart.get_config()
if source == 'official':
  config.model = models.get_model_config(MODEL_NAME)
  config.pretrained_path = checkpoint_path
  config.pp.crop = FINETUNE_CROP
  # The original's fine-tuning recipe: SGD with momentum, base_lr 0.03.
  config.optimizer, config.base_lr = 'sgd', 0.03
else:  # The quickstart's own optimizer (Adam) and learning rate.
  config.model = workdir_lib.read_metadata(checkpoint_path)['model']
  config.pretrained_path = os.path.join(checkpoint_path, workdir_lib.MODEL_NPZ)
config.total_steps = FINETUNE_STEPS
config.warmup_steps = min(config.warmup_steps, FINETUNE_STEPS // 2)
config.batch = FINETUNE_BATCH
config.eval_every = config.checkpoint_every = FINETUNE_STEPS
config.progress_every = max(1, FINETUNE_STEPS // 4)
finetune_dir = os.path.join(WORK_DIR, 'finetune')
shutil.rmtree(finetune_dir, ignore_errors=True)  # A fresh run, not a resume.
result = train.run(config, finetune_dir)
print(f'Test accuracy after {result.step} steps: {result.accuracy:.1%}')

# %% [markdown]
# ## 4. Export and reload
#
# `model.npz` has the official layout (pre-Linen names), so the original
# release and timm read it too; `save` and `load` round-trip exactly.

# %%
print(sorted(os.listdir(finetune_dir)))
model, params, meta = workdir_lib.load_exported(finetune_dir)
copy_path = os.path.join(finetune_dir, 'copy.npz')
checkpoint.save(params, copy_path)
same = jax.tree.map(np.array_equal, params, checkpoint.load(copy_path))
assert all(jax.tree.leaves(same)), 'save/load did not round-trip'
print(f'Reloaded {meta["model_name"]}: {meta["num_classes"]} classes '
      f'{meta["class_names"]}, {meta["resolution"]} px')

finetuned = predict.load_model(finetune_dir)
image = images.load_image(digit_path, finetuned.resolution)
for name, prob in predict.predict(finetuned.model, finetuned.params, image,
                                  top_k=TOP_K,
                                  class_names=finetuned.class_names)[0]:
  print(f'{prob:8.2%}  {name}')
