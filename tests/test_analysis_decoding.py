"""Tests for gbi_jax.analysis.decoding: the OOD generalisation protocol and decoder angles."""

import itertools

import jax
import numpy as np
import pytest

from gbi_jax.analysis import decoding as dec
from gbi_jax.tasks import orthant_index, orthant_signs

N, H, D = 1200, 12, 2


# Test data are made with NumPy (no per-op compilation of eager JAX code).
def _latents(rng, n=N, d=D):
    return rng.uniform(-0.5, 0.5, size=(n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def linear_code():
    """h = x A + small noise + offset with orthogonal, equal-norm rows of A."""
    rng = np.random.default_rng(0)
    x = _latents(rng)
    q, _ = np.linalg.qr(rng.normal(size=(H, D)))
    a = (3.0 * q.T).astype(np.float32)  # [D, H]
    h = (x @ a + 0.01 * rng.normal(size=(N, H)) + 1.0).astype(np.float32)
    return h, x, a


def _quadrant_onehot(x, width):
    quadrant = np.asarray(orthant_index(x))
    return np.eye(width, dtype=np.float32)[quadrant]


@pytest.fixture(scope="module")
def quadrant_code():
    """A code that is linear inside each quadrant but uses different units per quadrant."""
    rng = np.random.default_rng(1)
    x = _latents(rng)
    maps = rng.normal(size=(4, D, H // 4))
    h = np.einsum("nq,nd,qdh->nqh", _quadrant_onehot(x, 4), x, maps).reshape(N, H)
    return h.astype(np.float32), x


# --------------------------------------------------------------------------
# Orthants.
# --------------------------------------------------------------------------
def test_halfspace_orthants():
    signs = np.array(list(itertools.product([-1, 1], repeat=3)))
    np.testing.assert_array_equal(dec.halfspace_orthants(3, 0), signs[:, 0] > 0)
    np.testing.assert_array_equal(dec.halfspace_orthants(2, 1), [True, True, False, False])


def test_sample_in_orthants():
    orthants = np.arange(8) % 4
    x = dec.sample_in_orthants(jax.random.PRNGKey(0), orthants, 2)
    np.testing.assert_array_equal(orthant_index(x), orthants)
    assert np.all(np.abs(x) <= 0.5)


# --------------------------------------------------------------------------
# r^2.
# --------------------------------------------------------------------------
def test_r2_normaliser():
    rng = np.random.default_rng(0)
    y = rng.uniform(0, 0.5, size=(4000, 2))  # one quadrant: variance 1/48
    pred = np.broadcast_to(y.mean(0), y.shape)  # the quadrant mean (~0.25)
    # Full-prior normaliser: 1 - (1/48) / (1/12) = 0.75; empirical: 0.
    np.testing.assert_allclose(dec.r2(y, pred), 0.75, atol=0.01)
    np.testing.assert_allclose(dec.r2(y, pred, normaliser=None), 0.0, atol=1e-5)
    np.testing.assert_allclose(dec.r2(y, y), 1.0)
    np.testing.assert_allclose(dec.r2(y, pred, normaliser=[1 / 48, 1 / 12], per_dim=True),
                               [0.0, 0.75], atol=0.03)
    # Weights select rows.
    w = np.r_[np.ones(2000), np.zeros(2000)]
    bad = np.where(w[:, None] > 0, y, 10.0)
    np.testing.assert_allclose(dec.r2(y, bad, weights=w), 1.0)
    np.testing.assert_allclose(jax.jit(dec.r2)(y, pred), dec.r2(y, pred), rtol=1e-6)


# --------------------------------------------------------------------------
# Decoder fits.
# --------------------------------------------------------------------------
def test_ridge_recovers_linear_map_and_weights_mask_rows(linear_code):
    h, x, a = linear_code
    w, b = dec.fit_linear_decoder(h, x, l2=0.0)
    np.testing.assert_allclose(dec.predict(h, w, b), x, atol=0.02)
    np.testing.assert_allclose((h[:5] - 1.0) @ np.linalg.pinv(a), dec.predict(h[:5], w, b),
                               atol=0.02)
    # Zero-weight rows are ignored, even if their targets are garbage.
    y_bad = x.copy()
    y_bad[: N // 2] = 5.0
    weights = np.r_[np.zeros(N // 2), np.ones(N - N // 2)]
    w2, b2 = dec.fit_linear_decoder(h, y_bad, weights=weights)
    np.testing.assert_allclose(dec.predict(h, w2, b2), x, atol=0.02)


def test_ridge_and_adam_agree(linear_code):
    h, x, _ = linear_code
    w_r, b_r = dec.fit_linear_decoder(h, x)
    w_a, b_a = dec.fit_linear_decoder(h, x, method="adam", steps=2000, key=jax.random.PRNGKey(3))
    r_ridge = dec.r2(x, dec.predict(h, w_r, b_r))
    r_adam = dec.r2(x, dec.predict(h, w_a, b_a))
    assert r_ridge > 0.99 and abs(r_ridge - r_adam) < 0.01, (r_ridge, r_adam)
    np.testing.assert_allclose(dec.predict(h, w_a, b_a), dec.predict(h, w_r, b_r), atol=0.05)
    # active_steps (traced) turns later updates into no-ops: 0 leaves the torch init.
    w_0, b_0 = dec.fit_linear_decoder(h, x, method="adam", steps=2000, active_steps=0,
                                      key=jax.random.PRNGKey(3))
    assert np.all(np.abs(w_0) <= 1 / np.sqrt(H)) and np.all(np.abs(b_0) <= 1 / np.sqrt(H))
    assert dec.r2(x, dec.predict(h, w_0, b_0)) < 0.5
    w_all, _ = dec.fit_linear_decoder(h, x, method="adam", steps=2000, active_steps=2000,
                                      key=jax.random.PRNGKey(3))
    np.testing.assert_array_equal(w_all, w_a)


def test_decoder_steps():
    # The authors' schedule for N = 2, 3, 6, 12, 24 (their generalize.py).
    assert [dec.decoder_steps(n) for n in (2, 3, 6, 12, 24)] == [3000, 3000, 2000, 1000, 1000]
    assert dec.decoder_steps(48) == 1000
    got = dec.decoder_steps(np.array([2, 4, 6, 7, 24]), (30, 20, 10))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, [30, 20, 20, 10, 10])
    with pytest.raises(ValueError, match="3 step counts"):
        dec.decoder_steps(2, (10, 10))


# --------------------------------------------------------------------------
# OOD protocol.
# --------------------------------------------------------------------------
def test_linear_code_generalises_out_of_distribution(linear_code):
    h, x, _ = linear_code
    for q in range(4):
        assert dec.ood_r2(h, x, heldout=q) > 0.99
        assert dec.id_r2(h, x, test_orthant=q, key=jax.random.PRNGKey(q)) > 0.99


def test_ood_r2_vmaps_over_folds(linear_code):
    h, x, _ = linear_code
    vmapped = jax.vmap(lambda q: dec.ood_r2(h, x, heldout=q))(np.arange(4))
    grid = dec.cross_validated_r2(h, x, key=jax.random.PRNGKey(0), num_fits=3)
    np.testing.assert_allclose(grid, np.broadcast_to(vmapped[:, None], (4, 3)), rtol=1e-5)
    np.testing.assert_allclose(vmapped[1], dec.ood_r2(h, x, heldout=1), rtol=1e-5)


def test_quadrant_specific_code_fails_out_of_distribution(quadrant_code):
    h, x = quadrant_code
    for q in range(4):
        ood = float(dec.ood_r2(h, x, heldout=q))
        iid = float(dec.id_r2(h, x, test_orthant=q, key=jax.random.PRNGKey(q)))
        assert iid > 0.99 and ood < 0.2, (q, iid, ood)
    # One-hot quadrant code: ID r^2 = 1 - (1/48)/(1/12) = 0.75, OOD strongly negative.
    onehot = _quadrant_onehot(x, H)  # units 4.. are silent
    np.testing.assert_allclose(dec.id_r2(onehot, x, test_orthant=0), 0.75, atol=0.05)
    assert dec.ood_r2(onehot, x, heldout=0) < 0.0


def test_separate_test_set_layout(quadrant_code):
    h, x = quadrant_code
    # Per-orthant batches concatenated, in arbitrary order: train on the first half of
    # trials, test on fresh trials.
    h_tr, x_tr, h_te, x_te = h[:600], x[:600], h[600:], x[600:]
    ood = dec.ood_r2(h_tr, x_tr, heldout=2, h_test=h_te, x_test=x_te)
    iid, w, b = dec.id_r2(h_tr, x_tr, test_orthant=2, h_test=h_te, x_test=x_te,
                          return_decoder=True)
    assert iid > 0.99 and ood < 0.2
    in_q = np.asarray(orthant_index(x_te)) == 2
    np.testing.assert_allclose(iid, dec.r2(x_te[in_q], dec.predict(h_te[in_q], w, b)), rtol=1e-5)
    with pytest.raises(ValueError, match="both"):
        dec.ood_r2(h_tr, x_tr, heldout=0, h_test=h_te)


def test_cross_validated_grid(linear_code, quadrant_code):
    h, x, a = linear_code
    key = jax.random.PRNGKey(0)
    cv = dec.cross_validate(h, x, key=key, num_fits=3, method="adam", steps=1000)
    assert cv.r2.shape == (4, 3) and cv.weights.shape == (4, 3, H, D)
    assert cv.biases.shape == (4, 3, D)
    assert np.all(cv.r2 > 0.98), cv.r2
    assert len(np.unique(np.asarray(cv.r2))) > 1  # fits differ in their key
    # Ridge fits on random 70 % subsets: entry [k, f] equals the single-fold call with
    # fit f's key.
    sub = dec.cross_validated_r2(h, x, key=key, num_fits=3, train_fraction=0.7)
    fit_key = jax.random.split(key, 3)[1]
    np.testing.assert_allclose(dec.ood_r2(h, x, heldout=2, key=fit_key, train_fraction=0.7),
                               sub[2, 1], rtol=1e-5)
    assert dec.decoder_angles(cv.weights).shape == (4, 3, 1)
    # Orthogonal code -> decoder angle ~90 degrees. (Ridge: Adam decoders keep their
    # random init in the 10 directions the code never excites, which blurs the angle.)
    _, w, _ = dec.ood_r2(h, x, heldout=0, return_decoder=True)
    np.testing.assert_allclose(dec.decoder_angles(w), [90.0], atol=1.0)
    skewed = x @ (a + np.stack([a[1], np.zeros(H, np.float32)]))  # x1 -> a1 + a2: 135 deg
    _, w, _ = dec.ood_r2(skewed, x, heldout=0, return_decoder=True)
    np.testing.assert_allclose(dec.decoder_angles(w), [135.0], atol=1.0)
    # Data with a leading fit axis, ID mode, half-space folds, ridge.
    hq, xq = quadrant_code
    stacked_h = np.stack([hq[:600], hq[600:]])  # [F=2, n, H]: fresh trials per fit
    stacked_x = np.stack([xq[:600], xq[600:]])
    folds = np.stack([dec.halfspace_orthants(2, 0), dec.halfspace_orthants(2, 1)])
    ood = dec.cross_validated_r2(stacked_h, stacked_x, key=key, num_fits=None, folds=folds)
    iid = dec.cross_validated_r2(stacked_h, stacked_x, key=key, num_fits=2, folds=folds,
                                 mode="id")
    assert ood.shape == iid.shape == (2, 2)
    assert np.all(iid > 0.99) and np.all(ood < 0.2)
    median, q25, q75 = dec.median_iqr(iid)
    assert q25 <= median <= q75


def test_decoder_angles_and_random_baseline():
    w = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # [H=3, D=3]
    np.testing.assert_allclose(dec.decoder_angles(w), [90.0, 45.0, 45.0], atol=1e-4)
    np.testing.assert_allclose(dec.decoder_angles(np.stack([w[:, :2], -w[:, 1:]])),
                               [[90.0], [45.0]], atol=1e-4)
    angles = dec.random_angle_baseline(64, 2, jax.random.PRNGKey(0), 2000)
    assert angles.shape == (2000, 1)
    np.testing.assert_allclose(np.median(angles), 90.0, atol=1.0)
    np.testing.assert_allclose(np.std(angles), np.degrees(1 / np.sqrt(64)), rtol=0.1)
