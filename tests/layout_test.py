"""The package's import graph: no cycles, leaf modules stay leaves.

Imports are read from the source (ast), so the test sees every import,
also the ones inside functions. Imports under `if __name__ == '__main__':`
are the command-line entry of a module; they never run on import and are
not edges of the graph.
"""

import ast
import os

from absl.testing import absltest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(__file__)), 'vit_jax')


def _is_main_block(node) -> bool:
  return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
          and isinstance(node.test.left, ast.Name)
          and node.test.left.id == '__name__')


def _imports(tree):
  """vit_jax modules imported anywhere in `tree` but `__main__` blocks."""
  found = set()
  stack = [n for n in tree.body if not _is_main_block(n)]
  while stack:
    node = stack.pop()
    if isinstance(node, ast.ImportFrom) and (node.module or '').startswith(
        'vit_jax'):
      for alias in node.names:
        name = f'{node.module}.{alias.name}'
        path = os.path.join(os.path.dirname(PACKAGE), *name.split('.'))
        found.add(name if os.path.exists(path + '.py') or os.path.isdir(path)
                  else node.module)
    elif isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith('vit_jax'))
    stack.extend(ast.iter_child_nodes(node))
  return found


def import_graph():
  graph = {}
  for parent, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(parent, name)
        module = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3]
        module = module.replace(os.sep, '.').removesuffix('.__init__')
        with open(path) as f:
          graph[module] = _imports(ast.parse(f.read()))
  return graph


class LayoutTest(absltest.TestCase):

  def test_no_import_cycles(self):
    graph = import_graph()
    done, active = set(), []

    def visit(module):
      if module in active:
        cycle = active[active.index(module):] + [module]
        self.fail('import cycle: ' + ' -> '.join(cycle))
      if module in done:
        return
      active.append(module)
      for dep in sorted(graph.get(module, ())):
        if dep != module and not module.startswith(dep + '.'):
          visit(dep)  # (A package's __init__ may import its own modules.)
      active.pop()
      done.add(module)

    for module in sorted(graph):
      visit(module)

  def test_leaf_modules(self):
    graph = import_graph()
    self.assertEmpty(graph['vit_jax.errors'])
    self.assertEqual(graph['vit_jax.checkpoint.names'],
                     {'vit_jax.configs.models'})
    self.assertEmpty(graph['vit_jax.checkpoint.files'])

  def test_checkpoint_package_does_not_import_its_command(self):
    # `python -m vit_jax.checkpoint` imports the package once; its __init__
    # must not reach the command (or the workdir format it reads).
    graph = import_graph()
    seen, todo = set(), ['vit_jax.checkpoint']
    while todo:
      module = todo.pop()
      if module not in seen:
        seen.add(module)
        todo.extend(graph.get(module, ()))
    self.assertNotIn('vit_jax.checkpoint.command', seen)
    self.assertNotIn('vit_jax.checkpoint.__main__', seen)

  def test_error_types_share_the_leaf_base(self):
    from vit_jax import checkpoint  # pylint: disable=g-import-not-at-top
    from vit_jax import config_validation  # pylint: disable=g-import-not-at-top
    from vit_jax import errors  # pylint: disable=g-import-not-at-top
    from vit_jax import datasets  # pylint: disable=g-import-not-at-top
    from vit_jax import partitioning  # pylint: disable=g-import-not-at-top
    from vit_jax import train  # pylint: disable=g-import-not-at-top
    for error in (checkpoint.CheckpointError, config_validation.ConfigError,
                  datasets.DatasetError, partitioning.MeshError,
                  train.NonFiniteLossError):
      self.assertTrue(issubclass(error, errors.UserError), error)


if __name__ == '__main__':
  absltest.main()
