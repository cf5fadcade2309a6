"""Multi-task evidence aggregation (Vafidis et al. 2025): pure JAX, made on device.

A latent ``x* in R^D`` is drawn once per trial and held; the network sees a
fixation step, ``T`` stimulus steps ``x* + N(0, sigma^2 I)`` and a decision step
(``T + 2`` steps, 22 by default), every step through a *random frozen encoder*
``f: R^D -> R^40`` (MLP ``D -> 100 -> 100 -> 40``, ReLU or quadratic, PyTorch
``U(+-1/sqrt(fan_in))`` init, drawn per network), next to a fixation channel.
``N`` binary tasks ask on which side of a hyperplane through the origin ``x*``
lies; the targets are ``0.5`` before the decision step and the labels at it.

Two pieces:

* :class:`EvidenceTask` — the *static* part (shapes and kinds: ``dim``, ``stim_steps``,
  ``max_tasks``, free-RT or fixed-RT, boundary geometry). Hashable; one compiled
  program per task.
* :class:`TaskInstance` — the *per-network* part as a pytree of arrays (encoder
  weights, task normals padded to ``max_tasks`` with a mask, noise ``sigma``, factor
  correlation ``rho``, encoder nonlinearity). Instances with different ``N``,
  ``sigma``, ``rho`` or encoder kind stack on a leading axis and ``vmap``.

``task.sample(instance, key, batch_size)`` returns a :class:`Batch`; pass
``orthants=`` (a boolean mask over :func:`orthant_signs`) for the quadrant-restricted
evaluation data of the OOD protocol (``x* = U[0, 1/2]^D * s``, ``s`` a sign pattern
drawn uniformly from the allowed orthants).

Variants (the paper's supplementary experiments, Figs. 5 and S3):

* ``free_rt=True``: no fixation/decision steps and no fixation channel; targets at
  every step are the accumulators ``A_i(t) = sum_{s<=t} w_i . X(s)`` with absorbing
  bounds ``+-bound`` (5), on the *noisy* samples; ``w_i = (-tan phi_i, 1)`` for D = 2
  as in the authors' code. Evaluation sequences pass ``stim_steps=T + 1``.
* ``boundary="hyperbolic"``: ``N/4`` thresholds per quadrant,
  ``theta_k = 0.2 linspace(1/(2N), 1, N/4)``; output ``(q, k)`` is 1 iff ``x*`` lies in
  quadrant ``q`` and ``|x1 x2| > theta_k`` (D = 2, ``N % 4 == 0``).
* ``rho != 0``: correlated factors through a Gaussian copula
  (``z ~ N(0, R)``, ``R`` equicorrelated, ``x* = Phi(z) - 1/2``: uniform marginals).
* ``encoder="quadratic"``: ``x^2`` instead of ReLU in the encoder.

Labels for D = 2 follow the authors' ``1[x2 > tan(phi_i) x1]`` with
``phi_i = (i + 1/2) pi / N`` (so the half-plane orientation flips for
``phi > pi/2``); for D > 2 normals are random unit vectors (drawn from the
instance seed).

Orthant order (:func:`orthant_signs`): for D = 2 the authors' quadrants
1 = (+,+), 2 = (-,+), 3 = (-,-), 4 = (+,-); for D > 2 the lexicographic
``itertools.product((-1, +1), repeat=D)`` (first coordinate most significant; the
authors' ``DenoiseQuadsHighDim`` order).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from gbi_jax.validation import check_choice, check_int, check_positive, check_range, require

ENCODERS = ("relu", "quadratic")
BOUNDARIES = ("linear", "hyperbolic")


@flax.struct.dataclass
class TaskInstance:
    """Per-network task parameters (a pytree; stack on a leading axis to vmap).

    Attributes:
      encoder: frozen encoder weights ``{"w0": [D, 100], "b0": [100], ...}``.
      weights: ``[max_tasks, D]`` label/accumulator weights (padded rows are 0).
      mask: ``[max_tasks]`` 1.0 for the ``N`` real outputs, 0.0 for padding.
      thresholds: ``[max_tasks]`` ``|x1 x2|`` thresholds (hyperbolic boundary only).
      quadrant: ``[max_tasks]`` int quadrant (0..3) of each output (hyperbolic only).
      sigma: scalar noise std per step and dimension (latent units).
      chol: ``[D, D]`` Cholesky factor of the copula correlation (identity if rho = 0).
      quadratic: scalar 1.0 for the quadratic encoder, 0.0 for ReLU.
      num_tasks: scalar int N.
    """

    encoder: dict
    weights: jax.Array
    mask: jax.Array
    thresholds: jax.Array
    quadrant: jax.Array
    sigma: jax.Array
    chol: jax.Array
    quadratic: jax.Array
    num_tasks: jax.Array


@flax.struct.dataclass
class Batch:
    """One batch of trials.

    Attributes:
      inputs: ``[B, S, F]`` network inputs (``F = 1 + encoder_out`` with fixation,
        ``encoder_out`` for free RT).
      targets: ``[B, S, max_tasks]`` 0.5 / labels (fixed RT) or bounded accumulators
        (free RT).
      labels: ``[B, max_tasks]`` decision labels in {0, 1} (from ``x*``).
      latent: ``[B, D]`` the true ``x*``.
      stimulus: ``[B, T, D]`` the noisy samples ``x* + eps`` (before the encoder).
      orthant: ``[B]`` int index of the orthant of ``x*`` (see :func:`orthant_signs`).
    """

    inputs: jax.Array
    targets: jax.Array
    labels: jax.Array
    latent: jax.Array
    stimulus: jax.Array
    orthant: jax.Array


# --------------------------------------------------------------------------
# Task geometry: orthant numbering and decision-line angles.
# --------------------------------------------------------------------------
ORTHANT_ORDERS = ("auto", "quadrant", "binary")

# binary index (2 * [x1 >= 0] + [x2 >= 0]) -> quadrant index (+,+)=0 (-,+)=1 (-,-)=2 (+,-)=3
_BINARY_TO_QUADRANT = np.array([2, 1, 3, 0])


def resolve_orthant_order(dim: int, order: str = "auto") -> str:
    """``"quadrant"`` or ``"binary"``: the numbering ``order`` stands for in ``dim`` dims.

    ``"auto"`` is the authors' numbering: quadrants for D = 2, binary otherwise.
    """
    check_choice("order", order, ORTHANT_ORDERS)
    if order == "auto":
        return "quadrant" if dim == 2 else "binary"
    require(order != "quadrant" or dim == 2, "order",
            f"'quadrant' needs D = 2, got D = {dim}; use 'binary'.")
    return order


def orthant_signs(dim: int, order: str = "auto") -> np.ndarray:
    """Sign pattern of every orthant, float32 ``[2^D, D]`` of ``+-1`` (row ``o`` = orthant ``o``).

    ``order``: ``"quadrant"`` (D = 2 only: (+,+), (-,+), (-,-), (+,-), the authors'
    quadrants 1-4), ``"binary"`` (``itertools.product((-1, +1), repeat=D)``, first
    coordinate most significant), or ``"auto"`` (quadrant for D = 2, binary otherwise;
    the authors' evaluation tasks).
    """
    order = resolve_orthant_order(dim, order)
    bits = (np.arange(2 ** dim)[:, None] >> np.arange(dim)[::-1]) & 1
    signs = (2 * bits - 1).astype(np.float32)
    if order == "quadrant":
        signs = signs[np.argsort(_BINARY_TO_QUADRANT)]
    return signs


def orthant_index(x: jax.Array, order: str = "auto") -> jax.Array:
    """Orthant of each latent: ``x [..., D]`` -> int32 ``[...]`` in ``[0, 2^D)``.

    Numbering as in :func:`orthant_signs`; a coordinate equal to 0 counts as positive.
    """
    x = jnp.asarray(x)
    return _orthant_index(x, resolve_orthant_order(x.shape[-1], order))


@functools.partial(jax.jit, static_argnames=("order",))
def _orthant_index(x, order):
    dim = x.shape[-1]
    bits = (x >= 0).astype(jnp.int32)
    index = jnp.sum(bits * (2 ** jnp.arange(dim - 1, -1, -1, dtype=jnp.int32)), axis=-1)
    if order == "quadrant":
        index = jnp.asarray(_BINARY_TO_QUADRANT, jnp.int32)[index]
    return index


def line_angles(num_tasks: int) -> np.ndarray:
    """Angles ``phi_i = (i + 1/2) pi / N`` (radians, float64 ``[N]``) of the D = 2 lines.

    Task ``i`` labels ``1[x2 > tan(phi_i) x1]`` (the evenly spaced lines of Vafidis et
    al. 2025, as in the authors' task code).
    """
    return (np.arange(num_tasks) + 0.5) * np.pi / num_tasks


def _torch_linear(rng: np.random.Generator, fan_in: int, fan_out: int):
    bound = 1.0 / np.sqrt(fan_in)
    return (rng.uniform(-bound, bound, (fan_in, fan_out)).astype(np.float32),
            rng.uniform(-bound, bound, fan_out).astype(np.float32))


def _equicorrelation_cholesky(dim: int, rho: float) -> np.ndarray:
    corr = np.full((dim, dim), rho, np.float64)
    np.fill_diagonal(corr, 1.0)
    try:
        return np.linalg.cholesky(corr).astype(np.float32)
    except np.linalg.LinAlgError:
        raise ValueError(f"rho={rho} does not give a valid correlation matrix for D={dim}; "
                         f"use -1/(D-1) < rho < 1.") from None


@dataclasses.dataclass(frozen=True)
class EvidenceTask:
    """Static description of the task family (see module docstring).

    Attributes:
      dim: latent dimension D.
      stim_steps: stimulus steps T (trial = T + 2 steps with fixation; T for free RT).
      max_tasks: width of the (padded) output; instances have ``N <= max_tasks``.
      encoder_hidden: hidden widths of the frozen encoder.
      encoder_out: encoder output width (40).
      free_rt: free reaction-time variant (bounded accumulator targets).
      boundary: ``"linear"`` or ``"hyperbolic"``.
      bound: absorbing bound of the free-RT accumulators.
      encoders: the encoder nonlinearities the instances of this (compiled) task may
        use, a subset of :data:`ENCODERS`. With one kind the program computes only that
        nonlinearity; with both, each instance selects its own (``TaskInstance.quadratic``)
        at the cost of evaluating both. Same numbers either way.
    """

    dim: int = 2
    stim_steps: int = 20
    max_tasks: int = 24
    encoder_hidden: tuple = (100, 100)
    encoder_out: int = 40
    free_rt: bool = False
    boundary: str = "linear"
    bound: float = 5.0
    encoders: tuple = ENCODERS

    def __post_init__(self):
        """Check every field; a bad one raises ``FieldError`` (a ``ValueError``) naming it
        as ``EvidenceTask.<field>``."""
        check_int("EvidenceTask.dim", self.dim, 1)
        check_int("EvidenceTask.stim_steps", self.stim_steps, 1)
        check_int("EvidenceTask.max_tasks", self.max_tasks, 1)
        for width in tuple(self.encoder_hidden):
            check_int("EvidenceTask.encoder_hidden", width, 1)
        check_int("EvidenceTask.encoder_out", self.encoder_out, 1)
        check_choice("EvidenceTask.boundary", self.boundary, BOUNDARIES)
        require(self.boundary == "linear" or self.dim == 2, "EvidenceTask.boundary",
                f"'hyperbolic' needs dim=2, got dim={self.dim}.")
        require(not (self.free_rt and self.boundary != "linear"), "EvidenceTask.free_rt",
                "True supports only boundary='linear'.")
        check_positive("EvidenceTask.bound", self.bound)
        require(isinstance(self.encoders, tuple) and len(self.encoders) > 0
                and set(self.encoders) <= set(ENCODERS), "EvidenceTask.encoders",
                f"must be a non-empty tuple drawn from {ENCODERS}, got {self.encoders!r}.")

    # -- shapes ---------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        """Steps per training trial (T + 2 fixed RT, T free RT)."""
        return self.stim_steps if self.free_rt else self.stim_steps + 2

    @property
    def input_size(self) -> int:
        return self.encoder_out if self.free_rt else self.encoder_out + 1

    # -- per-network instance ---------------------------------------------------
    def check_instance(self, num_tasks: int, *, sigma: float = 0.2, rho: float = 0.0,
                       encoder: str = "relu") -> int:
        """Check the fields of a :class:`TaskInstance` of this task without drawing it.

        Raises ``FieldError`` (a ``ValueError``) naming the field as
        ``TaskInstance.<field>``: ``num_tasks`` an integer in ``[1, max_tasks]`` (and a
        multiple of 4 for hyperbolic boundaries), ``sigma >= 0``, ``rho`` a valid
        equicorrelation (``-1/(D-1) < rho < 1``), ``encoder`` one of ``self.encoders``.
        Returns ``int(num_tasks)``.
        """
        num_tasks = check_int("TaskInstance.num_tasks", num_tasks, 1, self.max_tasks)
        require(self.boundary != "hyperbolic" or num_tasks % 4 == 0, "TaskInstance.num_tasks",
                f"must be divisible by 4 for boundary='hyperbolic' (N/4 thresholds per "
                f"quadrant), got {num_tasks}.")
        check_positive("TaskInstance.sigma", sigma, allow_zero=True)
        if self.dim > 1:
            check_range("TaskInstance.rho", rho, -1.0 / (self.dim - 1), 1.0, low_open=True,
                        high_open=True)
        require(encoder in self.encoders, "TaskInstance.encoder",
                f"must be one of {self.encoders} (EvidenceTask.encoders), got {encoder!r}.")
        return num_tasks

    def instance(self, seed: int, num_tasks: int, *, sigma: float = 0.2, rho: float = 0.0,
                 encoder: str = "relu") -> TaskInstance:
        """Draw one network's encoder (and, for D > 2, its task normals) from ``seed``.

        Drawn on the host with ``numpy.random.default_rng(seed)`` (no compilation);
        ``seed`` is an int or a sequence of ints. The arguments are checked by
        :meth:`check_instance`.
        """
        num_tasks = self.check_instance(num_tasks, sigma=sigma, rho=rho, encoder=encoder)
        chol = _equicorrelation_cholesky(self.dim, float(rho)) if self.dim > 1 else np.ones((1, 1))
        rng = np.random.default_rng(seed)
        widths = (self.dim,) + tuple(self.encoder_hidden) + (self.encoder_out,)
        enc = {}
        for i in range(len(widths) - 1):
            w, b = _torch_linear(rng, widths[i], widths[i + 1])
            enc[f"w{i}"], enc[f"b{i}"] = jnp.asarray(w), jnp.asarray(b)

        weights = np.zeros((self.max_tasks, self.dim), np.float32)
        thresholds = np.zeros(self.max_tasks, np.float32)
        quadrant = np.zeros(self.max_tasks, np.int32)
        if self.boundary == "hyperbolic":
            per = num_tasks // 4
            theta = 0.2 * np.linspace(1.0 / (2 * num_tasks), 1.0, per)
            thresholds[:num_tasks] = np.tile(theta, 4)
            quadrant[:num_tasks] = np.repeat(np.arange(4), per)
        elif self.dim == 2:
            phi = line_angles(num_tasks)
            weights[:num_tasks, 0] = -np.tan(phi)
            weights[:num_tasks, 1] = 1.0
        else:
            c = rng.standard_normal((num_tasks, self.dim))
            weights[:num_tasks] = c / np.linalg.norm(c, axis=-1, keepdims=True)
        mask = np.zeros(self.max_tasks, np.float32)
        mask[:num_tasks] = 1.0
        return TaskInstance(
            encoder=enc, weights=jnp.asarray(weights, jnp.float32), mask=jnp.asarray(mask),
            thresholds=jnp.asarray(thresholds), quadrant=jnp.asarray(quadrant),
            sigma=jnp.asarray(sigma, jnp.float32), chol=jnp.asarray(chol, jnp.float32),
            quadratic=jnp.asarray(1.0 if encoder == "quadratic" else 0.0, jnp.float32),
            num_tasks=jnp.asarray(num_tasks, jnp.int32))

    # -- pieces -----------------------------------------------------------------
    def encode(self, inst: TaskInstance, x: jax.Array) -> jax.Array:
        """The frozen encoder ``f``: ``[..., D] -> [..., encoder_out]``.

        The first layer contracts over only ``D`` inputs: for ``D <= 8`` it is written
        as ``D`` broadcast multiply-adds, which fuse with the bias and the nonlinearity
        into one elementwise pass (a matmul with a 2-long contraction runs far below the
        CPU's matmul speed; ``python -m benchmarks.disentangle_train --profile``).
        """
        enc = inst.encoder
        n = len(self.encoder_hidden) + 1
        h = x
        for i in range(n):
            w, b = enc[f"w{i}"], enc[f"b{i}"]
            if i == 0 and w.shape[0] <= 8:
                h = b + sum(h[..., d, None] * w[d] for d in range(w.shape[0]))
            else:
                h = h @ w + b
            if i < n - 1:
                h = self._nonlinearity(inst, h)
        return h

    def _nonlinearity(self, inst: TaskInstance, h: jax.Array) -> jax.Array:
        kinds = set(self.encoders)
        if kinds == {"relu"}:
            return jax.nn.relu(h)
        if kinds == {"quadratic"}:
            return h * h
        return jnp.where(inst.quadratic > 0, h * h, jax.nn.relu(h))

    def sample_latent(self, inst: TaskInstance, key: jax.Array, batch_size: int,
                      orthants: Optional[jax.Array] = None) -> jax.Array:
        """``[B, D]`` latents: the (copula) prior, or uniform within allowed orthants."""
        if orthants is None:
            z = jax.random.normal(key, (batch_size, self.dim)) @ inst.chol.T
            return ndtr(z) - 0.5
        k_o, k_u = jax.random.split(key)
        signs = jnp.asarray(orthant_signs(self.dim))
        orthants = jnp.asarray(orthants)
        logits = jnp.where(orthants, 0.0, -jnp.inf)
        idx = jax.random.categorical(k_o, logits, shape=(batch_size,))
        return jax.random.uniform(k_u, (batch_size, self.dim), maxval=0.5) * signs[idx]

    def labels(self, inst: TaskInstance, x: jax.Array) -> jax.Array:
        """``[B, max_tasks]`` labels in {0., 1.} of latents ``x [B, D]`` (padding -> 0)."""
        if self.boundary == "hyperbolic":
            q = orthant_index(x)  # [B]
            prod = jnp.abs(x[:, 0] * x[:, 1])
            y = (q[:, None] == inst.quadrant[None, :]) & (prod[:, None] > inst.thresholds)
        else:
            y = x @ inst.weights.T > 0
        return y.astype(jnp.float32) * inst.mask

    def accumulators(self, inst: TaskInstance, stimulus: jax.Array) -> jax.Array:
        """Free-RT targets ``[B, T, max_tasks]``: running sums of ``w_i . X`` absorbed at
        ``+-bound``."""
        cum = jnp.cumsum(stimulus @ inst.weights.T, axis=1)  # [B, T, N]
        hit = jnp.abs(cum) >= self.bound
        first = jnp.argmax(hit, axis=1)  # [B, N] first crossing (0 if none)
        crossed = jnp.any(hit, axis=1)
        sign_at = jnp.sign(jnp.take_along_axis(cum, first[:, None, :], axis=1))  # [B, 1, N]
        t = jnp.arange(cum.shape[1])[None, :, None]
        absorbed = crossed[:, None, :] & (t >= first[:, None, :])
        return jnp.where(absorbed, self.bound * sign_at, cum) * inst.mask

    # -- batches ------------------------------------------------------------------
    def sample(self, inst: TaskInstance, key: jax.Array, batch_size: int, *,
               orthants: Optional[jax.Array] = None, stim_steps: Optional[int] = None,
               sigma: Optional[jax.Array] = None) -> Batch:
        """One batch of ``batch_size`` trials for one network (vmap over instances).

        Args:
          inst: this network's :class:`TaskInstance`.
          key: PRNG key.
          batch_size: trials B (static).
          orthants: optional ``bool[2^D]`` mask of allowed orthants (evaluation data).
          stim_steps: override T (e.g. ``T + 1`` for free-RT evaluation).
          sigma: override the instance's noise level.
        """
        steps = self.stim_steps if stim_steps is None else int(stim_steps)
        sigma = inst.sigma if sigma is None else sigma
        k_x, k_n = jax.random.split(key)
        x = self.sample_latent(inst, k_x, batch_size, orthants)
        stim = x[:, None, :] + sigma * jax.random.normal(k_n, (batch_size, steps, self.dim))
        feats = self.encode(inst, stim)  # [B, T, E]
        labels = self.labels(inst, x)
        if self.free_rt:
            inputs = feats
            targets = self.accumulators(inst, stim)
        else:
            blank = jnp.broadcast_to(self.encode(inst, jnp.zeros((self.dim,))),
                                     (batch_size, 1, self.encoder_out))
            feats = jnp.concatenate([blank, feats, blank], axis=1)
            fix = jnp.concatenate([jnp.ones((batch_size, steps + 1, 1)),
                                   jnp.zeros((batch_size, 1, 1))], axis=1)
            inputs = jnp.concatenate([fix, feats], axis=-1)
            targets = jnp.concatenate(
                [jnp.full((batch_size, steps + 1, self.max_tasks), 0.5) * inst.mask,
                 labels[:, None, :]], axis=1)
        return Batch(inputs=inputs, targets=targets, labels=labels, latent=x, stimulus=stim,
                     orthant=orthant_index(x))


def stack_instances(instances) -> TaskInstance:
    """Stack instances (same task) on a new leading axis."""
    return jax.tree_util.tree_map(lambda *a: jnp.asarray(np.stack([np.asarray(x) for x in a])),
                                  *instances)
