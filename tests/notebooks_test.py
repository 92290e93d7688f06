"""Executes notebooks/*.ipynb top to bottom, headless and offline.

Each notebook runs in a fresh IPython kernel (ipykernel's `python3` spec)
with VIT_JAX_NOTEBOOK_SMALL=1 (a tiny model, a few steps, a few images) and
no network; any failing cell fails the test. Also checks that the committed
notebooks are clean and match notebooks/make_notebooks.py.
"""

import importlib.util
import os
import tempfile

from absl.testing import absltest
import nbclient
import nbformat
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, 'notebooks')
CELL_TIMEOUT = 240  # Seconds; a train-step compile on a loaded 2-core CPU.


def _generator():
  spec = importlib.util.spec_from_file_location(
      'make_notebooks', os.path.join(NOTEBOOKS, 'make_notebooks.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _text_outputs(nb) -> str:
  """Everything the code cells printed, in order."""
  parts = []
  for cell in nb.cells:
    for out in cell.get('outputs', []):
      if out.get('output_type') == 'stream':
        parts.append(out['text'])
  return ''.join(parts)


class NotebooksTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.env = dict(
        os.environ, VIT_JAX_NOTEBOOK_SMALL='1', VIT_JAX_OFFLINE='1',
        JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3',
        # Missing: each notebook takes its offline "generated" branch.
        VIT_JAX_QUICKSTART_WORKDIR=os.path.join(cls.tmp, 'no_quickstart'),
        VIT_JAX_INSPECT_OUT=os.path.join(cls.tmp, 'inspect_out'))

  def execute(self, name: str):
    with open(os.path.join(NOTEBOOKS, name), encoding='utf-8') as f:
      nb = nbformat.read(f, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name='python3',
        resources={'metadata': {'path': self.tmp}})
    # A failing cell raises CellExecutionError naming the cell and error.
    client.execute(env=self.env)
    return nb

  @pytest.mark.slow
  def test_vit_jax_notebook(self):
    text = _text_outputs(self.execute('vit_jax.ipynb'))
    self.assertIn('Checkpoint source: generated', text)
    self.assertIn('ViT-digits at 32 px, 10 classes', text)
    self.assertRegex(text, r'Test accuracy after 4 steps: \d+\.\d%')
    self.assertIn('model.json', text)
    self.assertIn("Reloaded ViT-digits: 10 classes ['0', '1',", text)

  @pytest.mark.slow
  def test_inspect_notebook(self):
    nb = self.execute('inspect.ipynb')
    text = _text_outputs(nb)
    self.assertIn('ViT-digits from', text)
    self.assertIn('4x4 patches of 8 px', text)
    self.assertIn('layer 3: heads from', text)
    out = self.env['VIT_JAX_INSPECT_OUT']
    self.assertCountEqual(
        os.listdir(out),
        ['filters.png', 'position.png', 'distance.png', 'rollout.png'])
    images = [o for cell in nb.cells for o in cell.get('outputs', [])
              if 'image/png' in o.get('data', {})]
    self.assertLen(images, 4)

  def test_committed_notebooks_are_clean_and_generated(self):
    generator = _generator()
    for name in ('vit_jax.ipynb', 'inspect.ipynb'):
      with self.subTest(name):
        path = os.path.join(NOTEBOOKS, name)
        with open(path, encoding='utf-8') as f:
          text = f.read()
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
          if cell.cell_type == 'code':
            self.assertEqual(cell.outputs, [], cell.id)
            self.assertIsNone(cell.execution_count, cell.id)
        self.assertEqual(text, generator.render(name),
                         f'{name} is stale: run notebooks/make_notebooks.py')
        self.assertLess(len(text), 30_000)


if __name__ == '__main__':
  absltest.main()
