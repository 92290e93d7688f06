#!/usr/bin/env python3
r"""Runs the original release's two Colab notebooks against this package.

  python tools/run_original_notebooks.py --orig=PATH/vision_transformer \
      --scratch=/tmp/orig_nb [--notebooks=vit_jax,vit_jax_augreg]

PATH is a checkout of google-research/vision_transformer (its files are read,
never copied into this repository). Every code cell runs as written except:
- cells that need the network or Colab (git clone, pip, gsutil, wget/curl,
  google.colab, gs:// files, the GCS index.csv, timm, %tensorboard), which
  are replaced by local stand-ins: synthetic official-layout checkpoints
  (`test_utils.create_checkpoint`), a synthetic index table with the same
  columns, a small JPEG folder in the flower_photos layout;
- sizes shrunk for a CPU (batch, crop, steps), by exact text substitution.
Datasets come from `tfds.testing.mock_data` (split metadata written to
SCRATCH/meta). The executed notebooks are written to SCRATCH/*.out.ipynb and
a line per code cell is printed: ok / replaced / ERROR with its message.
Needs nbclient and ipykernel (and pandas + seaborn for the AugReg index
cells); the kernel imports vit_jax from this checkout.
"""

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MOCK = '''import os
os.environ['JAX_PLATFORMS'] = 'cpu'
import tensorflow_datasets as tfds
_mock = tfds.testing.mock_data(num_examples={n}, data_dir={meta!r})
_mock.__enter__()'''

_AUGREG_FILE = ('R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0'
                '--oxford_iiit_pet-steps_0k-lr_0.003-res_384')

# The AugReg index (gs://vit_models/augreg/index.csv): same columns, made up.
_INDEX = '''# network: gs://vit_models/augreg/index.csv -> a synthetic table
import itertools
_rows = []
for _k, (_n, _ds, _wd, _aug) in enumerate(itertools.product(
    ['Ti/16', 'S/32', 'R26+S/32'], ['i21k', 'i1k'], [0.1, 0.03],
    ['none', 'light1'])):
  _fn = (f"{_n.replace('/', '_').replace('+', '_')}-{_ds}-300ep-lr_0.001-"
         f"aug_{_aug}-wd_{_wd}-do_0.0-sd_0.0")
  for _res, _ads, _alr, _st in itertools.product(
      [224, 384], ['oxford_iiit_pet', 'imagenet2012'], [0.001, 0.003],
      [500, 2500]):
    _rows.append(dict(
        name=_n, ds=_ds, wd=_wd, do=0.0, sd=0.0, aug=_aug, filename=_fn,
        final_val=0.1 * (_k % 7), adapt_resolution=_res, adapt_ds=_ads,
        adapt_lr=_alr, adapt_steps=_st,
        adapt_filename=f'{_fn}--{_ads}-steps_{_st // 1000}k-lr_{_alr}-res_{_res}',
        adapt_final_val=0.5 + 0.01 * _k, adapt_final_test=0.5 + 0.01 * _k,
        infer_samples_per_sec=1000.0 / (1 + _k)))
df = pd.DataFrame(_rows)'''

_PANDAS_DROPNA = ('pandas >= 2: DataFrame.dropna(1, "all") takes keyword '
                  'arguments only')

# Notebook -> (mock examples, tfds splits to describe, cells replaced by
# index, (index, old text, new text) substitutions, cells that fail for a
# reason outside this package: index -> the reason).
NOTEBOOKS = {
    'vit_jax': (16, {'cifar10': {'train': 16, 'test': 16}}, {
        7: '# network: git clone (the package is on the path)',
        8: '# network: pip install',
        10: '# network: gsutil ls',
        11: '''model_name = 'testing'
from vit_jax import test_utils
from vit_jax.configs import models as _mc
test_utils.create_checkpoint(_mc.MODEL_CONFIGS[model_name], f'{model_name}.npz')''',
        14: '# colab: files.view',
        39: '''from vit_jax import test_utils
test_utils.create_checkpoint(model_config, f'{model_name}_imagenet2012.npz',
                             num_classes=1000, image_size=32)
model = models.VisionTransformer(num_classes=1000, **model_config)''',
        41: '''open('ilsvrc2012_wordnet_lemmas.txt', 'w').write(
    ''.join(f'class{i}\\n' for i in range(1000)))
imagenet_labels = dict(enumerate(open('ilsvrc2012_wordnet_lemmas.txt')))''',
        42: '''resolution = 32
import numpy as _np, PIL.Image
PIL.Image.fromarray(_np.random.RandomState(0).randint(
    0, 255, (32, 32, 3), _np.uint8)).save('picsum.jpg')
img = PIL.Image.open('picsum.jpg')
img''',
    }, [
        (18, 'batch_size = 512', 'batch_size = 8'),
        (18, 'crop = 224', 'crop = 32'),
        (18, 'config.batch = batch_size',
         'config.batch = batch_size\nconfig.batch_eval = batch_size'),
        (33, 'total_steps = 100', 'total_steps = 3'),
        (33, 'accum_steps = 8', 'accum_steps = 2'),
    ], {}),
    'vit_jax_augreg': (40, {'oxford_iiit_pet': {'train': 40, 'test': 40},
                            'tf_flowers': {'train': 40}}, {
        6: '# network: git clone (the package is on the path)',
        7: '# network: pip install',
        12: _INDEX,
        14: '# network: gsutil glob gs://vit_models/augreg/*.npz',
        25: f'''# network: the gs:// checkpoint -> a synthetic official-layout file
filename = '{_AUGREG_FILE}'
tfds_name = filename.split('--')[1].split('-')[0]
model_config = models_config.AUGREG_CONFIGS[filename.split('-')[0]]
resolution = int(filename.split('_')[-1])
path = f'{{filename}}.npz'
from vit_jax import test_utils
test_utils.create_checkpoint(model_config, path, num_classes=37,
                             image_size=resolution)
print(f'{{tf.io.gfile.stat(path).length / 1024 / 1024:.1f}} MiB - {{path}}')''',
        34: '# timm: pip install timm', 35: '# timm', 36: '# timm',
        37: '# timm', 40: '# %tensorboard',
        48: '''# network: curl flower_photos.tgz -> a small folder, same layout
import numpy as _np, PIL.Image
_rng = _np.random.RandomState(0)
for _c in ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips']:
  os.makedirs(f'{base}/flower_photos/{_c}', exist_ok=True)
  for _i in range(10):
    PIL.Image.fromarray(_rng.randint(0, 255, (48, 40, 3), _np.uint8)).save(
        f'{base}/flower_photos/{_c}/{_i}.jpg')''',
    }, [
        (43, 'config.batch_eval = 120',
         "config.batch_eval = 4\nconfig.batch = 8  # CPU\n"
         "config.pretrained_dir = '.'  # The synthetic file below."),
        (43, 'config.total_steps = 100', 'config.total_steps = 3'),
        (43, 'config.warmup_steps = 10', 'config.warmup_steps = 1'),
        (43, "config.pp['crop'] = 224",
         "config.pp['crop'] = 64\nfrom vit_jax import steps as _steps\n"
         "from vit_jax import test_utils\ntest_utils.create_checkpoint("
         "models_config.AUGREG_CONFIGS['R_Ti_16'], "
         "_steps.pretrained_path(config), image_size=64)"),
    ], {
        17: _PANDAS_DROPNA, 18: _PANDAS_DROPNA,
        21: 'pandas >= 3: groupby().apply() no longer passes the grouping '
            'column (name) to the function',
    }),
}


def write_split_metadata(meta_dir, name, splits):
  """tfds metadata with `splits` ({name: examples}) for mock_data."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name)
  info = builder.info
  info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0)
      for s, n in splits.items()]))
  out = os.path.join(meta_dir, name, str(builder.version))
  os.makedirs(out, exist_ok=True)
  info.write_to_directory(out)


def _last_output(cell) -> str:
  """' -> ' and the cell's last printed line or result, shortened."""
  for out in reversed(cell.outputs):
    text = (out.get('text') if out.output_type == 'stream' and
            out.name == 'stdout' else out.get('data', {}).get('text/plain'))
    if text and text.strip():
      return ' -> ' + text.strip().splitlines()[-1][:100]
  return ''


def run_notebook(orig, scratch, name):
  """Executes one notebook; returns the number of cells that raised."""
  import nbclient  # pylint: disable=g-import-not-at-top
  import nbformat  # pylint: disable=g-import-not-at-top
  examples, splits, replace, subs, known = NOTEBOOKS[name]
  meta = os.path.join(scratch, 'meta')
  for ds, counts in splits.items():
    write_split_metadata(meta, ds, counts)
  nb = nbformat.read(os.path.join(orig, f'{name}.ipynb'), as_version=4)
  for index, old, new in subs:
    if old not in nb.cells[index].source:
      sys.exit(f'{name} cell {index} no longer contains {old!r}: the '
               'notebook changed; update NOTEBOOKS in this tool.')
    nb.cells[index].source = nb.cells[index].source.replace(old, new)
  for index, source in replace.items():
    nb.cells[index].source = source
  nb.cells.insert(0, nbformat.v4.new_code_cell(
      _MOCK.format(n=examples, meta=meta)))
  work = os.path.join(scratch, name)
  os.makedirs(work, exist_ok=True)
  nbclient.NotebookClient(
      nb, timeout=900, kernel_name='python3', allow_errors=True,
      resources={'metadata': {'path': work}}).execute()
  errors = 0
  shrunk = {index for index, _, _ in subs}
  for index, cell in enumerate(nb.cells[1:]):
    if cell.cell_type != 'code':
      continue
    failed = [o for o in cell.outputs if o.output_type == 'error']
    state = ('replaced' if index in replace else
             'ERROR' if failed else 'shrunk' if index in shrunk else 'ok')
    detail = (f' {failed[0].ename}: {failed[0].evalue[:200]}' if failed
              else _last_output(cell))
    if failed and index in known:
      state, detail = 'fails outside vit_jax', f'{detail} ({known[index]})'
    print(f'{name} [{index}] {state}{detail}')
    errors += bool(failed) and index not in known
  nbformat.write(nb, os.path.join(scratch, f'{name}.out.ipynb'))
  return errors


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--orig', required=True,
                      help='checkout of google-research/vision_transformer')
  parser.add_argument('--scratch', required=True,
                      help='folder for the runs (outside this repository)')
  parser.add_argument('--notebooks', default=','.join(NOTEBOOKS))
  args = parser.parse_args()
  for name in args.notebooks.split(','):
    path = os.path.join(args.orig, f'{name}.ipynb')
    if name not in NOTEBOOKS or not os.path.isfile(path):
      sys.exit(f'{path} does not exist: --orig must be a checkout of '
               'google-research/vision_transformer (git clone --depth=1 '
               'https://github.com/google-research/vision_transformer) and '
               f'--notebooks a subset of {",".join(NOTEBOOKS)}.')
  os.environ['PYTHONPATH'] = os.pathsep.join(
      [REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p])
  errors = sum(run_notebook(args.orig, os.path.abspath(args.scratch), name)
               for name in args.notebooks.split(','))
  print(f'{errors} cells raised (not counting the known failures above)')
  return 1 if errors else 0


if __name__ == '__main__':
  sys.exit(main())
