"""Evaluation metrics: correlation, accuracy, AUROC, calibration.

Pure ``jax.numpy`` (``jit``/``vmap``-compatible, static shapes only). Inputs
may be NumPy or JAX arrays; results are JAX scalars or arrays (the temperature
fit returns a Python float).

Calibration: :func:`reliability_bins`, :func:`expected_calibration_error` and
:func:`fit_temperature` (the ``alpha`` of a softmax posterior ``softmax(s / alpha)``
that minimises the NLL of held-out labels).

Why :func:`centered` exists: one-step GBI scores ``-dL/dz_k`` equal the
log-likelihoods ``log p(x | z = e_k)`` only up to a constant shared by all
tasks ``k`` (Hummos et al. 2024, Eq. 7), so compare them with ideal-observer
log-likelihoods after subtracting the mean over the task axis from both.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gbi_jax.validation import check_int

Array = jax.Array

__all__ = [
    "ReliabilityBins",
    "pearson",
    "accuracy",
    "auroc",
    "reliability_bins",
    "expected_calibration_error",
    "fit_temperature",
    "centered",
]


def pearson(a: Array, b: Array, axis=None) -> Array:
    """Pearson correlation coefficient between ``a`` and ``b``.

    Args:
      a, b: arrays of the same shape.
      axis: axis (or tuple of axes) over which to correlate; ``None`` flattens
        everything into one pair of samples (the result is a scalar).

    Returns:
      Correlation in ``[-1, 1]``; the shape is ``a.shape`` without ``axis``.
      NaN where either input is constant (zero variance).
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"pearson needs equal shapes, got {a.shape} and {b.shape}.")
    dtype = jnp.result_type(a.dtype, b.dtype, float)
    a = a.astype(dtype)
    b = b.astype(dtype)
    da = a - jnp.mean(a, axis=axis, keepdims=True)
    db = b - jnp.mean(b, axis=axis, keepdims=True)
    cov = jnp.sum(da * db, axis=axis)
    return cov / jnp.sqrt(jnp.sum(da * da, axis=axis) * jnp.sum(db * db, axis=axis))


def accuracy(pred: Array, labels: Array) -> Array:
    """Fraction of correct predictions.

    Args:
      pred: integer predictions ``[N]`` (any shape equal to ``labels``), or scores /
        logits ``[N, C]`` with one more trailing axis than ``labels`` (the argmax
        over that axis is the prediction).
      labels: integer labels ``[N]``.

    Returns:
      Scalar accuracy in ``[0, 1]`` (mean over all entries).
    """
    pred = jnp.asarray(pred)
    labels = jnp.asarray(labels)
    if pred.ndim == labels.ndim + 1:
        pred = jnp.argmax(pred, axis=-1)
    if pred.shape != labels.shape:
        raise ValueError(
            f"accuracy needs predictions of shape {labels.shape} (or scores of shape "
            f"{labels.shape + ('C',)}), got {pred.shape}.")
    return jnp.mean((pred == labels).astype(jnp.result_type(float)))


def auroc(scores_in: Array, scores_out: Array) -> Array:
    """Area under the ROC curve for separating OOD from in-distribution samples.

    Orientation: a **higher score means "more out-of-distribution"**. The AUROC
    is the exact Mann-Whitney statistic

        P(s_out > s_in) + 0.5 * P(s_out == s_in)

    over all ``N_in * N_out`` pairs (ties count 1/2), computed in
    ``O((N_in + N_out) log N_in)`` with a sort, without forming the pairs. 1 means
    every OOD sample scores above every in-distribution one, 0.5 is chance, and a
    score oriented the wrong way gives ``1 - AUROC``. NaN scores are not supported.

    Args:
      scores_in: ``[N_in]`` scores of in-distribution samples (any shape; flattened).
      scores_out: ``[N_out]`` scores of out-of-distribution samples.

    Returns:
      Scalar AUROC in ``[0, 1]``.
    """
    scores_in = jnp.ravel(jnp.asarray(scores_in))
    scores_out = jnp.ravel(jnp.asarray(scores_out))
    if scores_in.size == 0 or scores_out.size == 0:
        raise ValueError(
            f"auroc needs at least one score of each kind, got {scores_in.size} "
            f"in-distribution and {scores_out.size} out-of-distribution scores.")
    dtype = jnp.result_type(scores_in.dtype, scores_out.dtype, float)
    return _auroc(scores_in.astype(dtype), scores_out.astype(dtype))


@jax.jit
def _auroc(scores_in: Array, scores_out: Array) -> Array:
    # One compiled program per input shape (eager dispatch would compile each op).
    sorted_in = jnp.sort(scores_in)
    below = jnp.searchsorted(sorted_in, scores_out, side="left")      # s_in < s_out
    below_or_tie = jnp.searchsorted(sorted_in, scores_out, side="right")  # s_in <= s_out
    # Per OOD sample: fraction of in-distribution samples it beats (ties 1/2);
    # averaging fractions (not summing counts) avoids overflow for big N.
    dtype = scores_in.dtype
    wins = (below.astype(dtype) + below_or_tie.astype(dtype)) * 0.5 / scores_in.size
    return jnp.mean(wins)


class ReliabilityBins(NamedTuple):
    """Equal-width confidence bins on ``[0, 1]`` (a reliability diagram).

    edges:           ``[B + 1]`` bin edges; bin ``b`` is ``[edges[b], edges[b+1])``,
                     the last bin also holds confidence 1.
    count:           ``[B]`` number of samples per bin.
    mean_confidence: ``[B]`` mean confidence in each bin (0 where ``count == 0``).
    accuracy:        ``[B]`` fraction correct in each bin (0 where ``count == 0``).
    """

    edges: Array
    count: Array
    mean_confidence: Array
    accuracy: Array


def reliability_bins(confidence: Array, correct: Array, num_bins: int = 10) -> ReliabilityBins:
    """Bin predictions by confidence (see :class:`ReliabilityBins`).

    Args:
      confidence: ``[N]`` confidence of each prediction in ``[0, 1]`` (e.g. the max
        posterior probability). Values outside are clipped into the end bins.
      correct: ``[N]`` bool (or 0/1) whether each prediction was right.
      num_bins: B >= 1 (static).
    """
    num_bins = check_int("num_bins", num_bins, 1)
    confidence = jnp.ravel(jnp.asarray(confidence))
    correct = jnp.ravel(jnp.asarray(correct))
    if confidence.shape != correct.shape:
        raise ValueError(
            f"confidence and correct need the same number of entries, got "
            f"{confidence.size} and {correct.size}.")
    dtype = jnp.result_type(confidence.dtype, float)
    return _reliability_bins(confidence.astype(dtype), correct.astype(dtype), num_bins)


@functools.partial(jax.jit, static_argnums=2)
def _reliability_bins(confidence: Array, correct: Array, num_bins: int) -> ReliabilityBins:
    index = jnp.clip(jnp.floor(confidence * num_bins).astype(jnp.int32), 0, num_bins - 1)
    count = jax.ops.segment_sum(jnp.ones_like(confidence), index, num_segments=num_bins)
    sum_conf = jax.ops.segment_sum(confidence, index, num_segments=num_bins)
    sum_correct = jax.ops.segment_sum(correct, index, num_segments=num_bins)
    safe = jnp.maximum(count, 1.0)
    return ReliabilityBins(
        edges=jnp.linspace(0.0, 1.0, num_bins + 1, dtype=confidence.dtype),
        count=count,
        mean_confidence=sum_conf / safe,
        accuracy=sum_correct / safe,
    )


def expected_calibration_error(confidence: Array, correct: Array, num_bins: int = 10) -> Array:
    """Expected calibration error with equal-width bins.

    ``ECE = sum_b (n_b / N) * |accuracy_b - mean_confidence_b|``; 0 for a
    perfectly calibrated predictor (up to binning), at most 1.

    Args: as in :func:`reliability_bins`.

    Returns:
      Scalar ECE in ``[0, 1]``.
    """
    bins = reliability_bins(confidence, correct, num_bins)
    total = jnp.maximum(jnp.sum(bins.count), 1.0)
    return jnp.sum(bins.count * jnp.abs(bins.accuracy - bins.mean_confidence)) / total


def fit_temperature(scores: Array, labels: Array) -> float:
    """The temperature ``alpha`` minimising the NLL of ``softmax(scores / alpha)``.

    Searched on a log-spaced grid, ``log alpha`` in ``[-6, 10]`` in steps of 0.1, then
    refined to steps of 0.005 around the best grid point; one compiled program
    evaluates all candidates.

    Args:
      scores: ``[N, K]`` scores or logits (e.g. one-step GBI scores ``-dL/dz``).
      labels: ``[N]`` integer labels in ``[0, K)``.

    Returns:
      ``alpha > 0`` as a Python float (``e^-6 .. e^10.1``).
    """
    s = jnp.asarray(scores, jnp.float32)
    y = jnp.asarray(labels)
    if s.ndim != 2 or y.shape != s.shape[:1]:
        raise ValueError(f"fit_temperature needs scores [N, K] and labels [N], got "
                         f"{s.shape} and {y.shape}.")

    @jax.jit
    def nll(log_alpha):
        logp = jax.nn.log_softmax(s / jnp.exp(log_alpha)[:, None, None], -1)
        return -jnp.mean(jnp.take_along_axis(logp, y[None, :, None], -1)[..., 0], -1)

    grid = jnp.linspace(-6.0, 10.0, 161)
    best = float(grid[int(jnp.argmin(nll(grid)))])
    fine = jnp.linspace(best - 0.1, best + 0.1, 41)
    return float(np.exp(float(fine[int(jnp.argmin(nll(fine)))])))


def centered(scores: Array, axis: int = -1) -> Array:
    """Subtract the mean over the task axis: ``scores - mean(scores, axis)``.

    One-step GBI scores equal log-likelihoods only up to a constant shared by all
    tasks; centring both removes that constant before comparing them (e.g. with
    :func:`pearson`).

    Args:
      scores: ``[..., K]`` (tasks on ``axis``).
      axis: the task axis.

    Returns:
      Same shape as ``scores``, with zero mean along ``axis``.
    """
    scores = jnp.asarray(scores)
    return scores - jnp.mean(scores, axis=axis, keepdims=True)
