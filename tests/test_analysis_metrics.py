"""Tests for gbi_jax.analysis.metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gbi_jax.analysis import metrics


def _auroc_brute_force(scores_in, scores_out):
    s_in = np.asarray(scores_in, np.float64)[:, None]
    s_out = np.asarray(scores_out, np.float64)[None, :]
    return np.mean((s_out > s_in) + 0.5 * (s_out == s_in))


# --------------------------------------------------------------------------
# AUROC.
# --------------------------------------------------------------------------
def test_auroc_known_cases():
    assert metrics.auroc([0.0, 1.0, 2.0], [3.0, 4.0]) == 1.0  # perfect: OOD scores higher
    assert metrics.auroc([3.0, 4.0], [0.0, 1.0, 2.0]) == 0.0  # perfectly wrong orientation
    assert metrics.auroc([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.5  # identical
    assert metrics.auroc(np.ones(5), np.ones(7)) == 0.5  # all tied
    # One OOD sample above 2 of 4 in-dist samples and tied with a third: (2 + 0.5) / 4.
    np.testing.assert_allclose(metrics.auroc([0.0, 1.0, 2.0, 3.0], [2.0]), 0.625)


_SIZES = st.sampled_from([1, 5, 23])  # few shapes: one compilation per shape pair


@settings(max_examples=25, deadline=None)
@given(st.data(), _SIZES, _SIZES)
def test_auroc_matches_pair_count_with_ties(data, n_in, n_out):
    small_ints = st.integers(-4, 4)  # a narrow range forces many ties
    scores_in = data.draw(st.lists(small_ints, min_size=n_in, max_size=n_in))
    scores_out = data.draw(st.lists(small_ints, min_size=n_out, max_size=n_out))
    np.testing.assert_allclose(metrics.auroc(np.array(scores_in, np.float32),
                                             np.array(scores_out, np.float32)),
                               _auroc_brute_force(scores_in, scores_out), rtol=1e-6)


def test_auroc_continuous_random_and_symmetry():
    rng = np.random.default_rng(0)
    s_in = rng.normal(size=300)
    s_out = rng.normal(0.7, 1.0, size=200)
    got = metrics.auroc(s_in, s_out)
    np.testing.assert_allclose(got, _auroc_brute_force(s_in, s_out), rtol=1e-6)
    np.testing.assert_allclose(metrics.auroc(s_out, s_in), 1.0 - got, rtol=1e-6)
    # Invariant to strictly increasing transforms of the score.
    np.testing.assert_allclose(metrics.auroc(np.exp(s_in), np.exp(s_out)), got, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(metrics.auroc)(s_in, s_out), got, rtol=1e-6)


def test_auroc_rejects_empty():
    with pytest.raises(ValueError, match="at least one score"):
        metrics.auroc(np.zeros(0), np.ones(3))


# --------------------------------------------------------------------------
# Pearson, accuracy, centring.
# --------------------------------------------------------------------------
def test_pearson_matches_numpy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=100)
    b = 0.5 * a + rng.normal(size=100)
    np.testing.assert_allclose(metrics.pearson(a, b), np.corrcoef(a, b)[0, 1], rtol=1e-5)
    np.testing.assert_allclose(metrics.pearson(a, -3.0 * a + 2.0), -1.0, rtol=1e-6)
    # Per-row correlations along an axis.
    a2 = rng.normal(size=(4, 50))
    b2 = a2 + rng.normal(size=(4, 50))
    want = [np.corrcoef(a2[i], b2[i])[0, 1] for i in range(4)]
    np.testing.assert_allclose(metrics.pearson(a2, b2, axis=-1), want, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(metrics.pearson)(a, b), np.corrcoef(a, b)[0, 1],
                               rtol=1e-5)
    assert np.isnan(metrics.pearson(np.ones(5), np.arange(5.0)))
    with pytest.raises(ValueError, match="equal shapes"):
        metrics.pearson(np.ones(3), np.ones(4))


def test_accuracy():
    labels = np.array([0, 1, 2, 1])
    np.testing.assert_allclose(metrics.accuracy(np.array([0, 1, 1, 1]), labels), 0.75)
    logits = np.eye(3)[[0, 2, 2, 1]] * 5.0
    np.testing.assert_allclose(metrics.accuracy(logits, labels), 0.75)
    with pytest.raises(ValueError, match="accuracy needs predictions"):
        metrics.accuracy(np.zeros(3, int), labels)


def test_centered_removes_shared_constant():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(6, 4))
    shifted = scores + rng.normal(size=(6, 1)) * 10.0  # a different constant per example
    c = metrics.centered(scores)
    np.testing.assert_allclose(np.mean(c, axis=-1), 0.0, atol=1e-6)
    np.testing.assert_allclose(metrics.centered(shifted), c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(metrics.centered(scores.T, axis=0), c.T, rtol=1e-6)


# --------------------------------------------------------------------------
# Calibration.
# --------------------------------------------------------------------------
def test_ece_is_zero_for_perfectly_calibrated_construction():
    # In bin b, every prediction has confidence (b + 0.5) / 10 and exactly that
    # fraction of the 20 predictions is correct.
    confidence, correct = [], []
    for b in range(10):
        c = (b + 0.5) / 10
        n_right = int(round(c * 20))
        confidence += [c] * 20
        correct += [True] * n_right + [False] * (20 - n_right)
    confidence = np.array(confidence, np.float32)
    correct = np.array(correct)
    np.testing.assert_allclose(metrics.expected_calibration_error(confidence, correct), 0.0,
                               atol=1e-6)
    bins = metrics.reliability_bins(confidence, correct, num_bins=10)
    np.testing.assert_array_equal(bins.count, np.full(10, 20))
    np.testing.assert_allclose(bins.accuracy, bins.mean_confidence, atol=1e-6)
    np.testing.assert_allclose(bins.edges, np.linspace(0, 1, 11), atol=1e-7)


def test_ece_of_sampled_calibrated_predictor_is_small():
    rng = np.random.default_rng(3)
    confidence = rng.uniform(size=200_000)
    correct = rng.uniform(size=200_000) < confidence
    assert float(metrics.expected_calibration_error(confidence, correct, 15)) < 0.01


def test_ece_known_miscalibration():
    # Always 100 % confident and always wrong: ECE = 1. Always 90 % confident and
    # right half of the time: ECE = 0.4.
    np.testing.assert_allclose(metrics.expected_calibration_error(np.ones(8), np.zeros(8)), 1.0)
    np.testing.assert_allclose(
        metrics.expected_calibration_error(np.full(10, 0.9), np.arange(10) % 2 == 0), 0.4,
        rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(metrics.expected_calibration_error, static_argnums=2)(
            jnp.full(10, 0.9), jnp.arange(10) % 2 == 0, 10), 0.4, rtol=1e-6)


def test_reliability_bins_edges_and_empty_bins():
    bins = metrics.reliability_bins(np.array([0.0, 0.05, 0.5, 1.0]), np.array([1, 0, 1, 1]),
                                    num_bins=4)
    np.testing.assert_array_equal(bins.count, [2, 0, 1, 1])  # 0 and 1 land in the end bins
    np.testing.assert_allclose(bins.accuracy, [0.5, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(bins.mean_confidence, [0.025, 0.0, 0.5, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="num_bins must be an integer >= 1"):
        metrics.reliability_bins(np.ones(3), np.ones(3), num_bins=0)
    with pytest.raises(ValueError, match="same number of entries"):
        metrics.reliability_bins(np.ones(3), np.ones(4))


def test_fit_temperature_recovers_the_sampling_temperature():
    # Labels drawn from softmax(s / alpha): the NLL-optimal temperature is alpha.
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(20_000, 5)).astype(np.float32) * 3.0
    for alpha in (0.5, 2.0):
        p = np.exp(scores / alpha - (scores / alpha).max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        labels = (rng.random((len(p), 1)) > np.cumsum(p, -1)).sum(-1)
        got = metrics.fit_temperature(scores, labels)
        assert isinstance(got, float) and abs(np.log(got / alpha)) < 0.05, (alpha, got)
    with pytest.raises(ValueError, match="scores"):
        metrics.fit_temperature(scores[0], labels[:1])
