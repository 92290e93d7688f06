"""pytest glue for the absltest suite.

- absl flags (e.g. --test_tmpdir) are parsed by absltest.main(), which
  pytest never calls: mark them parsed.
- JAX_PLATFORMS=cpu unless set (see below).
- No test may reach the network: for the whole session, socket connects,
  name lookups and `create_connection` to anything but loopback (127.0.0.0/8,
  ::1, 'localhost') or AF_UNIX raise `NetworkAccessError`. Code under test
  may swallow that error, so every attempt is also recorded and fails the
  test that made it. This guards the pytest process only: subprocesses
  (CLI tests, multi-process tests) start without it.
"""

import ipaddress
import os
import socket

# JAX on the CPU only: with libtpu installed (the test extra brings it for
# the TPU planner), JAX would otherwise try to start a TPU backend in every
# test process. Set before any test module imports jax; subprocesses
# inherit it. The planner compiles for TPU topologies without a backend.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

from absl import flags
import pytest

_attempts = []
_real = {}


class NetworkAccessError(RuntimeError):
  """A test tried to open a non-loopback connection."""


def _is_loopback(host) -> bool:
  if host is None:
    return True  # getaddrinfo(None, port): the local wildcard address.
  if isinstance(host, bytes):
    host = host.decode()
  host = str(host).strip('[]').split('%')[0]
  if host.lower() in ('localhost', 'localhost.localdomain', ''):
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False  # A host name other than localhost.


def _refuse(what: str, address):
  message = (f'tests must not use the network: {what} {address!r} '
             '(only loopback and AF_UNIX are allowed; mock the call).')
  _attempts.append(message)
  raise NetworkAccessError(message)


def _guarded_connect(method_name):
  real = getattr(socket.socket, method_name)

  def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(
        address[0]):
      _refuse(f'socket.{method_name}', address)
    return real(self, address)

  return connect


def _guarded_getaddrinfo(host, *args, **kwargs):
  if not _is_loopback(host):
    _refuse('getaddrinfo', host)
  return _real['getaddrinfo'](host, *args, **kwargs)


def _guarded_create_connection(address, *args, **kwargs):
  if not _is_loopback(address[0]):
    _refuse('create_connection', address)
  return _real['create_connection'](address, *args, **kwargs)


def pytest_configure(config):
  del config
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  _real.update(connect=socket.socket.connect,
               connect_ex=socket.socket.connect_ex,
               getaddrinfo=socket.getaddrinfo,
               create_connection=socket.create_connection)
  socket.socket.connect = _guarded_connect('connect')
  socket.socket.connect_ex = _guarded_connect('connect_ex')
  socket.getaddrinfo = _guarded_getaddrinfo
  socket.create_connection = _guarded_create_connection


def pytest_unconfigure(config):
  del config
  if _real:
    socket.socket.connect = _real['connect']
    socket.socket.connect_ex = _real['connect_ex']
    socket.getaddrinfo = _real['getaddrinfo']
    socket.create_connection = _real['create_connection']


@pytest.fixture(autouse=True)
def _no_network_attempts():
  """Fails the test if it tried the network, even if the error was caught."""
  del _attempts[:]
  yield
  if _attempts:
    found = list(_attempts)
    del _attempts[:]
    pytest.fail('\n'.join(found), pytrace=False)
