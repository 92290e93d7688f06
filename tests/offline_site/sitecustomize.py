"""Makes a test's subprocess an offline machine (see readme_commands_test).

Put on PYTHONPATH only by tests: Python imports `sitecustomize` at start-up,
and this one makes every non-loopback socket connect and name lookup fail
with `ConnectionRefusedError` (an OSError, as on a machine without a
network), and appends what was attempted to $VIT_JAX_TEST_NETWORK_LOG.
"""

import ipaddress
import os
import socket

_LOG = os.environ.get('VIT_JAX_TEST_NETWORK_LOG')


def _loopback(host) -> bool:
  if host is None:
    return True
  host = (host.decode() if isinstance(host, bytes) else str(host)).strip('[]')
  if host.lower() in ('localhost', ''):
    return True
  try:
    return ipaddress.ip_address(host.split('%')[0]).is_loopback
  except ValueError:
    return False


def _refuse(what, target):
  if _LOG:
    with open(_LOG, 'a') as f:
      f.write(f'{what} {target!r}\n')
  raise ConnectionRefusedError(f'offline test machine: {what} {target!r}')


def _wrap_connect(real):
  def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(
        address[0]):
      _refuse('connect', address)
    return real(self, address)
  return connect


def _wrap_host_first(real, what):
  def call(host, *args, **kwargs):
    target = host[0] if isinstance(host, tuple) else host
    if not _loopback(target):
      _refuse(what, target)
    return real(host, *args, **kwargs)
  return call


socket.socket.connect = _wrap_connect(socket.socket.connect)
socket.socket.connect_ex = _wrap_connect(socket.socket.connect_ex)
socket.getaddrinfo = _wrap_host_first(socket.getaddrinfo, 'getaddrinfo')
socket.create_connection = _wrap_host_first(socket.create_connection,
                                            'create_connection')
