"""Tests for gbi_jax.analysis.theory: Eq. 7 (Vafidis et al. 2025), the Bayes references
against closed forms and Monte Carlo."""

import math

import jax
import numpy as np
import pytest

from gbi_jax.analysis import theory
from gbi_jax.tasks import line_angles


# --------------------------------------------------------------------------
# Eq. 7 and the posterior-mean r^2.
# --------------------------------------------------------------------------
def test_r2_ceiling_values():
    # 1 - 0.48 / t at sigma = 0.2 (Eq. 7).
    for t, want in [(5, 0.904), (10, 0.952), (20, 0.976), (21, 0.977), (40, 0.988)]:
        np.testing.assert_allclose(theory.r2_ceiling(0.2, t), want, atol=5e-4)
    # Fig. 5c noise grid at T = 20.
    sigmas = np.array([0.1, 0.2, 0.3, 0.4, 0.6])
    np.testing.assert_allclose(theory.r2_ceiling(sigmas, 20),
                               [0.994, 0.976, 0.946, 0.904, 0.784], atol=5e-4)
    # Free RT: T + 1 samples (Figures/Fig5a.py), T = 5, 10, 20, 40.
    np.testing.assert_allclose(theory.r2_ceiling(0.2, np.array([5, 10, 20, 40]) + 1),
                               [0.920, 0.956, 0.977, 0.988], atol=5e-4)
    np.testing.assert_allclose(theory.r2_ceiling(0.2, 20, latent_var=1 / 48), 1 - 0.04 * 48 / 20,
                               rtol=1e-6)


def test_r2_ceiling_keeps_the_input_type():
    # Python floats stay float64 (the tables record this value); arrays keep their kind.
    value = theory.r2_ceiling(0.2, 20)
    assert isinstance(value, float) and value == 1.0 - 0.2 ** 2 / (20 * (1.0 / 12.0))
    assert isinstance(theory.r2_ceiling(np.array([0.1, 0.2]), 20), np.ndarray)
    np.testing.assert_allclose(theory.r2_ceiling([0.1, 0.2], 20), [0.994, 0.976], atol=5e-4)


def test_r2_ceiling_matches_sample_mean_monte_carlo():
    key_x, key_n = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.uniform(key_x, (200_000,), minval=-0.5, maxval=0.5)
    mean = x + 0.2 / math.sqrt(20) * jax.random.normal(key_n, x.shape)
    mc = 1 - np.mean((np.asarray(mean) - np.asarray(x)) ** 2) * 12
    np.testing.assert_allclose(mc, theory.r2_ceiling(0.2, 20), atol=1e-3)


def test_jit_and_vmap_agree():
    sigmas = np.array([0.1, 0.2, 0.4], np.float32)
    np.testing.assert_allclose(jax.vmap(lambda s: theory.posterior_mean_r2(s, 20))(sigmas),
                               [theory.posterior_mean_r2(s, 20) for s in sigmas], rtol=1e-6)
    np.testing.assert_allclose(jax.jit(theory.r2_ceiling)(sigmas, 20),
                               theory.r2_ceiling(sigmas, 20), rtol=1e-6)


def test_posterior_mean_r2_values():
    # Monte Carlo of the exact truncated-Gaussian posterior mean.
    for t, want in [(5, 0.920), (10, 0.958), (20, 0.978), (21, 0.979), (40, 0.989)]:
        got = float(theory.posterior_mean_r2(0.2, t))
        assert abs(got - want) < 1.5e-3, (t, got, want)
        assert got > float(theory.r2_ceiling(0.2, t))  # the bounded prior helps


# --------------------------------------------------------------------------
# Bayes-optimal decision accuracy and cross-entropy.
# --------------------------------------------------------------------------
def test_line_normals_reproduce_the_authors_labels():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, size=(1000, 2))
    for n in (2, 3, 24):
        normals = theory.line_normals(n)
        labels = x[:, 1:2] > np.tan(line_angles(n)) * x[:, 0:1]
        np.testing.assert_array_equal(x @ normals.T > 0, labels)
        np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0)


def test_bayes_accuracy_2d_closed_forms():
    s = 0.2 / math.sqrt(20)
    # N = 2 diagonals: c.x* is triangular, the optimal rule is sign(c.m), error 2s/sqrt(pi) - s^2.
    np.testing.assert_allclose(theory.bayes_accuracy_2d(0.2, 20, 2),
                               1 - (2 * s / math.sqrt(math.pi) - s * s), atol=5e-5)
    # Axis-aligned line: c.x* uniform, error s sqrt(2/pi); also checks the coordinate swap.
    acc = theory.bayes_accuracy_2d(0.2, 20, normals=np.eye(2), per_task=True)
    np.testing.assert_allclose(acc, 1 - s * math.sqrt(2 / math.pi), atol=5e-5)


def test_bayes_accuracy_2d_values_and_bce_floor():
    # 0.951 (N = 2), 0.960 (N = 24) at T = 20, sigma = 0.2.
    np.testing.assert_allclose(theory.bayes_accuracy_2d(0.2, 20, 2), 0.951, atol=1e-3)
    acc24 = theory.bayes_accuracy_2d(0.2, 20, 24, per_task=True)
    assert acc24.shape == (24,)
    np.testing.assert_allclose(np.mean(acc24), 0.960, atol=1e-3)
    # Lines related by the box symmetries have equal accuracy.
    np.testing.assert_allclose(acc24, acc24[::-1], atol=1e-6)
    # Loss floor: 21 ln2 / 22 = 0.6616 plus the decision step's Bayes CE / 22.
    ce = float(theory.bayes_cross_entropy_2d(0.2, 20, 24))
    assert 0.0 < ce < math.log(2)
    floor = float(theory.bce_floor(0.2, 20, 24))
    np.testing.assert_allclose(floor, (21 * math.log(2) + ce) / 22, rtol=1e-6)
    assert 21 * math.log(2) / 22 < floor < 0.667
    # More evidence, better decisions.
    assert theory.bayes_accuracy_2d(0.2, 40, 2) > theory.bayes_accuracy_2d(0.2, 20, 2)
    # Traced sigma (no memoisation, no symmetry shortcut for traced normals) agrees.
    np.testing.assert_allclose(jax.jit(lambda s: theory.bayes_accuracy_2d(s, 20, 2))(0.2),
                               0.9515, atol=2e-4)


def test_bayes_accuracy_monte_carlo_matches_exact():
    key = jax.random.PRNGKey(1)
    kw = dict(num_trials=40_000, num_posterior=64)  # bias ~ -0.045 / 64 = -7e-4
    # Per line: N = 24 contains lines of all 6 symmetry classes (one compilation).
    exact = theory.bayes_accuracy_2d(0.2, 20, 24, per_task=True)
    mc = theory.bayes_accuracy_mc(key, 0.2, 20, 24, per_task=True, **kw)
    np.testing.assert_allclose(np.mean(mc), np.mean(exact), atol=2e-3)
    np.testing.assert_allclose(mc, exact, atol=6e-3)  # ~4 standard errors per line
    # Any D: axis-aligned hyperplanes in D = 3 have the closed form 1 - s sqrt(2/pi).
    s = 0.2 / math.sqrt(20)
    mc = theory.bayes_accuracy_mc(key, 0.2, 20, normals=np.eye(3), **kw)
    np.testing.assert_allclose(mc, 1 - s * math.sqrt(2 / math.pi), atol=3e-3)


def test_bayes_accuracy_rejects_bad_arguments():
    with pytest.raises(ValueError, match="exactly one"):
        theory.bayes_accuracy_2d(0.2, 20)
    with pytest.raises(ValueError, match="D = 2"):
        theory.bayes_accuracy_2d(0.2, 20, normals=np.eye(3))
    with pytest.raises(ValueError, match="decision"):
        theory.bayes_accuracy_mc(jax.random.PRNGKey(0), 0.2, 20, 2, decision="map")
