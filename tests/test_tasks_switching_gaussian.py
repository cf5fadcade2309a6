"""Tests for gbi_jax.tasks.switching_gaussian: block statistics and field checks.

(Stream statistics are checked with the toy experiment in ``test_gbi_toy.py``.)
"""

import jax
import numpy as np
import pytest

from gbi_jax.tasks import SwitchingGaussianTask
from gbi_jax.tasks.switching_gaussian import mean_block_length


def test_mean_block_length_matches_exact_expectation():
    for min_len, max_len, p in [(20, 50, 1 / 20), (50, 100, 1 / 20), (1, 10, 0.3),
                                (5, 5, 0.2), (1, 1000, 1.0)]:
        n = np.arange(1, 20000)
        pmf = p * (1 - p) ** (n - 1)
        want = np.sum(np.clip(n, min_len, max_len) * pmf)
        np.testing.assert_allclose(mean_block_length(min_len, max_len, p), want, rtol=1e-12)
        task = SwitchingGaussianTask(block_p=p, min_block=min_len, max_block=max_len)
        np.testing.assert_allclose(task.mean_block_length, want, rtol=1e-12)
        np.testing.assert_allclose(task.hazard, 1 / want, rtol=1e-12)
    # No upper clip: plain geometric mean 1/p.
    np.testing.assert_allclose(mean_block_length(1, None, 0.05), 20.0, rtol=1e-12)


def test_mean_block_length_matches_sampling_and_traces():
    rng = np.random.default_rng(0)
    samples = np.clip(rng.geometric(1 / 20, size=400_000), 20, 50)
    np.testing.assert_allclose(mean_block_length(20, 50, 1 / 20), samples.mean(), rtol=2e-3)
    # Traced p (e.g. under vmap over hazards) gives the same value in float32.
    ps = np.array([0.05, 0.2], np.float32)
    got = jax.jit(jax.vmap(lambda p: mean_block_length(20, 50, p)))(ps)
    np.testing.assert_allclose(got, [mean_block_length(20, 50, float(p)) for p in ps], rtol=1e-5)


def test_mean_block_length_rejects_bad_input():
    with pytest.raises(ValueError, match="max_len"):
        mean_block_length(50, 20, 0.05)
    with pytest.raises(ValueError, match=r"p must be in \(0.0, 1.0\]"):
        mean_block_length(20, 50, 0.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(means=(0.5,), stds=(0.2,)), "SwitchingGaussianTask.means needs at least 2"),
    (dict(means=(0.2, 0.8), stds=(0.2,)), "SwitchingGaussianTask.stds must have the same"),
    (dict(stds=(0.2, -0.1)), r"SwitchingGaussianTask.stds must all be > 0"),
    (dict(block_p=1.5), r"SwitchingGaussianTask.block_p must be in \(0.0, 1.0\]"),
    (dict(min_block=0), "SwitchingGaussianTask.min_block must be an integer >= 1"),
    (dict(min_block=30, max_block=20), r"max_block must be >= min_block \(30\)"),
    (dict(contexts=(0, 5)), "SwitchingGaussianTask.contexts"),
])
def test_fields_are_checked_and_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SwitchingGaussianTask(**kwargs)
