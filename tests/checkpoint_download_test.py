"""Tests for the checkpoint download command, against a local HTTP server.

The server runs on 127.0.0.1 in a thread and serves generated files under
the bucket paths; it honours Range requests (or ignores them, on demand) and
records what it was asked and how many bytes it sent. No network.
"""

import contextlib
import http.server
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
from unittest import mock

from absl.testing import absltest
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import checkpoint
from vit_jax.checkpoint import command
from vit_jax.checkpoint import listing
from vit_jax.checkpoint import names
from vit_jax.checkpoint import remote
from vit_jax import models

BUCKET_PATH = 'vit_models/imagenet21k/testing.npz'


class _Handler(http.server.BaseHTTPRequestHandler):
  """Serves `server.files` (bucket path -> bytes) with optional Range."""

  def do_GET(self):  # pylint: disable=invalid-name
    server = self.server
    path = self.path.lstrip('/')
    server.requests.append((path, self.headers.get('Range')))
    data = server.files.get(path)
    if data is None:
      self.send_error(404)
      return
    start, status = 0, 200
    match = re.fullmatch(r'bytes=(\d+)-', self.headers.get('Range') or '')
    if match and not server.ignore_range:
      start, status = int(match.group(1)), 206
      if start >= len(data):
        self.send_response(416)
        self.send_header('Content-Range', f'bytes */{len(data)}')
        self.send_header('Content-Length', '0')
        self.end_headers()
        return
    self.send_response(status)
    if status == 206:
      self.send_header('Content-Range',
                       f'bytes {start}-{len(data) - 1}/{len(data)}')
    self.send_header('Content-Length', str(len(data) - start))
    self.end_headers()
    self.wfile.write(data[start:])
    server.bytes_sent += len(data) - start

  def log_message(self, *args):  # Keep the test output clean.
    pass


def tiny_checkpoint(**model_kw) -> bytes:
  """An i21k-style file for the registered `testing` model: 32 px grid,
  5 classes and a pre_logits layer, i.e. not the registered head/size."""
  model_kw = {'num_classes': 5, 'representation_size': 10, **model_kw}
  model = models.get_model('testing', **model_kw)
  shapes = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False),
      jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))['params']
  rng = np.random.default_rng(0)
  params = jax.tree.map(
      lambda s: rng.standard_normal(s.shape).astype(np.float32), shapes)
  buffer = io.BytesIO()
  np.savez(buffer, **checkpoint.to_official_layout(params))
  return buffer.getvalue()


class DownloadTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data = tiny_checkpoint()
    cls.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    threading.Thread(target=cls.server.serve_forever, daemon=True).start()
    cls.base_url = f'http://127.0.0.1:{cls.server.server_address[1]}'

  @classmethod
  def tearDownClass(cls):
    cls.server.shutdown()
    cls.server.server_close()
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    tmp = tempfile.TemporaryDirectory()
    self.addCleanup(tmp.cleanup)
    self.dir = tmp.name
    self.dest = os.path.join(self.dir, 'testing.npz')
    self.server.files = {BUCKET_PATH: self.data}
    self.server.requests = []
    self.server.bytes_sent = 0
    self.server.ignore_range = False

  def run_cli(self, *args):
    """Runs main(); returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      code = command.main(
          ['download', 'testing', f'--dir={self.dir}',
           f'--base_url={self.base_url}', *args])
    return code, out.getvalue(), err.getvalue()

  def assert_installed(self):
    with open(self.dest, 'rb') as f:
      self.assertEqual(f.read(), self.data)
    self.assertFalse(os.path.exists(self.dest + '.part'))

  def test_download_validates_and_installs(self):
    code, out, err = self.run_cli()
    self.assertEqual(code, 0, err)
    self.assertIn(f'Saved {self.dest}', out)
    self.assert_installed()
    self.assertEqual(self.server.requests, [(BUCKET_PATH, None)])

  def test_resume_asks_only_for_the_rest(self):
    half = len(self.data) // 2
    with open(self.dest + '.part', 'wb') as f:
      f.write(self.data[:half])
    code, _, err = self.run_cli()
    self.assertEqual(code, 0, err)
    self.assertEqual(self.server.requests, [(BUCKET_PATH, f'bytes={half}-')])
    self.assertEqual(self.server.bytes_sent, len(self.data) - half)
    self.assert_installed()

  def test_server_without_range_support_restarts(self):
    self.server.ignore_range = True
    with open(self.dest + '.part', 'wb') as f:
      f.write(self.data[:100])
    code, _, err = self.run_cli()
    self.assertEqual(code, 0, err)
    self.assertEqual(self.server.bytes_sent, len(self.data))
    self.assert_installed()

  def test_complete_part_file_is_not_downloaded_again(self):
    with open(self.dest + '.part', 'wb') as f:
      f.write(self.data)
    code, _, err = self.run_cli()
    self.assertEqual(code, 0, err)
    self.assertEqual(self.server.bytes_sent, 0)
    self.assert_installed()

  def test_file_of_another_model_fails_validation(self):
    self.server.files = {BUCKET_PATH: tiny_checkpoint(hidden_size=12)}
    code, _, err = self.run_cli()
    self.assertEqual(code, 1)
    self.assertIn(f'{self.base_url}/{BUCKET_PATH}', err)
    self.assertIn('does not match the model', err)
    self.assertIn('cls: file shape (1, 1, 12) vs model shape (1, 1, 10)', err)
    self.assertIn('The download was deleted', err)
    self.assertNotIn('Traceback', err)
    self.assertEqual(os.listdir(self.dir), [])

  def test_corrupt_download_is_rejected(self):
    self.server.files = {BUCKET_PATH: self.data[:-50]}
    code, _, err = self.run_cli()
    self.assertEqual(code, 1)
    self.assertIn('truncated or corrupt', err)
    self.assertEqual(os.listdir(self.dir), [])

  def test_missing_remote_file(self):
    self.server.files = {}
    code, _, err = self.run_cli()
    self.assertEqual(code, 1)
    self.assertIn('HTTP 404', err)
    self.assertIn(BUCKET_PATH, err)

  def test_existing_file_is_kept(self):
    with open(self.dest, 'wb') as f:
      f.write(b'old')
    code, out, _ = self.run_cli()
    self.assertEqual(code, 0)
    self.assertIn('--force', out)
    self.assertEqual(self.server.requests, [])

  def test_base_url_from_environment(self):
    with mock.patch.dict(os.environ,
                         {names.BASE_URL_ENV: self.base_url}):
      path = remote.download('testing', directory=self.dir,
                                          progress=False)
    self.assertEqual(path, self.dest)
    self.assert_installed()

  def test_reachable(self):
    self.assertTrue(remote.reachable(self.base_url))
    port = self.server.server_address[1]
    with mock.patch.dict(os.environ, {
        names.BASE_URL_ENV: f'http://127.0.0.1:{port}'}):
      self.assertTrue(remote.reachable())
    closed = socket.socket()
    closed.bind(('127.0.0.1', 0))  # Bound, not listening: refused.
    self.addCleanup(closed.close)
    self.assertFalse(remote.reachable(
        f'http://127.0.0.1:{closed.getsockname()[1]}', timeout=1))

  def test_load_over_http(self):
    params = checkpoint.load(f'{self.base_url}/{BUCKET_PATH}')
    flat = traverse_util.flatten_dict(params, sep='/')
    self.assertEqual(flat['Transformer/encoderblock_0/MlpBlock_0/Dense_0/'
                          'kernel'].shape, (10, 10))
    with self.assertRaisesRegex(checkpoint.CheckpointError,
                                r'Could not fetch .*missing\.npz.*404'):
      checkpoint.load(f'{self.base_url}/vit_models/missing.npz')

  def test_inspect_command(self):
    path = os.path.join(self.dir, 'file.npz')
    with open(path, 'wb') as f:
      f.write(self.data)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      self.assertEqual(command.main(['inspect', path]), 0)
    self.assertRegex(out.getvalue(), r'cls +\(1, 1, 10\)')
    n = sum(np.load(path)[k].size for k in np.load(path).files)
    listing, changes = out.getvalue().split(f'26 arrays, {n:,} parameters')
    # The file's own (pre-Linen) names, then the renames of loading.
    self.assertIn('encoderblock_0/MlpBlock_3/Dense_0/kernel', listing)
    self.assertNotIn('MlpBlock_0', listing)
    self.assertIn('MlpBlock_3 -> MlpBlock_0  (4 keys)', changes)
    self.assertIn('LayerNorm_2 -> LayerNorm_1  (2 keys)', changes)

  def test_load_changes_prefix_and_groupnorm(self):
    stored = {
        'opt/target/gn_root/scale': np.ones((1, 1, 1, 4), np.float32),
        'opt/target/Transformer/encoderblock_0/MlpBlock_3/Dense_0/bias':
            np.ones(3, np.float32),
        'step': np.zeros((), np.float32),  # Outside the prefix: dropped.
    }
    loaded = traverse_util.flatten_dict(
        checkpoint.from_stored(stored, source='x.npz'), sep='/')
    self.assertEqual(listing.load_changes(stored, loaded), [
        'checkpoint.load (so predict, inspect and fine-tuning) changes:',
        '  MlpBlock_3 -> MlpBlock_0  (1 key)',
        '  drops the prefix opt/target/  (2 keys)',
        '  shape (1, 1, 1, 4) -> (4,)  (1 key, GroupNorm)',
        '  ignores 1 key outside that prefix'])

  def test_inspect_workdir(self):
    workdir = os.path.join(self.dir, 'work')
    os.makedirs(workdir)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
      self.assertEqual(command.main(['inspect', workdir]), 1)
    self.assertIn('is a directory without model.npz', err.getvalue())
    with open(os.path.join(workdir, 'model.npz'), 'wb') as f:
      f.write(self.data)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      self.assertEqual(command.main(['inspect', workdir]), 0)
    self.assertIn(f'{workdir}/model.npz: keys as stored', out.getvalue())


class ResolveTest(absltest.TestCase):

  def url(self, name, dataset=None):
    return names.resolve(name, dataset).url(
        names.DEFAULT_BASE_URL)

  def test_addresses(self):
    gcs = 'https://storage.googleapis.com/'
    self.assertEqual(self.url('ViT-B_16'),
                     gcs + 'vit_models/imagenet21k/ViT-B_16.npz')
    self.assertEqual(
        self.url('R50+ViT-B_16', 'imagenet21k+imagenet2012'),
        gcs + 'vit_models/imagenet21k%2Bimagenet2012/R50%2BViT-B_16.npz')
    self.assertEqual(self.url('Mixer-B_16', 'imagenet1k'),
                     gcs + 'mixer_models/imagenet1k/Mixer-B_16.npz')
    self.assertEqual(self.url('ViT-B_16-gap-norep'),
                     gcs + 'vit_models/gsam/ViT-B_16-gap-norep.npz')
    augreg = 'B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0'
    self.assertEqual(self.url(augreg), f'{gcs}vit_models/augreg/{augreg}.npz')
    self.assertEqual(self.url('B_16'), f'{gcs}vit_models/augreg/{augreg}.npz')

  def test_model_names(self):
    resolve = names.resolve
    self.assertEqual(resolve('ViT-B_16-224', 'imagenet21k+imagenet2012')
                     .model_name, 'ViT-B_16')
    self.assertEqual(
        resolve('R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0'
                '--imagenet2012-steps_20k-lr_0.03-res_384.npz').model_name,
        'R_Ti_16')
    self.assertIsNone(resolve('Mixer-S_16', 'gsam').model_name)

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(ValueError, 'imagenet21k\\+imagenet2012'):
      names.resolve('ViT-B_16', 'imagenet1k')

  def test_augreg_validation_allows_the_official_differences(self):
    """A full-size AugReg B/16 fine-tune (384 px, 1000 classes) passes."""
    shapes = remote.expected_shapes('B_16', {
        'head': {'kernel': np.empty((768, 1000))},
        'Transformer': {'posembed_input': {
            'pos_embedding': np.empty((1, 577, 768))}}})
    self.assertEqual(shapes['head']['kernel'].shape, (768, 1000))
    self.assertEqual(
        shapes['Transformer']['posembed_input']['pos_embedding'].shape,
        (1, 577, 768))
    self.assertNotIn('pre_logits', shapes)


class CommandLineTest(absltest.TestCase):

  def test_module_entry_point_reports_errors_without_traceback(self):
    result = subprocess.run(
        [sys.executable, '-m', 'vit_jax.checkpoint', 'inspect',
         '/nonexistent/ViT-B_16.npz'],
        capture_output=True, text=True, timeout=120, check=False)
    self.assertEqual(result.returncode, 1)
    self.assertIn('/nonexistent/ViT-B_16.npz does not exist', result.stderr)
    self.assertIn('download ViT-B_16', result.stderr)
    self.assertNotIn('Traceback', result.stderr)


if __name__ == '__main__':
  absltest.main()
