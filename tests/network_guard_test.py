"""The conftest guard: the suite cannot reach the network (pytest only)."""

import socket
import sys
import threading

from absl.testing import absltest

# Installed by tests/conftest.py when the suite runs under pytest.
_GUARD = sys.modules.get('tests.conftest') or sys.modules.get('conftest')


@absltest.skipUnless(hasattr(_GUARD, 'NetworkAccessError'),
                     'the guard is installed by tests/conftest.py (pytest)')
class NetworkGuardTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.conftest = _GUARD

  def _refused(self, fn):
    with self.assertRaisesRegex(self.conftest.NetworkAccessError,
                                'must not use the network'):
      fn()
    del self.conftest._attempts[:]  # Expected here: do not fail the test.

  def test_remote_hosts_are_refused(self):
    self._refused(lambda: socket.getaddrinfo('storage.googleapis.com', 443))
    self._refused(lambda: socket.create_connection(('8.8.8.8', 53), 1))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
      self._refused(lambda: s.connect(('10.1.2.3', 80)))
      self._refused(lambda: s.connect_ex(('10.1.2.3', 80)))

  def test_loopback_is_allowed(self):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
      server.bind(('127.0.0.1', 0))
      server.listen(1)
      port = server.getsockname()[1]
      accepted = threading.Thread(target=lambda: server.accept()[0].close())
      accepted.start()
      socket.create_connection(('localhost', port), 5).close()
      accepted.join(5)
    self.assertTrue(socket.getaddrinfo('127.0.0.1', 80))
    self.assertEqual(self.conftest._attempts, [])


if __name__ == '__main__':
  absltest.main()
