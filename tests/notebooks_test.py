"""The notebooks: sources in sync, executed top to bottom offline.

notebooks/<name>.pct.py (jupytext percent format) is the source of
notebooks/<name>.ipynb, which is committed with the outputs of this suite's
run. The fast test checks that both hold the same cells and that the
committed notebook has its outputs (figures included); the slow tests
execute each source in a fresh IPython kernel (ipykernel's `python3` spec)
with VIT_JAX_NOTEBOOK_SMALL=1 (a tiny model, a few steps, a few images) and
no network; any failing cell fails the test. To refresh the committed
outputs after editing a source:

  VIT_JAX_UPDATE_NOTEBOOKS=1 python -m pytest tests/notebooks_test.py

(`jupytext --sync notebooks/<name>.pct.py` updates the cells only.)
"""

import os
import re
import shutil
import tempfile

from absl.testing import absltest
import jupytext
import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, 'notebooks')
NAMES = ('vit_jax', 'inspect')
FIGURES = {'vit_jax': 1, 'inspect': 4}  # image/png outputs of a run.
CELL_TIMEOUT = 240  # Seconds; a train-step compile on a loaded 2-core CPU.
UPDATE = os.environ.get('VIT_JAX_UPDATE_NOTEBOOKS') == '1'


def read_source(name: str) -> nbformat.NotebookNode:
  """notebooks/<name>.pct.py as a notebook, with stable cell ids."""
  nb = jupytext.read(os.path.join(NOTEBOOKS, f'{name}.pct.py'))
  nb.metadata.get('jupytext', {}).pop('text_representation', None)
  for i, cell in enumerate(nb.cells):
    first = cell.source.lstrip('# ').splitlines()[0] if cell.source else ''
    slug = re.sub(r'[^a-z0-9]+', '-', first.lower()).strip('-')[:40]
    cell['id'] = f'{i:02d}-{slug}'
  return nb


def read_committed(name: str) -> nbformat.NotebookNode:
  with open(os.path.join(NOTEBOOKS, f'{name}.ipynb'), encoding='utf-8') as f:
    return nbformat.read(f, as_version=4)


def _cells(nb):
  return [(cell.cell_type, cell.source) for cell in nb.cells]


def _outputs(nb, kind=None):
  return [out for cell in nb.cells for out in cell.get('outputs', [])
          if kind is None or kind in out.get('data', {})]


def _text_outputs(nb) -> str:
  """Everything the code cells printed, in order."""
  return ''.join(out['text'] for out in _outputs(nb)
                 if out.get('output_type') == 'stream')


class NotebooksTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp(prefix='vit_jax_notebooks_test_')
    cls.addClassCleanup(shutil.rmtree, cls.tmp)
    env = {k: v for k, v in os.environ.items()
           if k not in ('VIT_JAX_NOTEBOOK_DIR', 'VIT_JAX_INSPECT_OUT')}
    # Outputs go to the notebooks' default ./vit_jax_work, in cls.tmp (the
    # kernel's working directory); a missing quickstart workdir and no
    # network: each notebook takes its offline "generated" branch.
    cls.env = dict(
        env, VIT_JAX_NOTEBOOK_SMALL='1', VIT_JAX_OFFLINE='1',
        JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3',
        VIT_JAX_QUICKSTART_WORKDIR='no_quickstart')

  def execute(self, name: str):
    nb = read_source(name)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name='python3',
        record_timing=False, resources={'metadata': {'path': self.tmp}})
    # A failing cell raises CellExecutionError naming the cell and error.
    client.execute(env=self.env)
    if UPDATE:
      nbformat.validate(nb)
      with open(os.path.join(NOTEBOOKS, f'{name}.ipynb'), 'w',
                encoding='utf-8') as f:
        nbformat.write(nb, f)
    return nb

  @pytest.mark.slow
  def test_vit_jax_notebook(self):
    nb = self.execute('vit_jax')
    text = _text_outputs(nb)
    self.assertIn('Checkpoint source: generated', text)
    self.assertIn('ViT-digits at 32 px, 10 classes', text)
    self.assertRegex(text, r'Test accuracy after 4 steps: \d+\.\d%')
    self.assertIn('model.json', text)
    self.assertIn("Reloaded ViT-digits: 10 classes ['0', '1',", text)
    self.assertLen(_outputs(nb, 'image/png'), FIGURES['vit_jax'])

  @pytest.mark.slow
  def test_inspect_notebook(self):
    nb = self.execute('inspect')
    text = _text_outputs(nb)
    self.assertIn('ViT-digits (generated) from', text)
    self.assertIn('4x4 patches of 8 px', text)
    self.assertIn('layer 3: heads from', text)
    out = os.path.join(self.tmp, 'vit_jax_work', 'inspect')
    self.assertCountEqual(
        os.listdir(out),
        ['filters.png', 'position.png', 'distance.png', 'rollout.png'])
    self.assertLen(_outputs(nb, 'image/png'), FIGURES['inspect'])


class SourcesTest(absltest.TestCase):
  """Runs after NotebooksTest, which may update the .ipynb files."""


  def test_committed_notebooks_match_sources_and_have_outputs(self):
    for name in NAMES:
      with self.subTest(name):
        source, committed = read_source(name), read_committed(name)
        nbformat.validate(committed)
        for i, (want, have) in enumerate(zip(_cells(source),
                                             _cells(committed))):
          self.assertEqual(
              have, want, f'notebooks/{name}.ipynb cell {i} differs from '
              f'{name}.pct.py: run VIT_JAX_UPDATE_NOTEBOOKS=1 python -m '
              'pytest tests/notebooks_test.py (or jupytext --sync).')
        self.assertLen(committed.cells, len(source.cells))
        self.assertEqual(committed.metadata['jupytext']['formats'],
                         'ipynb,.pct.py:percent')
        # Committed with the suite's outputs: figures show in a preview.
        self.assertLen(_outputs(committed, 'image/png'), FIGURES[name])
        self.assertEmpty([o for o in _outputs(committed)
                          if o.get('output_type') == 'error'])

  def test_one_repository_url(self):
    urls = set()
    for name in NAMES:
      with open(os.path.join(NOTEBOOKS, f'{name}.pct.py')) as f:
        found = re.findall(r'^REPO_URL = (.*)$', f.read(), re.MULTILINE)
      self.assertLen(found, 1, name)
      urls.update(found)
    self.assertLen(urls, 1, f'the notebooks install from different URLs: '
                   f'{urls}')


if __name__ == '__main__':
  absltest.main()
