"""Closed-form and ideal-observer references for the disentangling task.

The task (Vafidis et al. 2025): a latent ``x* ~ U[-1/2, 1/2]^D`` is fixed
for a trial, the network sees ``T`` noisy samples ``x* + eps_t`` with
``eps_t ~ N(0, sigma^2 I)`` iid over time and dimension, and ``N`` binary tasks
ask on which side of a hyperplane through the origin ``x*`` lies,
``y_i = 1[c_i . x* > 0]``. Everything the ideal observer needs is the sample mean
``m = (1/T) sum_t X_t ~ N(x*, s^2 I)`` with ``s = sigma / sqrt(T)`` (a sufficient
statistic), so the functions here take ``(sigma, num_samples)`` and never
simulate the individual samples.

What this module gives (numbers at ``T = 20``, ``sigma = 0.2``):

UNIFORM_VAR           ``1/12``, the variance of ``U[-1/2, 1/2]``: the r^2 normaliser.
r2_ceiling            Eq. 7, ``1 - sigma^2 / (T Var x*)`` -> 0.976 (0.977 with the
                      free-RT ``T + 1`` samples).
posterior_mean_r2     r^2 of the exact Bayes posterior mean (box-truncated Gaussian
                      posterior) -> 0.978; slightly above Eq. 7 because the prior
                      bound helps near the box edges.
bayes_accuracy_2d     Bayes-optimal decision accuracy for D = 2 by deterministic
                      quadrature -> 0.9515 (N = 2), 0.9603 (N = 24).
bayes_accuracy_mc     the same for any D by Monte Carlo (slightly below the exact value:
                      the posterior probability is itself estimated).
bayes_cross_entropy_2d  Bayes decision-step cross-entropy (nats) for D = 2.
bce_floor             the training-loss floor ``(21 ln 2 + CE_Bayes) / 22``.

Angles and normals follow the authors' tasks for D = 2: ``phi_i = (i + 1/2) pi / N``
(:func:`gbi_jax.tasks.evidence.line_angles`) and labels ``1[x2 > tan(phi_i) x1]``
(:func:`line_normals`).

All functions are ``jit``-compatible in ``sigma`` and ``num_samples`` (grid and
sample sizes are static Python ints).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri, xlogy

from gbi_jax.tasks.evidence import line_angles

Array = jax.Array

__all__ = [
    "UNIFORM_VAR",
    "r2_ceiling",
    "posterior_mean_r2",
    "line_normals",
    "bayes_accuracy_2d",
    "bayes_cross_entropy_2d",
    "bayes_accuracy_mc",
    "bce_floor",
]

UNIFORM_VAR = 1.0 / 12.0  # variance of U[-1/2, 1/2], the paper's r^2 normaliser
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# --------------------------------------------------------------------------
# r^2 references.
# --------------------------------------------------------------------------
def r2_ceiling(sigma, num_samples, latent_var: float = UNIFORM_VAR) -> Array:
    """Eq. 7 of the paper: the best r^2 a decoder of ``x*`` can reach after ``t`` samples.

    ``r^2(t) = 1 - sigma^2 / (t * Var[x*])``: the sample mean has error variance
    ``sigma^2 / t`` per dimension, and r^2 is normalised by the full prior variance
    (``1/12`` for ``U[-1/2, 1/2]``), so at ``sigma = 0.2`` this is ``1 - 0.48 / t``.

    Values: ``t = 20`` -> 0.976; the free-RT networks see the stimulus also at the
    decision step, so pass ``num_samples = T + 1`` (``Figures/Fig5a.py`` plots
    ``1 - 0.48 / (T + 1)``: T = 5, 10, 20, 40 -> 0.920, 0.956, 0.977, 0.988). The
    Fig. 5c noise grid at T = 20, sigma = 0.1, 0.2, 0.3, 0.4, 0.6 gives 0.994, 0.976,
    0.946, 0.904, 0.784.

    Treating the sample mean as the estimate ignores the bounded prior; the exact
    Bayes posterior mean does slightly better (:func:`posterior_mean_r2`).

    Args:
      sigma: input-noise standard deviation per step and dimension (latent units);
        scalar or array (broadcasts with ``num_samples``).
      num_samples: number of noisy samples ``t`` seen so far (>= 1).
      latent_var: prior variance of each latent coordinate (the r^2 normaliser).

    Returns:
      r^2 (dimensionless), broadcast shape of ``sigma`` and ``num_samples``. Plain
      arithmetic: Python floats give a Python float (float64), NumPy arrays a NumPy
      array, JAX arrays (also traced ones) a JAX array.
    """
    sigma, num_samples = (np.asarray(v, float) if isinstance(v, (list, tuple)) else v
                          for v in (sigma, num_samples))
    return 1.0 - sigma ** 2 / (num_samples * latent_var)


def _phi_diff(a: Array, b: Array) -> Array:
    """``Phi(b) - Phi(a)`` for ``a <= b``, accurate in both tails (no ``1 - 1``)."""
    upper = a > 0  # both in the upper tail: use Phi(-a) - Phi(-b)
    return jnp.where(upper, ndtr(-a) - ndtr(-b), ndtr(b) - ndtr(a))


def _std_normal_pdf(z: Array) -> Array:
    return _INV_SQRT_2PI * jnp.exp(-0.5 * z * z)


@functools.partial(jax.jit, static_argnames=("num_points",))
def posterior_mean_r2(sigma, num_samples, *, half_width: float = 0.5,
                      num_points: int = 4001) -> Array:
    """r^2 of the exact Bayes posterior mean ``E[x* | X_1..X_t]`` under the uniform prior.

    Per dimension the posterior is ``N(m, s^2)`` truncated to ``[-w, w]``
    (``s = sigma / sqrt(t)``, ``w = half_width``), so the Bayes MSE is the expected
    truncated-normal variance ``E_m[Var(x* | m)] = int Z(m) Var(x* | m) dm / (2w)``
    with ``Z(m) = Phi((w - m)/s) - Phi((-w - m)/s)``; this 1-D integral is done with
    the trapezoid rule on ``m in [-w - 10 s, w + 10 s]``. r^2 uses the full prior
    variance ``(2w)^2 / 12`` as normaliser (dimensions are independent, so the value
    is the same for every D).

    Reference (Monte Carlo): t = 5, 10, 20, 21, 40 at sigma = 0.2 ->
    0.920, 0.958, 0.978, 0.979, 0.989.

    Args:
      sigma: noise standard deviation per sample (latent units), scalar.
      num_samples: number of samples ``t``, scalar.
      half_width: the prior is ``U[-half_width, half_width]`` per dimension.
      num_points: trapezoid grid size (static).

    Returns:
      Scalar r^2.
    """
    dtype = jnp.result_type(float)
    s = jnp.asarray(sigma, dtype) / jnp.sqrt(jnp.asarray(num_samples, dtype))
    w = half_width
    m = jnp.linspace(-w - 10.0 * s, w + 10.0 * s, num_points, dtype=dtype)
    alpha = (-w - m) / s
    beta = (w - m) / s
    z = _phi_diff(alpha, beta)
    pa, pb = _std_normal_pdf(alpha), _std_normal_pdf(beta)
    # Z * Var of the truncated normal, written to stay finite where Z -> 0.
    z_var = s ** 2 * (z + alpha * pa - beta * pb - (pa - pb) ** 2 / jnp.maximum(z, 1e-30))
    z_var = jnp.maximum(z_var, 0.0)
    mse = jnp.trapezoid(z_var, m) / (2.0 * w)
    return 1.0 - mse / ((2.0 * w) ** 2 / 12.0)


# --------------------------------------------------------------------------
# Task geometry (the angles: gbi_jax.tasks.evidence.line_angles).
# --------------------------------------------------------------------------
def line_normals(num_tasks: int) -> np.ndarray:
    """Unit normals ``c_i`` ``[N, 2]`` with ``1[c_i . x > 0] == 1[x2 > tan(phi_i) x1]``.

    ``c_i = sign(cos phi_i) * (-sin phi_i, cos phi_i)``: the sign reproduces the
    authors' half-plane flip for ``phi > pi / 2``. Accuracies and
    cross-entropies do not depend on the orientation of a normal. Computed in float64.
    """
    phi = line_angles(num_tasks)
    sign = np.where(np.cos(phi) >= 0, 1.0, -1.0)
    return sign[:, None] * np.stack([-np.sin(phi), np.cos(phi)], axis=-1)


def _normals_from(num_tasks: Optional[int], normals) -> Array:
    if (num_tasks is None) == (normals is None):
        raise ValueError("Pass exactly one of num_tasks (evenly spaced D = 2 lines) or "
                         "normals ([N, D] hyperplane normals).")
    if normals is None:
        normals = line_normals(int(num_tasks))
    normals = jnp.asarray(normals, dtype=jnp.result_type(float))
    if normals.ndim != 2:
        raise ValueError(f"normals must have shape [N, D], got {normals.shape}.")
    return normals / jnp.linalg.norm(normals, axis=-1, keepdims=True)


# --------------------------------------------------------------------------
# Exact (quadrature) ideal observer for D = 2.
# --------------------------------------------------------------------------
def _line_integrals_2d(c: Array, s: Array, num_along: int, num_across: int,
                       num_inner: int, band: float):
    """Error and entropy integrals of the ideal observer for one line (box [-1/2, 1/2]^2).

    With prior density 1 on the box, the joint density of ``(m, y = 1)`` is
    ``g1(m) = int_box 1[c.x > 0] N(m; x, s^2 I) dx`` and of ``(m, y = 0)`` is
    ``g0(m)``; the Bayes decision picks the larger one, so
    ``P(error) = int min(g0, g1) dm`` and the Bayes cross-entropy is
    ``int [p log p - g0 log g0 - g1 log g1] dm`` with ``p = g0 + g1``.

    Flipping ``c`` or swapping the two coordinates maps the box onto itself, so we
    take ``c2 >= |c1|``; then the boundary ``x2 = k x1`` (``k = -c1/c2``, ``|k| <= 1``)
    stays inside the box for all ``x1`` and ``g1`` is a 1-D integral over ``x1`` of
    ``N(x1; m1, s^2) [Phi((1/2 - m2)/s) - Phi((k x1 - m2)/s)]`` (Gauss-Legendre on
    ``[m1 - 8s, m1 + 8s]`` intersected with the box).

    Both integrands vanish (faster than ``Phi(-band)``) farther than ``band * s``
    from the line segment inside the box, so the outer integral runs over that band in
    rotated coordinates (along / across the line) with the midpoint rule.
    """
    dtype = s.dtype
    c = jnp.where(jnp.abs(c[1]) >= jnp.abs(c[0]), c, c[::-1])
    c = c * jnp.sign(c[1])
    k = -c[0] / c[1]
    along = jnp.stack([c[1], -c[0]])  # unit vector along the line
    half_len = 0.5 / c[1] + band * s
    width = band * s
    a = (jnp.arange(num_along, dtype=dtype) + 0.5) / num_along * 2.0 - 1.0
    b = (jnp.arange(num_across, dtype=dtype) + 0.5) / num_across * 2.0 - 1.0
    a = a * half_len
    b = b * width
    cell = (2.0 * half_len / num_along) * (2.0 * width / num_across)
    m = a[:, None, None] * along + b[None, :, None] * c  # [A, B, 2]
    m1, m2 = m[..., 0], m[..., 1]

    nodes, weights = np.polynomial.legendre.leggauss(num_inner)
    nodes = jnp.asarray(nodes, dtype)
    weights = jnp.asarray(weights, dtype)
    lo = jnp.maximum(-0.5, m1 - 8.0 * s)
    hi = jnp.maximum(jnp.minimum(0.5, m1 + 8.0 * s), lo)
    half = 0.5 * (hi - lo)
    x1 = (lo + half)[..., None] + half[..., None] * nodes  # [A, B, Q]
    dens = _std_normal_pdf((x1 - m1[..., None]) / s) / s * (weights * half[..., None])
    t = (k * x1 - m2[..., None]) / s
    top = ((0.5 - m2) / s)[..., None]
    bottom = ((-0.5 - m2) / s)[..., None]
    # Phi(top) - Phi(t) and Phi(t) - Phi(bottom), each evaluated in the tail where it
    # is small (as in _phi_diff) but with only two ndtr calls per node.
    cdf_t, sf_t = ndtr(t), ndtr(-t)
    g1 = jnp.sum(dens * jnp.where(t > 0, sf_t - ndtr(-top), ndtr(top) - cdf_t), axis=-1)
    g0 = jnp.sum(dens * jnp.where(bottom > 0, ndtr(-bottom) - sf_t, cdf_t - ndtr(bottom)),
                 axis=-1)
    p = g0 + g1
    error = jnp.sum(jnp.minimum(g0, g1)) * cell
    entropy = jnp.sum(xlogy(p, p) - xlogy(g0, g0) - xlogy(g1, g1)) * cell
    return error, entropy


@functools.partial(jax.jit, static_argnames=("num_along", "num_across", "num_inner"))
def _ideal_observer_2d(normals, sigma, num_samples, num_along, num_across, num_inner,
                       band, half_width):
    dtype = normals.dtype
    # Rescale to the unit box: (half_width, s) is equivalent to (1/2, s / (2 half_width)).
    s = (jnp.asarray(sigma, dtype) / jnp.sqrt(jnp.asarray(num_samples, dtype))
         * (0.5 / half_width))
    return jax.lax.map(
        lambda c: _line_integrals_2d(c, s, num_along, num_across, num_inner, band), normals)


def _ideal_observer_2d_dedup(normals, sigma, num_samples, num_along, num_across, num_inner,
                             band, half_width):
    """``_ideal_observer_2d`` computed once per line class of the box's symmetry group.

    Swapping the coordinates, mirroring either axis or flipping the normal maps the
    box onto itself, so every line has the integrals of its canonical normal
    ``(min(|c1|, |c2|), max(|c1|, |c2|))`` (the 24 evenly spaced lines fall into 6
    classes). Needs concrete normals; traced ones take the plain path.
    """
    try:
        host = np.asarray(normals, dtype=np.float64)
    except jax.errors.TracerArrayConversionError:
        return _ideal_observer_2d(normals, sigma, num_samples, num_along, num_across,
                                  num_inner, band, half_width)
    canonical = np.sort(np.abs(host), axis=-1)
    classes, inverse = np.unique(np.round(canonical, 6), axis=0, return_inverse=True)
    try:
        scalars = (float(sigma), float(num_samples))
    except (TypeError, jax.errors.ConcretizationTypeError):
        scalars = None
    results = []
    for c in classes:
        # One compiled single-line program, reused for every class and every N; results
        # of concrete calls are memoised (accuracy and cross-entropy share one pass).
        key = None if scalars is None else (tuple(c), *scalars, num_along, num_across,
                                            num_inner, float(band), float(half_width),
                                            str(normals.dtype))
        if key is None or key not in _LINE_CACHE:
            value = _ideal_observer_2d(jnp.asarray(c[None], normals.dtype), sigma, num_samples,
                                       num_along, num_across, num_inner, band, half_width)
            if key is None:
                results.append(value)
                continue
            _LINE_CACHE[key] = value
        results.append(_LINE_CACHE[key])
    error = jnp.concatenate([r[0] for r in results])[inverse.reshape(-1)]
    entropy = jnp.concatenate([r[1] for r in results])[inverse.reshape(-1)]
    return error, entropy


_LINE_CACHE: dict = {}


def bayes_accuracy_2d(sigma, num_samples, num_tasks: Optional[int] = None, *,
                      normals=None, per_task: bool = False, half_width: float = 0.5,
                      num_along: int = 512, num_across: int = 256, num_inner: int = 48,
                      band: float = 10.0) -> Array:
    """Bayes-optimal decision accuracy for D = 2 by deterministic quadrature.

    The ideal observer knows the prior (uniform on the box), the noise and the lines;
    after ``T`` samples it holds the posterior ``p(x* | m) ∝ N(m; x*, s^2 I) 1[x* in box]``
    (``s = sigma / sqrt(T)``) and answers each task with its more probable label. Its
    accuracy on task ``i`` is ``1 - int min(g0_i(m), g1_i(m)) dm`` (see
    ``_line_integrals_2d``); the result is averaged over ``x*`` (uniform) and, unless
    ``per_task``, over the lines. Accurate to ~2e-5 with the default grids (the
    midpoint rule across the kink of ``min`` dominates). Cost: one compilation
    (a few seconds) and ~0.4 s per distinct line on one CPU core; lines related by
    the box's symmetries are computed once (the 24 evenly spaced lines are 6
    classes). Under ``jit`` (traced normals) every line is integrated.

    Values at T = 20, sigma = 0.2: 0.951 for N = 2, 0.960 for N = 24.
    For the N = 2 diagonals the optimal rule is ``sign(c . m)`` and the error has the
    closed form ``2 s / sqrt(pi) - s^2`` (triangular density of ``c . x*``), i.e.
    accuracy 0.95154.

    Args:
      sigma: noise std per sample and dimension (latent units), scalar.
      num_samples: number of samples ``T`` (use ``T + 1`` for free-RT evaluation).
      num_tasks: N evenly spaced lines ``phi_i = (i + 1/2) pi / N``; or pass
      normals: ``[N, 2]`` normals of arbitrary lines through the origin instead.
      per_task: return ``[N]`` accuracies instead of their mean.
      half_width: prior ``U[-half_width, half_width]^2``.
      num_along, num_across: outer midpoint grid (along / across each line; static).
      num_inner: Gauss-Legendre nodes of the inner integral (static).
      band: half-width of the integration band around each line, in units of ``s``.

    Returns:
      Mean accuracy in ``[0, 1]`` (scalar), or ``[N]`` if ``per_task``.
    """
    normals = _normals_from(num_tasks, normals)
    if normals.shape[-1] != 2:
        raise ValueError(f"bayes_accuracy_2d needs D = 2 normals, got {normals.shape}; "
                         "use bayes_accuracy_mc for D > 2.")
    error, _ = _ideal_observer_2d_dedup(normals, sigma, num_samples, num_along, num_across,
                                        num_inner, band, half_width)
    accuracy = 1.0 - error
    return accuracy if per_task else jnp.mean(accuracy)


def bayes_cross_entropy_2d(sigma, num_samples, num_tasks: Optional[int] = None, *,
                           normals=None, per_task: bool = False, half_width: float = 0.5,
                           num_along: int = 512, num_across: int = 256,
                           num_inner: int = 48, band: float = 10.0) -> Array:
    """Bayes cross-entropy (nats) of the decision-step outputs for D = 2.

    The best probabilistic output for task ``i`` is the posterior ``P(y_i = 1 | m)``;
    its expected binary cross-entropy against the true label is the expected
    posterior entropy ``E_m[H(P(y_i = 1 | m))]``, integrated like
    :func:`bayes_accuracy_2d` (same arguments). No network trained with BCE can go
    below it on average.

    Returns:
      Mean cross-entropy in nats (scalar), or ``[N]`` if ``per_task``.
    """
    normals = _normals_from(num_tasks, normals)
    if normals.shape[-1] != 2:
        raise ValueError(f"bayes_cross_entropy_2d needs D = 2 normals, got {normals.shape}.")
    _, entropy = _ideal_observer_2d_dedup(normals, sigma, num_samples, num_along,
                                          num_across, num_inner, band, half_width)
    return entropy if per_task else jnp.mean(entropy)


def bce_floor(sigma, num_samples: int = 20, num_tasks: Optional[int] = None, *,
              normals=None, num_steps: int = 22, num_decision_steps: int = 1,
              **quadrature) -> Array:
    """Lower bound on the training BCE of the fixed-RT networks (cross-entropy loss).

    The loss is the mean BCE over ``num_steps = 22`` steps x N outputs. On the
    ``num_steps - num_decision_steps = 21`` pre-decision steps the target is 0.5, and
    ``BCE(p, 1/2) >= ln 2`` (equality at ``p = 1/2``); on the decision step the best
    output is the posterior, costing :func:`bayes_cross_entropy_2d`. Hence

        floor = [(num_steps - 1) ln 2 + CE_Bayes(sigma, T, lines)] / num_steps.

    The first term alone is ``21 ln 2 / 22 = 0.6616``; with the decision step added the
    floor at T = 20, sigma = 0.2 is 0.6666 (N = 2; decision CE 0.1082 nats) and 0.6657
    (N = 24; decision CE 0.0897 nats).

    Args:
      sigma, num_samples, num_tasks, normals: as in :func:`bayes_cross_entropy_2d`.
      num_steps: steps per trial that enter the loss (22).
      num_decision_steps: steps with a real label (1).
      **quadrature: forwarded to :func:`bayes_cross_entropy_2d`.

    Returns:
      Scalar loss floor in nats.
    """
    ce = bayes_cross_entropy_2d(sigma, num_samples, num_tasks, normals=normals, **quadrature)
    pre = num_steps - num_decision_steps
    return (pre * math.log(2.0) + num_decision_steps * ce) / num_steps


# --------------------------------------------------------------------------
# Monte Carlo ideal observer for any D.
# --------------------------------------------------------------------------
def _truncated_normal(key, loc, scale, low, high, shape):
    """Samples of ``N(loc, scale^2)`` truncated to ``[low, high]`` by inverse CDF.

    The inverse CDF is evaluated in the lower tail (reflecting when the interval is
    in the upper tail) so float32 keeps relative precision; an interval with
    underflowing mass collapses onto its nearer end.
    """
    alpha = (low - loc) / scale
    beta = (high - loc) / scale
    flip = alpha > 0
    a = jnp.where(flip, -beta, alpha)
    b = jnp.where(flip, -alpha, beta)
    fa, fb = ndtr(a), ndtr(b)
    u = jax.random.uniform(key, shape, dtype=loc.dtype)
    z = ndtri(fa + u * (fb - fa))
    z = jnp.where(fb > fa, jnp.clip(z, a, b), b)
    z = jnp.where(flip, -z, z)
    return loc + scale * z


@functools.partial(jax.jit, static_argnames=("num_trials", "num_posterior", "chunk",
                                             "decision"))
def _bayes_accuracy_mc(key, normals, sigma, num_samples, num_trials, num_posterior, chunk,
                       decision, half_width):
    dtype = normals.dtype
    num_dims = normals.shape[-1]
    s = jnp.asarray(sigma, dtype) / jnp.sqrt(jnp.asarray(num_samples, dtype))
    num_chunks = -(-num_trials // chunk)

    def one_chunk(k):
        k_x, k_m, k_post = jax.random.split(k, 3)
        x = jax.random.uniform(k_x, (chunk, num_dims), dtype, -half_width, half_width)
        m = x + s * jax.random.normal(k_m, x.shape, dtype)
        label = x @ normals.T > 0  # [chunk, N]
        if decision == "flat":
            choice = m @ normals.T > 0
        else:
            post = _truncated_normal(k_post, m[:, None, :], s, -half_width, half_width,
                                     (chunk, num_posterior, num_dims))
            p_one = jnp.mean(post @ normals.T > 0, axis=1)  # [chunk, N]
            choice = p_one > 0.5
        return jnp.mean(choice == label, axis=0, dtype=dtype)  # [N]

    per_chunk = jax.lax.map(one_chunk, jax.random.split(key, num_chunks))
    return jnp.mean(per_chunk, axis=0)


def bayes_accuracy_mc(key, sigma, num_samples, num_tasks: Optional[int] = None, *,
                      normals=None, per_task: bool = False, num_trials: int = 200_000,
                      num_posterior: int = 256, chunk: int = 2000,
                      decision: str = "posterior", half_width: float = 0.5) -> Array:
    """Bayes-optimal decision accuracy for any D by Monte Carlo.

    Draws ``x* ~ U[-w, w]^D`` and the sufficient statistic ``m ~ N(x*, s^2 I)``
    (``s = sigma / sqrt(T)``; equivalent to averaging T noisy samples), then decides
    every task with the ideal observer and scores it against ``1[c_i . x* > 0]``.
    The posterior factorises over dimensions into normals truncated to the box, so
    ``P(c_i . x* > 0 | m)`` is estimated from ``num_posterior`` exact posterior
    samples (shared by all tasks) and the observer answers ``P > 1/2``. Using an
    estimated ``P`` makes the rule slightly sub-optimal near ``P = 1/2``, where a wrong
    choice costs little: the result is biased low by about ``0.045 / num_posterior``
    (measured at T = 20, sigma = 0.2, N = 2: 2.7e-3 at 16, 7e-4 at 64, 1.4e-4 at 256
    posterior samples). Monte Carlo standard error is about
    ``sqrt(0.05 / num_trials)`` per task.

    ``decision="flat"`` uses the flat-prior rule ``sign(c_i . m)`` of the paper's
    Theorem B.6 instead (optimal for the D = 2, N = 2 diagonals by symmetry, and a
    little worse than Bayes for lines that cross box edges obliquely).

    Args:
      key: PRNG key.
      sigma: noise std per sample and dimension; num_samples: T.
      num_tasks: N evenly spaced D = 2 lines; or
      normals: ``[N, D]`` hyperplane normals (any D; normalised internally).
      per_task: return ``[N]`` accuracies instead of their mean.
      num_trials: Monte Carlo trials (rounded up to a multiple of ``chunk``).
      num_posterior: posterior samples per trial for ``P(y_i = 1 | m)``.
      chunk: trials per vectorised chunk (bounds memory at
        ``chunk * num_posterior * (D + N)`` floats).
      decision: ``"posterior"`` (Bayes) or ``"flat"``.
      half_width: prior ``U[-half_width, half_width]^D``.

    Returns:
      Mean accuracy (scalar), or ``[N]`` if ``per_task``.
    """
    if decision not in ("posterior", "flat"):
        raise ValueError(f"decision must be 'posterior' or 'flat', got {decision!r}.")
    normals = _normals_from(num_tasks, normals)
    chunk = int(min(chunk, num_trials))
    accuracy = _bayes_accuracy_mc(key, normals, sigma, num_samples, int(num_trials),
                                  int(num_posterior), chunk, decision, half_width)
    return accuracy if per_task else jnp.mean(accuracy)
