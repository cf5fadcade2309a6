"""Linear decoding of the latent and its out-of-distribution generalisation.

The main metric of the disentangling paper (Vafidis et al. 2025, Figs. 1-3): fit a
linear decoder ``x_hat = h W + b`` from decision-step hidden states ``h`` to the
true latent ``x*``, train it on all orthants of latent space but one and test it
on the held-out one; score with r^2 normalised by the **full prior variance 1/12**
(not the held-out orthant's 1/48). A network whose code is linear in ``x*``
generalises (OOD r^2 ≈ ID r^2); a code that is linear only within each orthant
does not.

Data layout
-----------
Every function takes hidden states and latents row by row:

* ``h [n, H]`` -- hidden state at the decision step (float, network units), one
  row per trial;
* ``x [n, D]`` -- that trial's true latent ``x*`` (not the noisy sample mean), in
  ``[-1/2, 1/2]^D``.

Orthant membership is read from the signs of ``x`` (:func:`orthant_index`), so
trials may come in any order and any mix of orthants -- e.g. per-orthant batches
simply concatenated. Two ways to supply test data:

1. **pooled**: only ``h, x``; OOD trains on the rows outside the held-out orthant
   and tests on the rows inside it (ID: a random ``test_fraction`` of the held-out
   orthant's rows is the test set, all other rows train).
2. **separate**: also ``h_test, x_test``; training always uses ``h, x`` (minus the
   held-out orthant for OOD) and testing uses the rows of ``h_test, x_test`` in the
   held-out orthant. ID and OOD then share the same test rows. This is the
   authors' protocol: a training stream from the allowed orthants and 640 fresh test
   trials from the held-out one.

For :func:`cross_validate` the arrays may carry a leading fit axis
(``h [F, n, H]`` etc.) so that every fit sees freshly generated trials (the authors
re-draw data per fit); without it, fits differ only through the key (Adam's init and
minibatches, ``train_fraction`` subsets, the pooled ID split).

Orthants are numbered by :func:`gbi_jax.tasks.evidence.orthant_signs` (the authors'
evaluation tasks): for D = 2 the quadrants 1 = (+,+), 2 = (-,+), 3 = (-,-), 4 = (+,-)
become indices 0..3; for D > 2 the order of ``itertools.product([-, +], repeat=D)``
(first coordinate most significant). Coordinates equal to 0 count as positive.

Everything is ``jit``/``vmap``-compatible; methods, step counts and sizes are static.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gbi_jax.analysis.theory import UNIFORM_VAR
from gbi_jax.tasks.evidence import orthant_index, orthant_signs, resolve_orthant_order
from gbi_jax.validation import check_choice, check_int, check_positive

Array = jax.Array

__all__ = [
    "DECODER_STEPS",
    "CrossValidation",
    "halfspace_orthants",
    "sample_in_orthants",
    "r2",
    "fit_linear_decoder",
    "predict",
    "decoder_steps",
    "ood_r2",
    "id_r2",
    "cross_validate",
    "cross_validated_r2",
    "median_iqr",
    "decoder_angles",
    "random_angle_baseline",
]

# The authors' decoder Adam steps by number of tasks N (their generalize.py):
# N <= 3 -> 3000, N <= 6 -> 2000, else 1000 (N = 2, 3, 6, 12, 24: 3000, 3000, 2000, 1000, 1000).
DECODER_STEPS = (3000, 2000, 1000)

# Eigenvalues of the hidden-state covariance below this fraction of the largest are
# treated as zero by the closed-form fit (float32 noise level of H^T H).
_RCOND = 1e-6


# --------------------------------------------------------------------------
# Orthants (numbering: gbi_jax.tasks.evidence.orthant_signs).
# --------------------------------------------------------------------------
def halfspace_orthants(num_dims: int, dim: int, order: str = "auto") -> np.ndarray:
    """Bool ``[2^D]``: the orthants with ``x_dim > 0`` (the authors' ``split_var`` hold-out).

    Pass it (or a stack of such masks) as ``heldout`` / ``folds`` to hold out a
    half-space instead of one orthant.
    """
    return orthant_signs(num_dims, order)[:, dim] > 0


def sample_in_orthants(key, orthants: Array, num_dims: int, *, half_width: float = 0.5,
                       order: str = "auto", dtype=jnp.float32) -> Array:
    """Latents uniform inside given orthants: ``x = U[0, w]^D * signs[orthant]``.

    This is how the authors' ``DenoiseQuads`` draws evaluation latents.

    Args:
      key: PRNG key.
      orthants: int ``[n]`` orthant of each trial (numbering of :func:`orthant_signs`).
      num_dims: D.
      half_width: ``w``; the prior box is ``[-w, w]^D``.

    Returns:
      ``[n, D]`` latents.
    """
    orthants = jnp.asarray(orthants)
    signs = jnp.asarray(orthant_signs(num_dims, order), dtype)[orthants]
    return jax.random.uniform(key, signs.shape, dtype, 0.0, half_width) * signs


def _heldout_mask(heldout, num_orthants: int) -> Array:
    """int orthant (scalar) or bool ``[O]`` mask -> bool ``[O]``."""
    heldout = jnp.asarray(heldout)
    if heldout.ndim == 0:
        return jnp.arange(num_orthants) == heldout
    if heldout.shape != (num_orthants,):
        raise ValueError(f"heldout must be an orthant index or a bool mask of shape "
                         f"[{num_orthants}], got shape {heldout.shape}.")
    return heldout.astype(bool)


# --------------------------------------------------------------------------
# Score.
# --------------------------------------------------------------------------
def r2(y_true: Array, y_pred: Array, *, normaliser=UNIFORM_VAR, weights: Optional[Array] = None,
       per_dim: bool = False) -> Array:
    """Coefficient of determination with a fixed variance normaliser.

    ``r^2_d = 1 - MSE_d / normaliser_d``, averaged over the D latent dimensions. The
    paper's score uses the **full-prior variance** ``1/12`` of ``U[-1/2, 1/2]`` for
    every test set (the authors estimate it from 1e5 samples; we use the exact
    value), so a perfect orthant-mean predictor does not score 1 and the values are
    comparable with the Eq. 7 ceiling (:func:`gbi_jax.analysis.theory.r2_ceiling`).
    ``normaliser=None`` uses the (weighted) empirical variance of ``y_true`` per
    dimension -- the textbook r^2, which on a single orthant (variance 1/48) reads
    far lower (the T = 20 ceiling drops from 0.976 to ~0.90).

    Args:
      y_true, y_pred: ``[n, D]`` (a 1-D ``[n]`` is treated as D = 1).
      normaliser: scalar, ``[D]``, or ``None`` (empirical variance).
      weights: optional ``[n]`` non-negative row weights (e.g. a 0/1 test mask).
      per_dim: return ``[D]`` instead of the mean over dimensions.

    Returns:
      Scalar r^2 (``<= 1``, can be negative), or ``[D]``. NaN if all weights are 0.
    """
    y_true = jnp.asarray(y_true)
    y_pred = jnp.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"r2 needs equal shapes, got {y_true.shape} and {y_pred.shape}.")
    if y_true.ndim == 1:
        y_true, y_pred = y_true[:, None], y_pred[:, None]
    dtype = jnp.result_type(y_true.dtype, y_pred.dtype, float)
    if weights is None:
        weights = jnp.ones(y_true.shape[0], dtype)
    weights = jnp.asarray(weights, dtype)
    if normaliser is not None:
        normaliser = jnp.asarray(normaliser, dtype)
    return _r2(y_true.astype(dtype), y_pred.astype(dtype), normaliser, weights, per_dim)


@functools.partial(jax.jit, static_argnames=("per_dim",))
def _r2(y_true, y_pred, normaliser, weights, per_dim):
    total = jnp.sum(weights)
    mse = weights @ (y_true - y_pred) ** 2 / total
    if normaliser is None:
        mean = weights @ y_true / total
        normaliser = weights @ (y_true - mean) ** 2 / total
    score = 1.0 - mse / normaliser
    return score if per_dim else jnp.mean(score)


# --------------------------------------------------------------------------
# Decoder fits.
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _FitConfig:
    """Static part of a decoder fit (l2 and lr are traced, so changing them does not
    recompile)."""

    method: str = "ridge"
    steps: int = 1000
    batch_size: int = 16

    def __post_init__(self):
        check_choice("method", self.method, ("ridge", "adam"))
        if self.method == "adam":
            check_int("steps", self.steps, 1)
            check_int("batch_size", self.batch_size, 1)


def _fit_config(method, l2, steps, lr, batch_size, active_steps=None):
    check_positive("l2", l2, allow_zero=True)
    cfg = _FitConfig(method, int(steps), int(batch_size))
    active = steps if active_steps is None else active_steps
    return cfg, {"l2": jnp.asarray(l2, jnp.float32), "lr": jnp.asarray(lr, jnp.float32),
                 "active_steps": jnp.asarray(active, jnp.int32)}


def _fit_ridge(h, y, w, l2):
    total = jnp.sum(w)
    mean_h = w @ h / total
    mean_y = w @ y / total
    hc = h - mean_h
    cov = (hc * w[:, None]).T @ hc / total
    cross = (hc * w[:, None]).T @ (y - mean_y) / total
    evals, evecs = jnp.linalg.eigh(cov)
    evals = jnp.maximum(evals, 0.0)
    ridge = l2 * jnp.sum(evals) / h.shape[-1]
    keep = evals > _RCOND * jnp.max(evals)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, evals + ridge, 1.0), 0.0)
    weight = evecs @ (inv[:, None] * (evecs.T @ cross))
    return weight, mean_y - mean_h @ weight


def _fit_adam(h, y, w, key, lr, active_steps, cfg: _FitConfig):
    num_hidden, num_dims = h.shape[-1], y.shape[-1]
    k_init, k_rows = jax.random.split(key)
    # Few random call sites on purpose: each one adds ~0.5 s of XLA compile time on CPU.
    bound = 1.0 / np.sqrt(num_hidden)  # torch nn.Linear default init
    init = jax.random.uniform(k_init, (num_hidden + 1, num_dims), h.dtype, -bound, bound)
    params = (init[:-1], init[-1])
    # All minibatches up front: rows drawn with replacement, P(row) ∝ w (inverse CDF;
    # zero-weight rows are never drawn).
    cdf = jnp.cumsum(w)
    u = jax.random.uniform(k_rows, (cfg.steps, cfg.batch_size), h.dtype) * cdf[-1]
    rows = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), h.shape[0] - 1)
    optimizer = optax.adam(lr)

    def loss_fn(params, hb, yb):
        weight, bias = params
        return jnp.mean((hb @ weight + bias - yb) ** 2)  # torch MSELoss (mean)

    def step(carry, inputs):
        i, idx = inputs
        params, opt_state = carry
        grads = jax.grad(loss_fn)(params, h[idx], y[idx])
        updates, new_state = optimizer.update(grads, opt_state, params)
        new = (optax.apply_updates(params, updates), new_state)
        # Steps past active_steps are no-ops (one compiled loop for several step counts).
        keep = i < active_steps
        return jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, carry), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)),
                                  (jnp.arange(cfg.steps), rows))
    return params


def _fit(h, y, w, key, hyper, cfg: _FitConfig):
    if cfg.method == "ridge":
        return _fit_ridge(h, y, w, hyper["l2"].astype(h.dtype))
    return _fit_adam(h, y, w, key, hyper["lr"].astype(h.dtype), hyper["active_steps"], cfg)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _fit_jit(h, y, w, key, hyper, cfg):
    return _fit(h, y, w, key, hyper, cfg)


def _as_float(*arrays):
    dtype = jnp.result_type(*[jnp.asarray(a).dtype for a in arrays], float)
    return [jnp.asarray(a, dtype) for a in arrays]


def _key(key):
    return jax.random.PRNGKey(0) if key is None else key


def fit_linear_decoder(h: Array, y: Array, *, method: str = "ridge", l2: float = 1e-4,
                       steps: int = 1000, lr: float = 3e-3, batch_size: int = 16,
                       key=None, weights: Optional[Array] = None, active_steps=None):
    """Fit ``y ≈ h W + b`` (a ``Linear(H -> D)`` with bias).

    ``method="ridge"`` (default, fast, deterministic): closed form minimising
    ``mean_w ||y - h W - b||^2 + lam ||W||^2`` with ``lam = l2 * mean eigenvalue of the
    (weighted) covariance of h`` -- ``l2`` is relative, so the fit does not depend on
    the scale of the hidden units; the bias is not penalised. Directions of ``h``
    with covariance eigenvalue below 1e-6 of the largest (dead units, float32 noise)
    are dropped, so ``l2 = 0`` gives the minimum-norm least-squares fit.

    ``method="adam"`` (parity with the authors' code): torch-default
    init ``U(+-1/sqrt(H))``, ``steps`` Adam updates at ``lr`` on the MSE of
    minibatches of ``batch_size`` rows drawn with replacement (probability
    proportional to ``weights``). The authors draw fresh trials every step; pass
    ``n >= steps * batch_size`` rows to match that, fewer rows are reused. Their step
    counts per N are :func:`decoder_steps`. The closed form reads slightly higher than
    finite Adam.

    Args:
      h: ``[n, H]`` hidden states.
      y: ``[n, D]`` targets (latents).
      method: ``"ridge"`` or ``"adam"`` (static).
      l2: relative ridge strength (ridge only).
      steps, lr, batch_size: Adam settings (static ``steps``, ``batch_size``).
      key: PRNG key for Adam (init + minibatches); ``None`` means ``PRNGKey(0)``.
        Ridge ignores it.
      weights: optional ``[n]`` non-negative row weights; 0 excludes a row (used for
        static-shape train masks).
      active_steps: optional (traceable) int ``<= steps``: Adam updates after this many
        are no-ops, so fits with different step counts (e.g. the authors' per-N
        schedule) share one compiled loop of ``steps``. Default: all ``steps``.

    Returns:
      ``(W [H, D], b [D])``; predictions are ``h @ W + b`` (:func:`predict`).
    """
    h, y = _as_float(h, y)
    if y.ndim == 1:
        y = y[:, None]
    if h.ndim != 2 or y.shape[0] != h.shape[0]:
        raise ValueError(f"fit_linear_decoder needs h [n, H] and y [n, D] with the same n, "
                         f"got {h.shape} and {y.shape}.")
    cfg, hyper = _fit_config(method, l2, steps, lr, batch_size, active_steps)
    weights = jnp.ones(h.shape[0], h.dtype) if weights is None else jnp.asarray(weights, h.dtype)
    return _fit_jit(h, y, weights, _key(key), hyper, cfg)


def predict(h: Array, weight: Array, bias: Array) -> Array:
    """Decoder output ``h @ W + b``: ``[n, H] -> [n, D]``."""
    return jnp.asarray(h) @ weight + bias


def decoder_steps(num_tasks, schedule=DECODER_STEPS):
    """Decoder Adam steps for N tasks: ``schedule[0]`` for N <= 3, ``schedule[1]`` for
    N <= 6, else ``schedule[2]``.

    The default :data:`DECODER_STEPS` is the authors' schedule (3000, 2000, 1000).

    Args:
      num_tasks: N, an int (returns an int) or an integer array (returns int32 NumPy).
      schedule: three positive step counts.
    """
    if len(schedule) != 3:
        raise ValueError(f"schedule needs 3 step counts (N <= 3, N <= 6, N > 6), got "
                         f"{tuple(schedule)}.")
    n = np.asarray(num_tasks)
    steps = np.where(n <= 3, schedule[0], np.where(n <= 6, schedule[1], schedule[2]))
    steps = steps.astype(np.int32)
    return int(steps) if steps.ndim == 0 else steps


# --------------------------------------------------------------------------
# OOD / ID protocol.
# --------------------------------------------------------------------------
def _split_rows(h, x, h_test, x_test, mask, key, opts, order):
    """Train and test row weights for one fold (see the module docstring).

    ``opts`` holds traced settings (``ood`` flag, ``train_fraction``,
    ``test_fraction``), so OOD and ID share one compiled program.
    """
    dtype = h.dtype
    u = jax.random.uniform(key, (2, h.shape[0]), dtype)  # [subset draw, ID split draw]
    ood = opts["ood"]
    in_fold = mask[orthant_index(x, order)]
    if h_test is None:
        id_test = in_fold & (u[1] < opts["test_fraction"])
        test = jnp.where(ood, in_fold, id_test)
        train = ~test
        h_test, x_test = h, x
    else:
        train = jnp.where(ood, ~in_fold, True)
        test = mask[orthant_index(x_test, order)]
    train = train & (u[0] < opts["train_fraction"])  # uniform draws are < 1
    return train.astype(dtype), test.astype(dtype), h_test, x_test


def _score_fold(h, x, h_test, x_test, mask, key, opts, *, cfg, order):
    k_rows, k_fit = jax.random.split(key)
    w_train, w_test, h_test, x_test = _split_rows(h, x, h_test, x_test, mask, k_rows, opts,
                                                  order)
    weight, bias = _fit(h, x, w_train, k_fit, opts, cfg)
    normaliser = opts["normaliser"]
    score = r2(x_test, predict(h_test, weight, bias),
               normaliser=None if normaliser is None else normaliser.astype(h.dtype),
               weights=w_test)
    return score, weight, bias


@functools.partial(jax.jit, static_argnames=("cfg", "order"))
def _score_fold_jit(h, x, h_test, x_test, mask, key, opts, *, cfg, order):
    return _score_fold(h, x, h_test, x_test, mask, key, opts, cfg=cfg, order=order)


def _check_layout(h, x, h_test, x_test, lead: int = 0):
    pairs = [(h, x, "h", "x")] + ([] if h_test is None else [(h_test, x_test, "h_test", "x_test")])
    for a, b, na, nb in pairs:
        if a.ndim != 2 + lead or b.ndim != 2 + lead or a.shape[:-1] != b.shape[:-1]:
            shape = "[F, n, {}]" if lead else "[n, {}]"
            raise ValueError(f"{na} must be {shape.format('H')} and {nb} {shape.format('D')} "
                             f"with matching leading axes, got {a.shape} and {b.shape}.")


def _options(mode, method, normaliser, l2, steps, lr, batch_size, train_fraction,
             test_fraction, order, num_dims, active_steps=None):
    """Static fit config and the traced settings pytree shared by the protocol functions."""
    if mode not in ("ood", "id"):
        raise ValueError(f"mode must be 'ood' or 'id', got {mode!r}.")
    if not 0.0 < train_fraction <= 1.0 or not 0.0 < test_fraction <= 1.0:
        raise ValueError(f"train_fraction and test_fraction must be in (0, 1], got "
                         f"{train_fraction} and {test_fraction}.")
    resolve_orthant_order(num_dims, order)
    cfg, opts = _fit_config(method, l2, steps, lr, batch_size, active_steps)
    opts.update(ood=jnp.asarray(mode == "ood"),
                train_fraction=jnp.asarray(train_fraction, jnp.float32),
                test_fraction=jnp.asarray(test_fraction, jnp.float32),
                normaliser=None if normaliser is None else jnp.asarray(normaliser, jnp.float32))
    return cfg, opts


def _protocol(h, x, h_test, x_test, heldout, key, mode, method, normaliser, l2, steps, lr,
              batch_size, train_fraction, test_fraction, order, return_decoder,
              active_steps):
    if (h_test is None) != (x_test is None):
        raise ValueError("Pass both h_test and x_test (separate layout) or neither (pooled).")
    h, x = _as_float(h, x)
    if h_test is not None:
        h_test, x_test = _as_float(h_test, x_test)
    _check_layout(h, x, h_test, x_test)
    mask = _heldout_mask(heldout, 2 ** x.shape[-1])
    cfg, opts = _options(mode, method, normaliser, l2, steps, lr, batch_size, train_fraction,
                         test_fraction, order, x.shape[-1], active_steps)
    score, weight, bias = _score_fold_jit(h, x, h_test, x_test, mask, _key(key), opts,
                                          cfg=cfg, order=order)
    return (score, weight, bias) if return_decoder else score


def ood_r2(h: Array, x: Array, *, heldout, h_test: Optional[Array] = None,
           x_test: Optional[Array] = None, key=None, method: str = "ridge",
           normaliser=UNIFORM_VAR, l2: float = 1e-4, steps: int = 1000, lr: float = 3e-3,
           batch_size: int = 16, train_fraction: float = 1.0, order: str = "auto",
           return_decoder: bool = False, active_steps=None):
    """Out-of-distribution r^2: train outside the held-out orthant(s), test inside.

    Args:
      h: ``[n, H]`` decision-step hidden states; x: ``[n, D]`` their true latents.
      heldout: orthant index (int) or bool ``[2^D]`` mask of held-out orthants (e.g.
        :func:`halfspace_orthants`).
      h_test, x_test: optional separate test set ``[n_test, H]``, ``[n_test, D]``;
        only its rows in the held-out orthant(s) are scored. Without it the held-out
        rows of ``h, x`` are the test set.
      key: PRNG key (Adam init/minibatches, ``train_fraction`` subset); ``None`` =
        ``PRNGKey(0)``.
      method, l2, steps, lr, batch_size, active_steps: decoder fit
        (:func:`fit_linear_decoder`).
      normaliser: r^2 normaliser (:func:`r2`); default the full-prior variance 1/12.
      train_fraction: keep each eligible training row with this probability.
      order: orthant numbering (:func:`orthant_signs`).
      return_decoder: also return the decoder ``(W [H, D], b [D])``.

    Returns:
      Scalar r^2 (or ``(r2, W, b)``). NaN if the held-out orthant has no test rows.
    """
    return _protocol(h, x, h_test, x_test, heldout, key, "ood", method, normaliser, l2, steps,
                     lr, batch_size, train_fraction, 0.5, order, return_decoder, active_steps)


def id_r2(h: Array, x: Array, *, test_orthant, h_test: Optional[Array] = None,
          x_test: Optional[Array] = None, key=None, method: str = "ridge",
          normaliser=UNIFORM_VAR, l2: float = 1e-4, steps: int = 1000, lr: float = 3e-3,
          batch_size: int = 16, train_fraction: float = 1.0, test_fraction: float = 0.5,
          order: str = "auto", return_decoder: bool = False, active_steps=None):
    """In-distribution control: train on all orthants, test on ``test_orthant``.

    Same arguments as :func:`ood_r2` (``test_orthant`` plays the role of
    ``heldout``). Pooled layout: a random ``test_fraction`` of the rows in the test
    orthant(s) (drawn with ``key``) is held back for testing and every other row
    trains. Separate layout: all of ``h, x`` trains and the rows of ``h_test, x_test``
    in the test orthant(s) are scored -- the same rows :func:`ood_r2` scores.
    """
    return _protocol(h, x, h_test, x_test, test_orthant, key, "id", method, normaliser, l2,
                     steps, lr, batch_size, train_fraction, test_fraction, order,
                     return_decoder, active_steps)


class CrossValidation(NamedTuple):
    """Output of :func:`cross_validate` (K folds x F fits).

    r2:      ``[K, F]`` test r^2 of every fold and fit.
    weights: ``[K, F, H, D]`` decoder weights (for :func:`decoder_angles`).
    biases:  ``[K, F, D]`` decoder biases.
    """

    r2: Array
    weights: Array
    biases: Array


@functools.partial(jax.jit, static_argnames=("cfg", "order", "data_per_fit"))
def _cross_validate(h, x, h_test, x_test, folds, keys, opts, *, cfg, order, data_per_fit):
    data_axis = 0 if data_per_fit else None
    in_axes = (data_axis, data_axis, None if h_test is None else data_axis,
               None if x_test is None else data_axis, None, 0)

    def per_fold(mask):
        def one(h, x, ht, xt, m, k):
            return _score_fold(h, x, ht, xt, m, k, opts, cfg=cfg, order=order)
        return jax.vmap(one, in_axes=in_axes)(h, x, h_test, x_test, mask, keys)

    # Folds run sequentially (bounded memory for 2^D folds), fits are vectorised.
    return jax.lax.map(per_fold, folds)


def cross_validate(h: Array, x: Array, *, key, num_fits: int = 5, mode: str = "ood",
                   folds=None, h_test: Optional[Array] = None, x_test: Optional[Array] = None,
                   method: str = "ridge", normaliser=UNIFORM_VAR, l2: float = 1e-4,
                   steps: int = 1000, lr: float = 3e-3, batch_size: int = 16,
                   train_fraction: float = 1.0, test_fraction: float = 0.5,
                   order: str = "auto", active_steps=None) -> CrossValidation:
    """The authors' k-fold orthant cross-validation, all folds and fits in one program.

    For every fold (default: each orthant held out in turn, 4 quadrants for D = 2)
    and every fit, run :func:`ood_r2` (``mode="ood"``) or :func:`id_r2`
    (``mode="id"``). Fits are vmapped and differ in their key (Adam init and
    minibatches, ``train_fraction`` subsets, the pooled ID split) and, when the data
    carry a leading fit axis, in their data. With ``method="ridge"``, the pooled
    layout, ``mode="ood"`` and ``train_fraction=1`` the fits are identical (the fit is
    deterministic) -- pass per-fit data or ``train_fraction < 1`` for a spread.

    Paper protocol (Vafidis et al. 2025, Fig. 1): 5 networks x 4 quadrants x 5 fits =
    100 values per N, reported as median and IQR (:func:`median_iqr` over the stacked
    ``r2`` grids).

    Args:
      h, x: training data ``[n, H]``, ``[n, D]``, or ``[F, n, H]``, ``[F, n, D]`` with
        one data set per fit (then ``num_fits`` must be F or None).
      key: PRNG key (split into one key per fit; the same fit keys serve every fold).
      num_fits: F.
      mode: ``"ood"`` or ``"id"``.
      folds: int ``[K]`` orthant indices or bool ``[K, 2^D]`` masks of held-out orthant
        sets; default ``arange(2^D)``.
      h_test, x_test: optional separate test data (same leading layout as ``h``).
      Others (incl. ``active_steps``): as in :func:`ood_r2` / :func:`id_r2`.

    Returns:
      :class:`CrossValidation` with ``r2 [K, F]``, ``weights [K, F, H, D]``,
      ``biases [K, F, D]``.
    """
    if (h_test is None) != (x_test is None):
        raise ValueError("Pass both h_test and x_test (separate layout) or neither (pooled).")
    h, x = _as_float(h, x)
    if h_test is not None:
        h_test, x_test = _as_float(h_test, x_test)
    data_per_fit = h.ndim == 3
    _check_layout(h, x, h_test, x_test, lead=int(data_per_fit))
    if data_per_fit:
        if num_fits not in (None, h.shape[0]):
            raise ValueError(f"data with a leading fit axis of size {h.shape[0]} "
                             f"needs num_fits={h.shape[0]} (or None), got {num_fits}.")
        num_fits = h.shape[0]
    elif num_fits is None or num_fits < 1:
        raise ValueError(f"num_fits must be >= 1 without a leading fit axis, got {num_fits}.")
    num_orthants = 2 ** x.shape[-1]
    if folds is None:
        folds = jnp.arange(num_orthants)
    folds = jnp.asarray(folds)
    if folds.ndim == 1 and folds.dtype != jnp.bool_:
        folds = jnp.arange(num_orthants)[None, :] == folds[:, None]
    if folds.ndim != 2 or folds.shape[-1] != num_orthants:
        raise ValueError(f"folds must be int [K] orthant indices or bool [K, {num_orthants}] "
                         f"masks, got shape {folds.shape}.")
    cfg, opts = _options(mode, method, normaliser, l2, steps, lr, batch_size, train_fraction,
                         test_fraction, order, x.shape[-1], active_steps)
    scores, weights, biases = _cross_validate(
        h, x, h_test, x_test, folds, jax.random.split(key, int(num_fits)), opts, cfg=cfg,
        order=order, data_per_fit=data_per_fit)
    return CrossValidation(scores, weights, biases)


def cross_validated_r2(h: Array, x: Array, **kwargs) -> Array:
    """``[K, F]`` grid of r^2 values, folds x fits (:func:`cross_validate`'s ``r2``)."""
    return cross_validate(h, x, **kwargs).r2


def median_iqr(values: Array, axis=None):
    """``(median, 25th percentile, 75th percentile)`` ignoring NaNs (the paper's summary)."""
    q = jnp.nanquantile(jnp.asarray(values), jnp.array([0.5, 0.25, 0.75]), axis=axis)
    return q[0], q[1], q[2]


# --------------------------------------------------------------------------
# Orthogonality of the decoded factors.
# --------------------------------------------------------------------------
def decoder_angles(weight: Array) -> Array:
    """Angles (degrees, ``[0, 180]``) between the decoder weight vectors of latent pairs.

    Args:
      weight: ``[..., H, D]`` decoder weights (column ``d`` reads out ``x_d``).

    Returns:
      ``[..., D (D - 1) / 2]`` angles for the pairs ``(i, j), i < j`` in row-major
      upper-triangle order (``np.triu_indices(D, 1)``); for D = 2 the single x1/x2
      angle. 90 means orthogonal (the disentangled ideal).

    Note: an Adam-fitted decoder (the authors' protocol) keeps its random init in
    directions of ``h`` the data never excite (they do not change the predictions),
    which pulls angles toward the random baseline (:func:`random_angle_baseline`);
    the closed-form ridge decoder has no such component.
    """
    return _decoder_angles(jnp.asarray(weight))


@jax.jit
def _decoder_angles(weight):
    rows, cols = np.triu_indices(weight.shape[-1], 1)
    unit = weight / jnp.linalg.norm(weight, axis=-2, keepdims=True)
    cos = jnp.sum(unit[..., :, rows] * unit[..., :, cols], axis=-2)
    return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def random_angle_baseline(num_hidden: int, num_dims: int, key, num_samples: int = 1000) -> Array:
    """Angles between independent standard-Gaussian vectors in ``num_hidden`` dims.

    The chance reference for :func:`decoder_angles`: centred on 90 degrees with a
    spread of about ``(180 / pi) / sqrt(H)`` (~7 degrees for H = 64).

    Returns:
      ``[num_samples, D (D - 1) / 2]`` angles in degrees.
    """
    return _random_angles(key, int(num_hidden), int(num_dims), int(num_samples))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _random_angles(key, num_hidden, num_dims, num_samples):
    return _decoder_angles(jax.random.normal(key, (num_samples, num_hidden, num_dims)))
