"""State-space analyses of trained RNNs: PCA, fixed points, stability, tuning, sparsity.

The analyses of Vafidis et al. 2025, Figs. 3-4 (the authors' ``analyze.py`` and
``sparsity.py``):

pca                         principal axes and explained-variance ratios of hidden states.
find_fixed_points           Sussillo & Barak: minimise ``q(h) = 1/2 ||F(h, u) - h||^2``
                            with Adam from many initial states at once (one ``lax.scan``).
unique_points               deduplicate fixed points (DBSCAN(eps, min_samples=1) labels, or
                            a greedy radius cover).
jacobians / jacobian_eigenvalues
                            linearisation of ``F(h) - h`` at the fixed points.
continuous_attractor_signature
                            "top-k eigenvalues of ``F(h) - h`` ≈ 0, the rest stable".
timescale_amplification     ``A = tau_net / tau`` with ``tau_net = dt / |ln|lambda + 1||``.
tuning_grid                 8x8 latent-grid response maps and per-unit x1/x2 correlations.
lifetime_sparseness, active_fraction
                            Vinje-Gallant sparseness and the fraction of active units.

``step_fn(params, h [H], u) -> h' [H]`` is the network's one-step map ``F`` for ONE
state, e.g. ``lambda p, h, u: relu(u @ p["wi"] + p["bi"] + h @ p["wr"] + p["br"])``;
functions here vmap it over states. ``params`` (any pytree) and the input ``u`` (any
pytree, held constant) are traced arguments, so one compiled program serves every
network with the same shapes: pass a module-level function or a method (stable identity)
as ``step_fn`` and the parameters of each network as ``params``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gbi_jax.analysis.metrics import pearson

Array = jax.Array
StepFn = Callable[[Any, Array, Any], Array]

__all__ = [
    "FixedPoints",
    "AttractorSignature",
    "TuningGrid",
    "pca",
    "pca_transform",
    "find_fixed_points",
    "unique_points",
    "jacobians",
    "jacobian_eigenvalues",
    "continuous_attractor_signature",
    "timescale_amplification",
    "tuning_grid",
    "lifetime_sparseness",
    "active_fraction",
]


# --------------------------------------------------------------------------
# PCA.
# --------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("k",))
def _pca(h, k):
    centred = h - jnp.mean(h, axis=0)
    _, sing, vt = jnp.linalg.svd(centred, full_matrices=False)
    var = sing ** 2
    components = vt[:k]
    # Deterministic signs: the largest-|loading| entry of every component is positive.
    pivot = jnp.take_along_axis(components, jnp.argmax(jnp.abs(components), axis=1)[:, None], 1)
    components = components * jnp.where(pivot < 0, -1.0, 1.0)
    return components, var[:k] / jnp.sum(var)


def pca(h: Array, k: int):
    """Principal components of hidden states.

    Args:
      h: ``[n, H]`` states (e.g. all time steps of all trials, concatenated).
      k: number of components (static, ``<= min(n, H)``).

    Returns:
      ``(components [k, H], explained_variance_ratio [k])``: orthonormal rows,
      ordered by variance; ratios are fractions of the TOTAL variance (all H
      directions), as in sklearn's ``PCA``. Each component's sign is fixed so its
      largest-magnitude loading is positive. Project with :func:`pca_transform`.
    """
    h = jnp.asarray(h, jnp.result_type(jnp.asarray(h).dtype, float))
    if h.ndim != 2 or not 1 <= k <= min(h.shape):
        raise ValueError(f"pca needs h [n, H] and 1 <= k <= min(n, H), got {h.shape}, k={k}.")
    return _pca(h, int(k))


def pca_transform(h: Array, components: Array, mean: Optional[Array] = None) -> Array:
    """Coordinates of ``h [n, H]`` along ``components [k, H]`` -> ``[n, k]``.

    ``mean`` (``[H]``) defaults to the mean of ``h``; pass the mean of the data the
    components were fitted on to project other states (e.g. fixed points) into the
    same frame.
    """
    h = jnp.asarray(h)
    mean = jnp.mean(h, axis=0) if mean is None else mean
    return (h - mean) @ jnp.asarray(components).T


# --------------------------------------------------------------------------
# Fixed points.
# --------------------------------------------------------------------------
class FixedPoints(NamedTuple):
    """Output of :func:`find_fixed_points` (``m`` = number of initial states).

    points:    ``[m, H]`` optimised states.
    q:         ``[m]`` final ``q(h) = 1/2 ||F(h, u) - h||^2`` (squared state units).
    converged: ``[m]`` bool, ``q < tol``.
    q_trace:   ``[steps // record_every, m]`` q every ``record_every`` steps (before the
               update), for checking convergence.
    """

    points: Array
    q: Array
    converged: Array
    q_trace: Array


def _speed(step_fn: StepFn, params, h: Array, u) -> Array:
    diff = step_fn(params, h, u) - h
    return 0.5 * jnp.sum(diff * diff)


@functools.partial(jax.jit, static_argnames=("step_fn", "optimizer", "steps", "record_every"))
def _find_fixed_points(step_fn, params, h0, u, lr, optimizer, steps, record_every):
    # Adam at a traced learning rate unless the caller passed an optimiser (then static).
    optimizer = optax.adam(lr) if optimizer is None else optimizer
    speeds = jax.vmap(lambda h: _speed(step_fn, params, h, u))

    def objective(h):
        # Per-state q's are independent and Adam is elementwise, so optimising their sum
        # runs an independent Adam on every state.
        return jnp.sum(speeds(h))

    def inner(carry, _):
        h, state = carry
        grads = jax.grad(objective)(h)
        updates, state = optimizer.update(grads, state, h)
        return (optax.apply_updates(h, updates), state), None

    def outer(carry, _):
        q = speeds(carry[0])
        carry, _ = jax.lax.scan(inner, carry, None, length=record_every)
        return carry, q

    (h, _), trace = jax.lax.scan(outer, (h0, optimizer.init(h0)), None,
                                 length=steps // record_every)
    return h, speeds(h), trace


def find_fixed_points(step_fn: StepFn, params, h0: Array, *, input, lr: float = 0.01,
                      steps: int = 10_000, tol: float = 1e-4, record_every: int = 100,
                      optimizer: Optional[optax.GradientTransformation] = None) -> FixedPoints:
    """Minimise the speed ``q(h) = 1/2 ||F(h, u) - h||^2`` from many initial states.

    The authors' setting: Adam lr 0.01, 10,000 iterations, 128 initial
    states = states visited in noise-free trials plus ``U[0, 6)`` noise, input held at
    ``[fixation = 1, f(0, 0)]``. All states are optimised together in one compiled
    ``lax.scan`` (independent Adam per state). The authors minimise
    ``MSE(F(h), h) = 2 q / H``; Adam is invariant to that rescaling (up to its eps).

    Constant-step Adam ends in a jitter of size ~``lr`` per coordinate around a
    minimum (at lr 0.01 typically ``q ~ 1e-6 .. 1e-5``), so ``q`` does not reach float32
    zero; ``tol`` (default 1e-4 in squared state units, i.e. ``||F(h) - h|| < 0.014``
    per step) flags points fixed to that precision. Pass a decaying ``optimizer`` for
    tighter fixed points.
    Slow points (local minima of q with q > 0) are kept; filter with ``converged``.

    Args:
      step_fn: ``(params, h [H], u) -> h' [H]`` one-step map for a single state. It is a
        static argument of the compiled program: keep its identity stable (a
        module-level function or a method), and pass what differs between networks
        through ``params``.
      params: the network's parameters (any pytree; traced, so networks with the same
        shapes share one compiled program).
      h0: ``[m, H]`` initial states.
      input: the constant network input ``u`` (any pytree; traced).
      lr: Adam learning rate (traced; ignored if ``optimizer`` is given).
      steps: number of updates (rounded down to a multiple of ``record_every``).
      tol: convergence threshold on ``q``.
      record_every: record q every this many steps in ``q_trace``.
      optimizer: optional optax transformation replacing ``optax.adam(lr)`` (e.g. a
        decaying schedule for tighter convergence); static, so reuse one object.

    Returns:
      :class:`FixedPoints`.
    """
    h0 = jnp.asarray(h0, jnp.result_type(jnp.asarray(h0).dtype, float))
    if h0.ndim != 2:
        raise ValueError(f"h0 must be [m, H] initial states, got shape {h0.shape}.")
    record_every = int(max(1, min(record_every, steps)))
    lr = jnp.asarray(lr, h0.dtype)
    points, q, trace = _find_fixed_points(step_fn, params, h0, input, lr, optimizer,
                                          int(steps), record_every)
    return FixedPoints(points, q, q < tol, trace)


def unique_points(points: Array, eps: float = 0.5, *, q: Optional[Array] = None,
                  method: str = "dbscan"):
    """Group (near-)identical fixed points and keep one representative per group.

    ``method="dbscan"`` (default, parity with the authors' ``DBSCAN(eps=0.5,
    min_samples=1)``): with ``min_samples=1`` every point is a core point, so DBSCAN's
    clusters are exactly the connected components of the graph linking points at
    Euclidean distance ``<= eps``; labels are numbered by each cluster's first point,
    as sklearn does. Chains merge: a densely sampled line or sheet of fixed points
    (a continuous attractor) may become ONE cluster.

    ``method="greedy"``: a radius cover. Points are visited in order of increasing
    ``q`` (or index order without ``q``); a point farther than ``eps`` from every
    representative so far becomes a new representative, otherwise it joins the
    nearest one. Groups have radius ``<= eps``, so a sheet of fixed points is kept as a
    set of representatives about ``eps`` apart (useful to sample the attractor).

    Runs on the host (NumPy, O(m^2) distances).

    Args:
      points: ``[m, H]`` fixed points (e.g. ``FixedPoints.points[converged]``).
      eps: linking / cover radius in state units.
      q: optional ``[m]`` speeds; the representative of a group is its lowest-q point
        (default: its first point).
      method: ``"dbscan"`` or ``"greedy"``.

    Returns:
      ``(unique [k, H], labels int [m])`` with ``unique[labels[i]]`` the
      representative of point ``i``.
    """
    pts = np.asarray(points, np.float64)
    m = pts.shape[0]
    if m == 0:
        return np.zeros((0,) + pts.shape[1:], pts.dtype), np.zeros(0, np.int64)
    dist = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    rank = np.arange(m) if q is None else np.asarray(q, np.float64)
    if method == "dbscan":
        labels = np.arange(m)
        adjacency = dist <= eps
        while True:  # propagate the minimum index through each component
            new = np.min(np.where(adjacency, labels[None, :], m), axis=1)
            if np.array_equal(new, labels):
                break
            labels = new
        _, labels = np.unique(labels, return_inverse=True)  # first point order
        labels = labels.reshape(-1)
        reps = [np.flatnonzero(labels == c)[np.argmin(rank[labels == c])]
                for c in range(labels.max() + 1)]
    elif method == "greedy":
        reps = []
        labels = np.empty(m, np.int64)
        for i in np.argsort(rank, kind="stable"):
            if reps:
                d = dist[i, reps]
                j = int(np.argmin(d))
                if d[j] <= eps:
                    labels[i] = j
                    continue
            labels[i] = len(reps)
            reps.append(i)
    else:
        raise ValueError(f"method must be 'dbscan' or 'greedy', got {method!r}.")
    return np.asarray(points)[np.asarray(reps)], labels


# --------------------------------------------------------------------------
# Linear stability.
# --------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("step_fn",))
def _jacobians(step_fn, params, h_star, u):
    eye = jnp.eye(h_star.shape[-1], dtype=h_star.dtype)
    return jax.vmap(lambda h: jax.jacfwd(lambda z: step_fn(params, z, u))(h) - eye)(h_star)


def jacobians(step_fn: StepFn, params, h_star: Array, input) -> Array:
    """Jacobians of ``F(h, u) - h`` at states ``h_star [k, H]`` -> ``[k, H, H]``.

    ``J[i, a, b] = d(F_a - h_a)/dh_b`` (forward mode, vmapped; jit-compiled, ``params``
    and ``input`` traced as in :func:`find_fixed_points`).
    """
    h_star = jnp.asarray(h_star, jnp.result_type(jnp.asarray(h_star).dtype, float))
    return _jacobians(step_fn, params, jnp.atleast_2d(h_star), input)


def jacobian_eigenvalues(step_fn: StepFn, params, h_star: Array, input) -> np.ndarray:
    """Eigenvalues of ``d(F(h, u) - h)/dh`` at each fixed point, sorted by real part.

    Eigenvalues ``lambda`` of ``F - id`` relate to those of the map by
    ``mu = lambda + 1``: ``lambda ≈ 0`` is a marginal (integrating) direction,
    ``|lambda + 1| < 1`` a stable one. Computed with ``numpy.linalg.eigvals`` on the host
    (general eigenproblems have no jit-able JAX CPU/GPU kernel).

    Args:
      step_fn: one-step map ``(params, h [H], u) -> [H]``.
      params: the network's parameters (traced).
      h_star: ``[k, H]`` fixed points (a single ``[H]`` is promoted).
      input: constant input ``u``.

    Returns:
      complex ``[k, H]`` NumPy array, each row sorted by DEcreasing real part (the
      slowest / least stable mode first).
    """
    jac = np.asarray(jacobians(step_fn, params, h_star, input), np.float64)
    eigs = np.linalg.eigvals(jac)
    order = np.argsort(-eigs.real, axis=-1, kind="stable")
    return np.take_along_axis(eigs, order, axis=-1)


class AttractorSignature(NamedTuple):
    """Output of :func:`continuous_attractor_signature` (leading dims = fixed points).

    is_attractor: bool: top-k ``|lambda| < tol`` and every other ``|lambda + 1| < 1``.
    marginal:     bool: top-k ``|lambda| < tol`` (the k-D continuous-attractor part).
    stable:       bool: the other eigenvalues lie inside the unit circle centred at -1.
    top:          ``[..., k]`` the k leading eigenvalues.
    max_other:    ``[...]`` largest ``|lambda + 1|`` among the rest (``|mu|`` of the map).
    """

    is_attractor: np.ndarray
    marginal: np.ndarray
    stable: np.ndarray
    top: np.ndarray
    max_other: np.ndarray


def continuous_attractor_signature(eigs, k: int = 2, tol: float = 0.05) -> AttractorSignature:
    """The k-D continuous-attractor test on eigenvalues of ``F(h) - h``.

    Signature (Vafidis et al. 2025, Fig. 3d): the top-k eigenvalues (largest real part) are ≈ 0
    (map multipliers ``|mu| ≈ 1``) and all others lie inside the unit circle centred
    at -1 (stable). Default ``tol = 0.05``: a mode with ``|lambda| < 0.05`` has time
    constant ``> ~20`` steps (:func:`timescale_amplification`), so it decays by less
    than ``1/e`` over the 20-step stimulus -- it integrates over the whole trial.

    Args:
      eigs: ``[..., H]`` eigenvalues sorted by decreasing real part
        (:func:`jacobian_eigenvalues`).
      k: attractor dimension (D = 2 latents -> 2).
      tol: bound on ``|lambda|`` for the top-k eigenvalues.

    Returns:
      :class:`AttractorSignature` (NumPy arrays).
    """
    eigs = np.asarray(eigs)
    top = eigs[..., :k]
    rest = eigs[..., k:]
    marginal = np.all(np.abs(top) < tol, axis=-1)
    max_other = (np.max(np.abs(rest + 1.0), axis=-1) if rest.shape[-1]
                 else np.zeros(eigs.shape[:-1]))
    stable = max_other < 1.0
    return AttractorSignature(marginal & stable, marginal, stable, top, max_other)


def timescale_amplification(eigs, dt: float = 1.0, tau: float = 1.0) -> Array:
    """Time-scale amplification ``A = tau_net / tau`` of modes with eigenvalues ``lambda``.

    With map multiplier ``mu = lambda + 1`` a mode decays as ``|mu|^(t / dt)``, i.e.
    with time constant ``tau_net = dt / |ln |mu||``; ``A = tau_net / tau`` compares it
    with the single-unit time constant ``tau``. The authors use dt = tau = 100 ms
    (so ``A = 1 / |ln |mu||`` in steps) on the top-two eigenvalues of each fixed point
    and histogram A over 0-145. ``|mu| = 1`` gives ``inf``.

    Args:
      eigs: eigenvalues ``lambda`` of ``F(h) - h`` (any shape; complex allowed).
      dt: time step (any unit); tau: unit time constant (same unit).

    Returns:
      ``A`` with the shape of ``eigs`` (dimensionless).
    """
    mu = jnp.abs(jnp.asarray(eigs) + 1.0)
    tau_net = dt / jnp.abs(jnp.log(mu))
    return tau_net / tau


# --------------------------------------------------------------------------
# Tuning and sparsity.
# --------------------------------------------------------------------------
class TuningGrid(NamedTuple):
    """Output of :func:`tuning_grid` (G = grid size, H = units).

    latents:  ``[G, G, 2]``: ``latents[i, j] = (values[i], values[j])``.
    maps:     ``[G, G, H]`` response of every unit; ``maps[i, j]`` at x1 = values[i],
              x2 = values[j] (``maps[..., u]`` is unit u's image, x1 along rows).
    corr_x1:  ``[H]`` Pearson correlation of the unit's marginal mean over x2
              (a function of x1) with x1; NaN for units constant along x1.
    corr_x2:  ``[H]`` the same with x2.
    """

    latents: Array
    maps: Array
    corr_x1: Array
    corr_x2: Array


def tuning_grid(final_state_fn: Callable[[Array], Array], *, num: int = 8, low: float = -0.5,
                high: float = 0.5) -> TuningGrid:
    """Response maps on a grid of latents and per-unit factor correlations.

    The authors run noise-free trials (constant input ``x*`` for the 20 stimulus
    steps) for x1, x2 each on 8 values in ``[-0.5, 0.5]`` and take the final hidden
    state; this helper builds the grid, calls ``final_state_fn`` once on all
    ``num^2`` latents, and computes, per unit, the Pearson correlation of its marginal
    mean activity with x1 (mean over x2) and with x2 (mean over x1).

    Args:
      final_state_fn: ``x [n, 2] -> h [n, H]``, e.g. a jitted noise-free rollout
        returning the state at the last stimulus step.
      num: grid values per axis (``linspace(low, high, num)``, endpoints included).
      low, high: grid range.

    Returns:
      :class:`TuningGrid`.
    """
    values = jnp.linspace(low, high, num)
    latents = jnp.stack(jnp.meshgrid(values, values, indexing="ij"), axis=-1)
    states = jnp.asarray(final_state_fn(latents.reshape(-1, 2)))
    maps = states.reshape(num, num, -1)
    along_x1 = jnp.mean(maps, axis=1)  # [G, H]
    along_x2 = jnp.mean(maps, axis=0)
    grid = jnp.broadcast_to(values[:, None], along_x1.shape)
    return TuningGrid(latents, maps, pearson(along_x1, grid, axis=0),
                      pearson(along_x2, grid, axis=0))


def lifetime_sparseness(r: Array, *, eps: float = 0.0) -> Array:
    """Vinje-Gallant lifetime sparseness of each unit across trials.

    ``S = [1 - (E r)^2 / E r^2] / (1 - 1/m)`` over the ``m`` trials (stimuli): 0 for a
    unit responding equally to everything, 1 for a unit responding to a single
    stimulus. Silent units (``E r^2 <= eps``) count as ``S = 1``, as in the authors'
    ``sparsity.py``. Meant for non-negative rates (ReLU units); for signed activities
    (LSTM ``h``) the formula still runs but loses its interpretation.

    Args:
      r: ``[m, U]`` responses (trials x units), e.g. hidden states at the last
        stimulus step of 1000 noise-free trials.
      eps: silence threshold on ``E r^2``.

    Returns:
      ``[U]`` sparseness in ``[0, 1]`` (fraction; the paper plots percent).
    """
    r = jnp.asarray(r, jnp.result_type(jnp.asarray(r).dtype, float))
    m = r.shape[0]
    mean = jnp.mean(r, axis=0)
    mean_sq = jnp.mean(r * r, axis=0)
    silent = mean_sq <= eps
    ratio = mean ** 2 / jnp.where(silent, 1.0, mean_sq)
    return jnp.where(silent, 1.0, (1.0 - ratio) / (1.0 - 1.0 / m))


def active_fraction(r: Array, *, threshold: float = 0.0, mode: str = "mean") -> Array:
    """Fraction of active units (``r > threshold``; the paper's "% active units (h > 0)").

    Args:
      r: ``[m, U]`` responses (trials x units).
      threshold: activity threshold.
      mode: ``"mean"`` -- fraction of units active on a trial, averaged over trials
        (= fraction of active entries); ``"ever"`` -- fraction of units active on at
        least one trial. The paper does not define it further; ``"mean"`` is the
        default.

    Returns:
      Scalar fraction in ``[0, 1]``.
    """
    active = jnp.asarray(r) > threshold
    if mode == "mean":
        return jnp.mean(active.astype(jnp.result_type(float)))
    if mode == "ever":
        return jnp.mean(jnp.any(active, axis=0).astype(jnp.result_type(float)))
    raise ValueError(f"mode must be 'mean' or 'ever', got {mode!r}.")
