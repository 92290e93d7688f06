"""pytest glue for the absltest suite: absl flags (e.g. --test_tmpdir) are
parsed by absltest.main(), which pytest never calls."""

from absl import flags


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
