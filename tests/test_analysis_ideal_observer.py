"""Tests for gbi_jax.analysis.ideal_observer: the exact HMM filter of the toy task."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gbi_jax.analysis import ideal_observer as io
from gbi_jax.tasks import SwitchingGaussianTask


def _random_problem(rng, num_contexts, length):
    """Random log-likelihoods, a random row-stochastic transition and prior."""
    log_lik = rng.normal(size=(length, num_contexts)) * 2.0
    transition = rng.dirichlet(np.ones(num_contexts), size=num_contexts)
    initial = rng.dirichlet(np.ones(num_contexts))
    return log_lik, transition, initial


def _brute_force(log_lik, transition, initial):
    """Enumerate all K^t context paths for every prefix length t (float64 numpy)."""
    length, num_contexts = log_lik.shape
    lik = np.exp(log_lik)
    posterior = np.zeros((length, num_contexts))
    predictive = np.zeros((length, num_contexts))
    evidence = None
    for t in range(1, length + 1):
        joint_pred = np.zeros(num_contexts)  # p(x_1..t-1, c_t = k)
        joint_post = np.zeros(num_contexts)  # p(x_1..t, c_t = k)
        for path in itertools.product(range(num_contexts), repeat=t):
            p = initial[path[0]]
            for s in range(1, t):
                p *= transition[path[s - 1], path[s]]
            for s in range(t - 1):
                p *= lik[s, path[s]]
            joint_pred[path[-1]] += p
            joint_post[path[-1]] += p * lik[t - 1, path[-1]]
        predictive[t - 1] = joint_pred / joint_pred.sum()
        posterior[t - 1] = joint_post / joint_post.sum()
        evidence = joint_post.sum()
    return posterior, predictive, np.log(evidence)


@pytest.mark.float64
@pytest.mark.parametrize("num_contexts,length", [(2, 1), (2, 4), (2, 6), (3, 3), (3, 6)])
@pytest.mark.parametrize("use_initial", [True, False])
def test_forward_filter_matches_brute_force_enumeration(num_contexts, length, use_initial):
    rng = np.random.default_rng(100 * num_contexts + length)
    log_lik, transition, initial = _random_problem(rng, num_contexts, length)
    if not use_initial:
        initial_np = np.full(num_contexts, 1.0 / num_contexts)
        initial = None
    else:
        initial_np = initial
    want_post, want_pred, want_log_ev = _brute_force(log_lik, transition, initial_np)
    with jax.enable_x64(True):
        res = io.forward_filter(jnp.asarray(log_lik), jnp.asarray(transition),
                                None if initial is None else jnp.asarray(initial))
        np.testing.assert_allclose(res.posterior, want_post, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.predictive, want_pred, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(res.log_evidence, want_log_ev, rtol=1e-10, atol=1e-10)
    # Default float32 path agrees to float32 precision.
    res32 = io.forward_filter(log_lik.astype(np.float32), transition.astype(np.float32),
                              None if initial is None else initial.astype(np.float32))
    assert res32.posterior.dtype == jnp.float32
    np.testing.assert_allclose(res32.posterior, want_post, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res32.log_evidence, want_log_ev, rtol=1e-4, atol=1e-4)


def test_forward_filter_with_switching_matrix_matches_brute_force():
    rng = np.random.default_rng(7)
    x = rng.normal(0.5, 0.3, size=5)
    means, stds = np.array([0.2, 0.8, 0.5]), np.array([0.2, 0.1, 0.3])
    log_lik = stats.norm.logpdf(x[:, None], means, stds)
    transition = np.asarray(io.switching_transition_matrix(3, 0.1), dtype=np.float64)
    want_post, _, want_log_ev = _brute_force(log_lik, transition, np.full(3, 1 / 3))
    res = io.switching_gaussian_filter(x.astype(np.float32), means, stds, 0.1)
    np.testing.assert_allclose(res.posterior, want_post, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(res.log_evidence, want_log_ev, rtol=1e-4)


def test_zero_hazard_is_static_context_bayes():
    """hazard 0: posterior_t ∝ prior * prod_{s<=t} lik_s (the context never switches)."""
    rng = np.random.default_rng(1)
    log_lik = rng.normal(size=(20, 2))
    prior = np.array([0.3, 0.7])
    res = io.forward_filter(log_lik, io.switching_transition_matrix(2, 0.0), prior)
    cum = np.log(prior) + np.cumsum(log_lik, axis=0)
    want = np.exp(cum - cum.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(res.posterior, want, rtol=1e-5, atol=1e-6)
    want_log_ev = np.log(np.sum(np.exp(cum[-1] - cum[-1].max()))) + cum[-1].max()
    np.testing.assert_allclose(res.log_evidence, want_log_ev, rtol=1e-5)


@pytest.mark.parametrize("num_contexts", [2, 3, 5])
def test_iid_hazard_gives_memoryless_posterior(num_contexts):
    """hazard (K-1)/K makes every row uniform: contexts are i.i.d., posterior ∝ lik_t."""
    rng = np.random.default_rng(num_contexts)
    log_lik = rng.normal(size=(8, num_contexts))
    transition = io.switching_transition_matrix(num_contexts, (num_contexts - 1) / num_contexts)
    np.testing.assert_allclose(transition, np.full((num_contexts,) * 2, 1 / num_contexts),
                               rtol=1e-6)
    res = io.forward_filter(log_lik, transition)
    want = np.exp(log_lik) / np.exp(log_lik).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(res.posterior, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.predictive, 1 / num_contexts, rtol=1e-5)


def test_shared_shift_of_log_likelihoods_only_shifts_evidence():
    rng = np.random.default_rng(3)
    log_lik, transition, initial = _random_problem(rng, 3, 10)
    shift = rng.normal(size=(10, 1)) * 5.0
    a = io.forward_filter(log_lik, transition, initial)
    b = io.forward_filter(log_lik + shift, transition, initial)
    np.testing.assert_allclose(a.posterior, b.posterior, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(b.log_evidence - a.log_evidence, shift.sum(), rtol=1e-4, atol=1e-3)


@pytest.mark.float64
def test_long_sequence_is_stable_in_log_space():
    """Likelihoods of order exp(-1e4) would underflow a probability-space filter."""
    rng = np.random.default_rng(0)
    contexts = np.repeat(rng.integers(0, 2, size=100), 50)
    means, stds = np.array([-5.0, 5.0]), np.array([0.01, 0.01])
    x = rng.normal(means[contexts], 0.5).astype(np.float32)  # far from both: tiny densities
    res = io.switching_gaussian_filter(x, means, stds, 1 / 50)
    assert np.all(np.isfinite(res.posterior))
    np.testing.assert_allclose(res.posterior.sum(axis=1), 1.0, rtol=1e-5)
    assert np.isfinite(res.log_evidence)
    assert np.mean(np.argmax(res.posterior, axis=1) == contexts) > 0.99
    with jax.enable_x64(True):
        res64 = io.switching_gaussian_filter(jnp.asarray(x, jnp.float64), jnp.asarray(means),
                                             jnp.asarray(stds), 1 / 50)
        np.testing.assert_allclose(res.log_evidence, res64.log_evidence, rtol=1e-5)


def test_forward_filter_jit_and_vmap_agree():
    rng = np.random.default_rng(11)
    log_lik = rng.normal(size=(4, 12, 3)).astype(np.float32)
    transition = io.switching_transition_matrix(3, 0.05)
    batched = jax.vmap(io.forward_filter, in_axes=(0, None))(log_lik, transition)
    jitted = jax.jit(io.forward_filter)
    for i in range(4):
        eager = io.forward_filter(log_lik[i], transition)
        jit_res = jitted(log_lik[i], transition)
        for field in ("posterior", "predictive", "log_evidence"):
            np.testing.assert_allclose(getattr(batched, field)[i], getattr(eager, field),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(getattr(jit_res, field), getattr(eager, field),
                                       rtol=1e-5, atol=1e-6)


def test_vmap_over_hazard():
    log_lik = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float32)

    def run(h):
        return io.forward_filter(log_lik, io.switching_transition_matrix(2, h)).log_evidence

    hazards = jnp.array([0.01, 0.1, 0.5])
    np.testing.assert_allclose(jax.vmap(run)(hazards), [run(float(h)) for h in hazards],
                               rtol=1e-5)


def test_forward_filter_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"log_lik must have shape \[T, K\]"):
        io.forward_filter(jnp.zeros((3,)), jnp.eye(3))
    with pytest.raises(ValueError, match="transition must have shape"):
        io.forward_filter(jnp.zeros((4, 3)), jnp.eye(2))
    with pytest.raises(ValueError, match="initial must have shape"):
        io.forward_filter(jnp.zeros((4, 2)), jnp.eye(2), jnp.ones(3) / 3)


# --------------------------------------------------------------------------
# Transition matrix, likelihoods, block lengths, windows.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("num_contexts", [2, 3, 7])
@pytest.mark.parametrize("hazard", [0.0, 0.03, 0.5, 1.0])
def test_transition_matrix_rows_sum_to_one(num_contexts, hazard):
    t = np.asarray(io.switching_transition_matrix(num_contexts, hazard))
    assert t.shape == (num_contexts, num_contexts)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.diag(t), 1.0 - hazard, rtol=1e-6)
    off = t[~np.eye(num_contexts, dtype=bool)]
    np.testing.assert_allclose(off, hazard / (num_contexts - 1), rtol=1e-6)
    assert np.all(t >= 0)


def test_transition_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="num_contexts must be an integer >= 2"):
        io.switching_transition_matrix(1, 0.1)
    with pytest.raises(ValueError, match=r"hazard must be in \[0.0, 1.0\]"):
        io.switching_transition_matrix(2, 1.5)
    with pytest.raises(ValueError, match="hazard"):
        io.switching_transition_matrix(2, -0.1)


def test_gaussian_log_likelihoods_match_scipy():
    rng = np.random.default_rng(5)
    x = rng.normal(size=50).astype(np.float32)
    means = np.array([0.2, 0.8, -1.0, 3.0], np.float32)
    stds = np.array([0.2, 0.1, 1.0, 2.5], np.float32)
    got = io.gaussian_log_likelihoods(x, means, stds)
    assert got.shape == (50, 4)
    np.testing.assert_allclose(got, stats.norm.logpdf(x[:, None], means, stds), rtol=1e-5,
                               atol=1e-4)
    # Leading batch dims broadcast.
    got_b = io.gaussian_log_likelihoods(x.reshape(5, 10), means, stds)
    np.testing.assert_allclose(got_b.reshape(50, 4), got, rtol=1e-6)


def test_hazard_is_one_over_the_tasks_mean_block_length():
    for min_len, max_len, p in [(20, 50, 1 / 20), (1, 10, 0.3)]:
        task = SwitchingGaussianTask(block_p=p, min_block=min_len, max_block=max_len)
        np.testing.assert_allclose(io.hazard_from_block_lengths(min_len, max_len, p),
                                   task.hazard, rtol=1e-12)
        np.testing.assert_allclose(task.hazard, 1.0 / task.mean_block_length, rtol=1e-12)


@pytest.mark.parametrize("window", [1, 2, 5, 40])
def test_window_log_likelihood_matches_loop(window):
    rng = np.random.default_rng(window)
    x = rng.normal(0.5, 0.3, size=30).astype(np.float32)
    means, stds = np.array([0.2, 0.8]), np.array([0.2, 0.2])
    ll = stats.norm.logpdf(x[:, None].astype(np.float64), means, stds)
    want = np.stack([ll[max(0, t - window + 1):t + 1].sum(axis=0) for t in range(30)])
    got = io.window_log_likelihood(x, means, stds, window)
    assert got.shape == (30, 2)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    jitted = jax.jit(io.window_log_likelihood, static_argnums=3)(x, means, stds, window)
    np.testing.assert_allclose(jitted, got, rtol=1e-6, atol=1e-6)


def test_window_sum_rejects_bad_window():
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        io.window_sum(jnp.ones((4, 2)), 0)
    with pytest.raises(ValueError, match="window"):
        io.window_log_likelihood(jnp.ones(4), jnp.zeros(2), jnp.ones(2), -1)
