"""Tests for vit_jax.inspect's analyses against the exact oracles of
spec/inspect.md §5 and brute-force NumPy references (plain loops)."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from sklearn import decomposition

from vit_jax import inspect as vi
from vit_jax.inspect import filters
from vit_jax.inspect import overlay

P = 16


# ---------------------------------------------------------------- references
def ref_distance(att, grid, patch, prefix=1, renorm=False):
  """(L, B, H, T, T) -> (L, H) with loops over everything."""
  gh, gw = grid
  ph, pw = patch
  n_layers, batch, heads = att.shape[:3]
  n = gh * gw
  out = np.zeros((n_layers, heads))
  for l in range(n_layers):
    for h in range(heads):
      total = 0.0
      for b in range(batch):
        img = 0.0
        for i in range(n):
          row = 0.0
          mass = 0.0
          for j in range(n):
            dy = ph * (i // gw - j // gw)
            dx = pw * (i % gw - j % gw)
            w = att[l, b, h, prefix + i, prefix + j]
            row += w * np.sqrt(dy * dy + dx * dx)
            mass += w
          if renorm:
            row = row / mass if mass > 0 else 0.0
          img += row / n
        total += img / batch
      out[l, h] = total
  return out


def ref_rollout(att):
  """(L, B, H, T, T) -> (B, T, T): R = Ã_L ... Ã_1 by explicit loops."""
  n_layers, batch, _, t, _ = att.shape
  out = np.zeros((batch, t, t))
  for b in range(batch):
    r = np.eye(t)
    for l in range(n_layers):
      a = att[l, b].mean(0) + np.eye(t)
      a = a / a.sum(-1, keepdims=True)
      r = a @ r
    out[b] = r
  return out


def ref_cosine(q):
  n = len(q)
  s = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      s[i, j] = q[i] @ q[j] / (np.linalg.norm(q[i]) * np.linalg.norm(q[j]))
  return s


def random_attention(rng, shape):
  logits = rng.normal(size=shape) * 2
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


def as5(a):
  """(T, T) -> (1, 1, 1, T, T)."""
  return np.asarray(a, np.float32)[None, None, None]


def one_layer(a_t):
  """(L, T, T) per-layer matrices -> (L, 1, 1, T, T)."""
  return np.asarray(a_t, np.float32)[:, None, None]


# ------------------------------------------------------------------ distance
class DistanceTest(parameterized.TestCase):

  def mad(self, a, grid=(2, 2), prefix=1, renorm=False, patch=P):
    return float(vi.mean_attention_distance(as5(a), grid, patch, prefix,
                                            renorm)[0, 0])

  def test_identity(self):
    self.assertAlmostEqual(self.mad(np.eye(5)), 0.0, places=6)

  def test_uniform_patches_no_cls(self):
    self.assertAlmostEqual(self.mad(np.full((4, 4), .25), prefix=0),
                           13.656854, places=4)

  @parameterized.parameters((False, 10.925483), (True, 13.656854))
  def test_uniform_with_cls(self, renorm, want):
    self.assertAlmostEqual(self.mad(np.full((5, 5), .2), renorm=renorm),
                           want, places=4)

  @parameterized.parameters(([1, 0, 3, 2], 16.0), ([3, 2, 1, 0], 22.627417))
  def test_partner(self, partner, want):
    a = np.zeros((5, 5))
    a[0, 0] = 1
    for i, j in enumerate(partner):
      a[1 + i, 1 + j] = 1
    for renorm in (False, True):
      self.assertAlmostEqual(self.mad(a, renorm=renorm), want, places=4)

  @parameterized.parameters(False, True)
  def test_cls_only_is_guarded(self, renorm):
    a = np.zeros((5, 5))
    a[:, 0] = 1
    self.assertEqual(self.mad(a, renorm=renorm), 0.0)

  def test_uniform_1x2_and_14x14(self):
    self.assertAlmostEqual(self.mad(np.full((2, 2), .5), (1, 2), 0), 8.0,
                           places=5)
    self.assertAlmostEqual(
        self.mad(np.full((196, 196), 1 / 196), (14, 14), 0), 116.492227,
        places=3)

  def test_distance_row_2x3(self):
    d = np.asarray(vi.distance_matrix((2, 3), 16))
    np.testing.assert_allclose(d[0], [0, 16, 32, 16, 22.6274, 35.7771],
                               atol=1e-4)
    np.testing.assert_allclose(d, d.T)

  def test_non_square_patch(self):
    d = np.asarray(vi.distance_matrix((2, 2), (8, 16)))
    np.testing.assert_allclose(d[0], [0, 16, 8, np.hypot(8, 16)], rtol=1e-6)

  def test_heads_do_not_mix(self):
    rng = np.random.default_rng(0)
    att = random_attention(rng, (2, 3, 4, 7, 7))
    perm = [2, 0, 3, 1]
    base = np.asarray(vi.mean_attention_distance(att, (2, 3), P))
    permuted = np.asarray(vi.mean_attention_distance(att[:, :, perm], (2, 3),
                                                     P))
    self.assertEqual(base.shape, (2, 4))
    np.testing.assert_allclose(permuted, base[:, perm], rtol=1e-6)
    self.assertGreater(np.ptp(base), 1e-3)  # Heads really differ.

  @parameterized.parameters(((2, 3), 1, False), ((3, 2), 1, True),
                            ((2, 2), 0, True), ((2, 3), 2, False))
  def test_matches_loops(self, grid, prefix, renorm):
    rng = np.random.default_rng(1)
    t = grid[0] * grid[1] + prefix
    att = random_attention(rng, (2, 3, 2, t, t))
    got = vi.mean_attention_distance(att, grid, (16, 8), prefix, renorm)
    np.testing.assert_allclose(got, ref_distance(att, grid, (16, 8), prefix,
                                                 renorm), rtol=1e-5)

  def test_grid_mismatch_message(self):
    with self.assertRaisesRegex(ValueError, 'expects 7 tokens, got 5'):
      vi.mean_attention_distance(as5(np.eye(5)), (2, 3), P)
    with self.assertRaisesRegex(ValueError, r'\(layers, batch, heads, T, T\)'):
      vi.mean_attention_distance(np.eye(5)[None], (2, 2), P)


# ------------------------------------------------------------------- rollout
class RolloutTest(parameterized.TestCase):

  def test_uniform(self):
    t, layers = 5, 2
    att = one_layer(np.full((layers, t, t), 1 / t))
    r = np.asarray(vi.attention_rollout(att))[0]
    want = 2.0**-layers * np.eye(t) + (1 - 2.0**-layers) / t
    np.testing.assert_allclose(r, want, atol=1e-6)
    np.testing.assert_allclose(r[0], [.4, .15, .15, .15, .15], atol=1e-6)
    np.testing.assert_allclose(vi.rollout_map(att, (2, 2)), np.ones((1, 2, 2)),
                               atol=1e-6)

  def test_order(self):
    e1 = np.tile(np.eye(3)[1], (3, 1))
    e2 = np.tile(np.eye(3)[2], (3, 1))
    att = one_layer(np.stack([e1, e2]))  # Layer 1 then layer 2.
    r = np.asarray(vi.attention_rollout(att))[0]
    np.testing.assert_allclose(r[0], [.25, .5, .25], atol=1e-6)
    np.testing.assert_allclose(vi.rollout_map(att, (1, 2))[0], [[1., .5]],
                               atol=1e-6)

  def test_head_averaging(self):
    a1 = np.tile(np.eye(3)[1], (3, 1))
    att = np.stack([a1, np.eye(3)])[None, None].astype(np.float32)
    r = np.asarray(vi.attention_rollout(att))[0]
    np.testing.assert_allclose(r[0], [.75, .25, 0], atol=1e-6)

  def test_rows_sum_to_one_and_match_loops(self):
    rng = np.random.default_rng(2)
    att = random_attention(rng, (4, 3, 2, 7, 7))
    r = np.asarray(vi.attention_rollout(att))
    np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(r, ref_rollout(att), atol=1e-5)
    ref = ref_rollout(att)[:, 0, 1:].reshape(3, 2, 3)
    np.testing.assert_allclose(vi.rollout_map(att, (2, 3)),
                               ref / ref.max((1, 2), keepdims=True),
                               rtol=1e-5)

  def test_identity_is_guarded(self):
    att = one_layer(np.stack([np.eye(5)] * 3))
    np.testing.assert_allclose(vi.attention_rollout(att)[0], np.eye(5),
                               atol=1e-7)
    m = np.asarray(vi.rollout_map(att, (2, 2)))
    self.assertTrue(np.all(m == 0))

  def test_total_sum_normalisation_is_equivalent(self):
    # vit-keras divides by the matrix total (2T), i.e. R * T^-L: same map.
    rng = np.random.default_rng(3)
    att = random_attention(rng, (3, 1, 2, 5, 5)).astype(np.float64)
    r = np.eye(5)
    for a in att[:, 0].mean(1):
      a = a + np.eye(5)
      r = (a / a.sum()) @ r
    m = r[0, 1:] / r[0, 1:].max()
    np.testing.assert_allclose(vi.rollout_map(att, (2, 2))[0].ravel(), m,
                               rtol=1e-5)

  def test_no_prefix_uses_mean_row(self):
    rng = np.random.default_rng(4)
    att = random_attention(rng, (2, 1, 2, 4, 4))
    want = ref_rollout(att)[0].mean(0)
    np.testing.assert_allclose(vi.rollout_map(att, (2, 2), 0)[0].ravel(),
                               want / want.max(), rtol=1e-5)


# ------------------------------------------------------------------ position
class PositionTest(parameterized.TestCase):

  def test_one_hot(self):
    pe = np.concatenate([np.ones((1, 9)), np.eye(9)])[None]  # CLS + 3x3.
    s = np.asarray(vi.posemb_similarity(pe, (3, 3)))
    np.testing.assert_allclose(s, np.eye(9), atol=1e-6)

  def test_row_column_one_hot(self):
    g = 3
    q = [np.concatenate([np.eye(g)[r], np.eye(g)[c]])
         for r in range(g) for c in range(g)]
    pe = np.concatenate([np.full((1, 2 * g), 7.), np.stack(q)])
    s = np.asarray(vi.posemb_similarity(pe, (g, g)))
    np.testing.assert_allclose(s[0].reshape(g, g),
                               [[1, .5, .5], [.5, 0, 0], [.5, 0, 0]],
                               atol=1e-6)
    np.testing.assert_allclose(s[1 * g + 2].reshape(g, g),
                               [[0, 0, .5], [.5, .5, 1], [0, 0, .5]],
                               atol=1e-6)

  def test_properties_and_loops(self):
    rng = np.random.default_rng(5)
    pe = rng.normal(size=(1, 7, 16)).astype(np.float32)
    s = np.asarray(vi.posemb_similarity(pe, (2, 3)))
    self.assertEqual(s.shape, (6, 6))
    np.testing.assert_allclose(s, s.T, atol=1e-6)
    np.testing.assert_allclose(np.diag(s), 1, atol=1e-6)
    self.assertTrue(np.all(np.abs(s) <= 1))
    np.testing.assert_allclose(s, ref_cosine(pe[0, 1:]), atol=1e-5)
    scaled = pe * np.array([1, 3, .1, 1, 5, 1, 2], np.float32)[None, :, None]
    np.testing.assert_allclose(vi.posemb_similarity(scaled, (2, 3)), s,
                               atol=1e-5)

  @parameterized.parameters(((7, 7), (63, 63)), ((14, 14), (224, 224)),
                            ((2, 3), (8, 15)))
  def test_mosaic_shape_and_layout(self, grid, shape):
    gh, gw = grid
    rng = np.random.default_rng(6)
    q = rng.normal(size=(gh * gw, 4)).astype(np.float32)
    s = np.asarray(vi.posemb_similarity(q, grid, 0))
    m = np.asarray(vi.similarity_mosaic(s, grid))
    self.assertEqual(m.shape, shape)
    for r in range(gh):
      for c in range(gw):
        tile = m[r * (gh + 2):(r + 1) * (gh + 2),
                 c * (gw + 2):(c + 1) * (gw + 2)]
        self.assertTrue(np.all(np.isnan(tile[[0, -1]])))
        self.assertTrue(np.all(np.isnan(tile[:, [0, -1]])))
        inner = tile[1:-1, 1:-1]
        np.testing.assert_array_equal(inner.ravel(), s[r * gw + c])
        self.assertEqual(np.unravel_index(np.argmax(inner), inner.shape),
                         (r, c))

  def test_validation(self):
    with self.assertRaisesRegex(ValueError, 'expects 10 tokens, got 9'):
      vi.posemb_similarity(np.eye(9)[None], (3, 3))
    with self.assertRaisesRegex(ValueError, r'\(1, T, D\)'):
      vi.posemb_similarity(np.zeros((2, 10, 4)), (3, 3))


# ------------------------------------------------------------------- filters
def planted_kernel():
  rng = np.random.default_rng(7)
  v, _ = np.linalg.qr(rng.normal(size=(48, 2)))
  ab = rng.normal(size=(64, 2))
  ab -= ab.mean(0)
  ab[:, 1] -= ab[:, 0] * (ab[:, 0] @ ab[:, 1]) / (ab[:, 0] @ ab[:, 0])
  ab /= ab.std(0)
  x = 3 * np.outer(ab[:, 0], v[:, 0]) + np.outer(ab[:, 1], v[:, 1])
  kernel = np.moveaxis(x.reshape(64, 4, 4, 3), 0, -1)  # (4, 4, 3, 64).
  return kernel.astype(np.float32), v.T


class FiltersTest(parameterized.TestCase):

  def test_planted_components(self):
    kernel, v = planted_kernel()
    out = vi.embedding_filters(kernel, 2)
    c = np.asarray(out.components).reshape(2, 48)
    np.testing.assert_allclose(np.abs(c @ v.T), np.eye(2), atol=1e-5)
    np.testing.assert_allclose(out.explained_variance_ratio, [.9, .1],
                               atol=1e-5)
    np.testing.assert_allclose(out.explained_variance,
                               [9 * 64 / 63, 64 / 63], rtol=1e-5)

  @parameterized.parameters(32, 64)  # D < F (Gram path), D > F (covariance).
  def test_orthonormal_sign_rule_and_sklearn(self, d):
    rng = np.random.default_rng(8)
    # Decaying scales give well-separated components, as in real kernels.
    kernel = rng.normal(size=(4, 4, 3, d)) * np.geomspace(3, .3, 48).reshape(
        4, 4, 3, 1)
    kernel = kernel.astype(np.float32)
    out = vi.embedding_filters(kernel, 28)
    c = np.asarray(out.components).reshape(28, -1)
    self.assertEqual(out.components.shape, (28, 4, 4, 3))
    np.testing.assert_allclose(c @ c.T, np.eye(28), atol=1e-5)
    for row in c:
      self.assertGreater(row[np.argmax(np.abs(row))], 0)
    x = np.moveaxis(kernel, -1, 0).reshape(d, -1).astype(np.float64)
    pca = decomposition.PCA(28, svd_solver='full').fit(x)  # sklearn >= 1.5.
    np.testing.assert_allclose(c[:10], pca.components_[:10], atol=1e-3)
    np.testing.assert_allclose(out.explained_variance_ratio,
                               pca.explained_variance_ratio_, rtol=1e-4)
    np.testing.assert_allclose(out.explained_variance,
                               pca.explained_variance_, rtol=1e-4)

  def test_sign_rule_ties_go_to_first_index(self):
    # SVD output rarely ties exactly, so test the rule on exact vectors.
    vt = np.array([[-1., 1., 0.], [2., -2., 1.], [0., .5, -3.]], np.float32)
    np.testing.assert_array_equal(
        filters._fix_signs(vt), [[1, -1, 0], [2, -2, 1], [0, -.5, 3]])

  def test_min_max_tiles_and_negative(self):
    rng = np.random.default_rng(9)
    comp = rng.normal(size=(5, 4, 4, 3)).astype(np.float32)
    tiles = np.asarray(vi.normalize_filters(comp))
    np.testing.assert_allclose(tiles.min((1, 2, 3)), 0)
    np.testing.assert_allclose(tiles.max((1, 2, 3)), 1)
    np.testing.assert_allclose(vi.normalize_filters(-comp), 1 - tiles,
                               atol=1e-6)

  def test_hwio_layout(self):
    kernel = np.zeros((4, 4, 3, 8), np.float32)
    kernel[1, 2, 0, 5] = 1.0
    c = np.asarray(vi.embedding_filters(kernel, 1).components[0])
    nonzero = np.argwhere(np.abs(c) > 1e-6)
    np.testing.assert_array_equal(nonzero, [[1, 2, 0]])

  def test_validation(self):
    with self.assertRaisesRegex(ValueError, 'rank 4'):
      vi.embedding_filters(np.zeros((48, 64)))
    with self.assertRaisesRegex(ValueError, r'num_components=28 must be in '
                                r'\[1, 10\]'):
      vi.embedding_filters(np.zeros((4, 4, 3, 10)))


# ------------------------------------------------------------------- overlay
class OverlayTest(absltest.TestCase):

  def test_mask_and_overlay(self):
    m = np.zeros((2, 3))
    m[0, 2] = 1.0
    mask = overlay.overlay_mask(m, (32, 48), 16)
    self.assertEqual(mask.shape, (32, 48))
    self.assertAlmostEqual(float(mask.min()), 0.0)
    self.assertAlmostEqual(float(mask.max()), 1.0)
    # Peak in the top-right patch (the W, H order of PIL is respected).
    r, c = np.unravel_index(np.argmax(mask), mask.shape)
    self.assertLess(r, 16)
    self.assertGreaterEqual(c, 32)
    image = np.full((32, 48, 3), .5, np.float32)
    shown = overlay.attention_overlay(image, m, 16)
    np.testing.assert_allclose(shown, image * mask[..., None])

  def test_constant_maps(self):
    self.assertTrue(np.all(overlay.overlay_mask(np.ones((2, 2)), (8, 8), 4)
                           == 1.0))
    self.assertTrue(np.all(overlay.overlay_mask(np.zeros((2, 2)), (8, 8), 4)
                           == 0.0))


if __name__ == '__main__':
  absltest.main()
