"""The package's one atomic file write and its one network probe (a leaf).

`atomic_write(path, write_fn)` makes a file appear whole or not at all: the
bytes go to a temporary file beside `path`, are fsync'ed, and the file is
renamed over `path` (then the directory is fsync'ed, so the rename survives
a power cut). `install(tmp, path)` is the same last step for a file that
was written elsewhere (a resumable download's `.part`). `network_available`
asks, within seconds, whether a host accepts connections, before calling
libraries that would retry an unreachable host for minutes.
"""

import contextlib
import os
import socket
import tempfile
from typing import BinaryIO, Callable, TextIO, Union


def _fsync_directory(directory: str) -> None:
  with contextlib.suppress(OSError):  # Not every file system allows it.
    fd = os.open(directory, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def install(tmp: str, path: str) -> None:
  """fsyncs the finished file `tmp` and renames it to `path` atomically."""
  with open(tmp, 'rb+') as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)
  _fsync_directory(os.path.dirname(os.path.abspath(path)))


def atomic_write(path, write_fn: Callable[[Union[BinaryIO, TextIO]], object],
                 *, binary: bool = True) -> None:
  """Writes `path` through `write_fn(f)`, atomically and durably.

  Args:
    path: destination; its directory must exist.
    write_fn: called once with an open file ('wb', or 'w' when
      binary=False); an exception from it leaves `path` untouched and no
      temporary file behind.
    binary: open the temporary file in binary mode.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp',
                             prefix=os.path.basename(path) + '.')
  try:
    with os.fdopen(fd, 'wb' if binary else 'w') as f:
      write_fn(f)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600 files.
    install(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def network_available(host: str, port: int = 443,
                      timeout: float = 3.0) -> bool:
  """True if a TCP connection to host:port opens within `timeout` seconds."""
  try:
    socket.create_connection((host, port), timeout=timeout).close()
    return True
  except OSError:
    return False
