"""Bayesian ideal observer for the GBI toy task (Hummos et al. 2024, Sec. 3.1, Fig. S7).

The toy stream emits 1-D observations ``x_t ~ N(mu_c, sd_c^2)`` whose context
``c`` stays fixed within a block and switches between blocks. The ideal observer
treats the context as a hidden Markov chain with a constant switch probability
(the hazard ``h``) and runs the exact forward filter

    b_t(k) ∝ N(x_t; mu_k, sd_k) * sum_j T[j, k] b_{t-1}(j),
    T = (1 - h) I + h / (K - 1) (11^T - I).

What the GBI quantities should track (Hummos et al. 2024, Figs. 3F-H and S7):

* one-step ``-dL/dz_k`` at the max-entropy point  <->  ``log N(x_t; mu_k, sd_k)``
  up to a constant shared by all ``k`` (:func:`gaussian_log_likelihoods`, or
  :func:`window_log_likelihood` when the loss covers a window of observations);
* the online latent ``z_t``  <->  the filtered posterior ``b_t``
  (:func:`forward_filter` / :func:`switching_gaussian_filter`).

The task's block lengths are ``clip(Geometric(p), min_len, max_len)`` (support of
the geometric starting at 1), which is not memoryless; the constant-hazard chain
is the standard approximation with ``h = 1 / E[block length]``
(:func:`hazard_from_block_lengths`; the mean is
:func:`gbi_jax.tasks.switching_gaussian.mean_block_length`).

Everything is pure ``jax.numpy``: ``jit``- and ``vmap``-compatible (vmap over
sequences, hazards or context parameters). Only ``num_contexts`` and ``window``
must be static Python ints.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from gbi_jax.tasks.switching_gaussian import mean_block_length
from gbi_jax.validation import check_int, check_range

Array = jax.Array

__all__ = [
    "FilterResult",
    "gaussian_log_likelihoods",
    "switching_transition_matrix",
    "forward_filter",
    "switching_gaussian_filter",
    "hazard_from_block_lengths",
    "window_sum",
    "window_log_likelihood",
]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class FilterResult(NamedTuple):
    """Output of :func:`forward_filter` (a pytree: passes through jit/vmap).

    posterior:    ``[T, K]``, ``p(c_t = k | x_1..x_t)`` (the filtered belief ``b_t``).
    predictive:   ``[T, K]``, ``p(c_t = k | x_1..x_{t-1})``; row 0 is the initial
                  distribution.
    log_evidence: scalar, ``log p(x_1..x_T)`` in the units of the log-likelihoods
                  (nats when they are log densities).
    """

    posterior: Array
    predictive: Array
    log_evidence: Array


def gaussian_log_likelihoods(x: Array, means: Array, stds: Array) -> Array:
    """Log densities of every observation under every context.

    Args:
      x: observations, shape ``[T]`` (any leading shape ``[...]`` works).
      means: context means ``mu_k``, shape ``[K]``.
      stds: context standard deviations ``sd_k > 0``, shape ``[K]``.

    Returns:
      ``[T, K]`` (``[..., K]``) array of ``log N(x_t; mu_k, sd_k^2)`` in nats.
    """
    x = jnp.asarray(x)
    means = jnp.asarray(means)
    stds = jnp.asarray(stds)
    z = (x[..., None] - means) / stds
    return -0.5 * z * z - jnp.log(stds) - _LOG_SQRT_2PI


def switching_transition_matrix(num_contexts: int, hazard) -> Array:
    """Row-stochastic transition matrix of the switching context chain.

    ``T[j, k] = p(c_t = k | c_{t-1} = j)``: stay with probability ``1 - hazard``,
    otherwise switch to one of the other ``K - 1`` contexts uniformly.

    Args:
      num_contexts: K >= 2 (static Python int).
      hazard: switch probability per step in ``[0, 1]`` (may be a traced scalar).

    Returns:
      ``[K, K]`` matrix whose rows sum to 1.
    """
    k = check_int("num_contexts", num_contexts, 2)
    check_range("hazard", hazard, 0.0, 1.0)
    hazard = jnp.asarray(hazard, dtype=jnp.result_type(float))
    eye = jnp.eye(k, dtype=hazard.dtype)
    return (1.0 - hazard) * eye + hazard / (k - 1) * (1.0 - eye)


def forward_filter(log_lik: Array, transition: Array,
                   initial: Optional[Array] = None) -> FilterResult:
    """Exact HMM forward filter, in log space (stable for long sequences).

    Args:
      log_lik: ``[T, K]``, ``log p(x_t | c_t = k)`` (e.g. from
        :func:`gaussian_log_likelihoods`). Any additive constant shared by all
        ``k`` at a given ``t`` leaves the posteriors unchanged and shifts
        ``log_evidence`` by that constant.
      transition: ``[K, K]`` row-stochastic, ``T[j, k] = p(c_t = k | c_{t-1} = j)``.
        Zero entries are allowed (they become ``-inf`` in log space).
      initial: ``[K]`` prior ``p(c_1)``; ``None`` means uniform.

    Returns:
      :class:`FilterResult` with ``posterior`` and ``predictive`` of shape
      ``[T, K]`` and a scalar ``log_evidence``. If some ``x_t`` has zero
      likelihood under every context that has predictive mass, the result is NaN
      from that step on.

    Batch over sequences with ``jax.vmap(forward_filter, in_axes=(0, None, None))``.
    """
    log_lik = jnp.asarray(log_lik)
    if log_lik.ndim != 2:
        raise ValueError(
            f"log_lik must have shape [T, K]; got {tuple(log_lik.shape)}. "
            "Use jax.vmap for a batch of sequences.")
    num_contexts = log_lik.shape[-1]
    transition = jnp.asarray(transition)
    if transition.shape != (num_contexts, num_contexts):
        raise ValueError(
            f"transition must have shape [K, K] = {(num_contexts, num_contexts)} to match "
            f"log_lik, got {tuple(transition.shape)}.")
    dtype = jnp.result_type(log_lik.dtype, transition.dtype, float)
    if initial is None:
        log_initial = jnp.full((num_contexts,), -math.log(num_contexts), dtype)
    else:
        initial = jnp.asarray(initial, dtype)
        if initial.shape != (num_contexts,):
            raise ValueError(
                f"initial must have shape [K] = ({num_contexts},), got {tuple(initial.shape)}.")
        log_initial = jnp.log(initial)
    log_transition = jnp.log(transition.astype(dtype))

    def step(log_pred, ll_t):
        log_joint = log_pred + ll_t
        log_norm = jax.nn.logsumexp(log_joint)
        log_post = log_joint - log_norm
        # log p(c_{t+1} = k | x_1..t) = logsumexp_j [log b_t(j) + log T[j, k]].
        next_log_pred = jax.nn.logsumexp(log_post[:, None] + log_transition, axis=0)
        return next_log_pred, (jnp.exp(log_post), jnp.exp(log_pred), log_norm)

    _, (posterior, predictive, log_norms) = jax.lax.scan(
        step, log_initial, log_lik.astype(dtype))
    return FilterResult(posterior, predictive, jnp.sum(log_norms))


def switching_gaussian_filter(x: Array, means: Array, stds: Array, hazard,
                   initial: Optional[Array] = None) -> FilterResult:
    """Forward filter of a 1-D switching-Gaussian stream.

    Shorthand for ``forward_filter(gaussian_log_likelihoods(x, means, stds),
    switching_transition_matrix(K, hazard), initial)``.

    Args:
      x: ``[T]`` observations.
      means, stds: ``[K]`` context parameters.
      hazard: switch probability per step (see :func:`hazard_from_block_lengths`).
      initial: ``[K]`` prior on the first context, ``None`` = uniform.
    """
    means = jnp.asarray(means)
    log_lik = gaussian_log_likelihoods(x, means, stds)
    transition = switching_transition_matrix(means.shape[-1], hazard)
    return forward_filter(log_lik, transition, initial)


def hazard_from_block_lengths(min_len, max_len, p):
    """Constant hazard ``h = 1 / E[block length]`` matching the task's blocks.

    Arguments as in :func:`gbi_jax.tasks.switching_gaussian.mean_block_length`
    (``min_len``, ``max_len``, ``p``). The true clipped-geometric process
    has a duration-dependent hazard (no switch before ``min_len`` trials, a sure
    switch at ``max_len``); the constant hazard is the Markov approximation used
    by :func:`switching_transition_matrix`.
    """
    return 1.0 / mean_block_length(min_len, max_len, p)


def window_sum(values: Array, window: int) -> Array:
    """Sum of the last ``window`` entries along axis 0 (fewer at the start).

    Args:
      values: ``[T, ...]``.
      window: H >= 1 (static).

    Returns:
      ``[T, ...]`` with ``out[t] = sum(values[max(0, t - H + 1) : t + 1], axis=0)``.
    """
    window = check_int("window", window, 1)
    values = jnp.asarray(values)
    dims = (window,) + (1,) * (values.ndim - 1)
    padding = ((window - 1, 0),) + ((0, 0),) * (values.ndim - 1)
    return jax.lax.reduce_window(values, jnp.zeros((), values.dtype), jax.lax.add,
                                 dims, (1,) * values.ndim, padding)


def window_log_likelihood(x: Array, means: Array, stds: Array, window: int) -> Array:
    """Log-likelihood of the last ``window`` observations under each context.

    The ideal counterpart of a GBI loss summed over a window of H observations
    with one latent shared across the window (the online protocol of
    :func:`gbi_jax.inference.online`).

    Args:
      x: ``[T]`` observations.
      means, stds: ``[K]`` context parameters.
      window: H >= 1 (static).

    Returns:
      ``[T, K]``: ``sum_{s = max(0, t-H+1)}^{t} log N(x_s; mu_k, sd_k)``.
    """
    return window_sum(gaussian_log_likelihoods(x, means, stds), window)
