"""Gradient-based inference (GBI) of task-abstraction latents.

Pure functions with no knowledge of models or data. Each primitive takes a
``loss_fn`` that maps ONE latent array ``z`` (for example shape ``[K]``) to a
scalar loss, with the network weights closed over and therefore frozen.
Everything here is ``jit``- and ``vmap``-compatible; batches of examples are
handled by giving every example its own latent (see :func:`per_example` and
:func:`one_step_batch`), never by differentiating a batch-mean loss with
respect to a shared latent.

Sign convention: the loss is minimised, so the inferred task is the coordinate
with the most negative gradient, ``argmax(-dL/dz)``. Near the max-entropy point
``-dL/dz_k`` is, up to a constant shared by all ``k``, a first-order estimate of
``log p(x | z = e_k)`` (the one-step update of Hummos et al. 2024, Eq. 7).

Main entry points
-----------------
one_step      one forward+backward pass at ``z0`` -> grad, scores, posterior, argmax
exhaustive    the exact counterpart: the loss of every one-hot latent (K forward passes)
optimize      ``num_steps`` optax updates of the latent inside ``lax.scan``
online        latent inference along a sequence with a sliding window
ood_scores    uncertainty / out-of-distribution scores from the one-step pass
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from gbi_jax.precision import check_matmul_dtype, with_matmul_dtype
from gbi_jax.validation import check_int, check_positive, require

Array = jax.Array
PyTree = Any
LossFn = Callable[[Array], Array]

__all__ = [
    "OneStepResult",
    "OptimizeTrace",
    "OnlineTrace",
    "OODScores",
    "max_entropy_latent",
    "one_step",
    "one_step_batch",
    "exhaustive",
    "exhaustive_batch",
    "optimize",
    "optimize_batch",
    "online",
    "ood_scores",
    "per_example",
    "entropy",
    "l2_penalty",
    "normalized_sgd",
    "tune_chunk_size",
    "auto_chunk_size",
    "choose_grad_mode",
]


# --------------------------------------------------------------------------
# Results (NamedTuples are pytrees, so results pass through jit/vmap/scan).
# --------------------------------------------------------------------------
class OneStepResult(NamedTuple):
    """Output of :func:`one_step` and :func:`exhaustive`; leading dims are batch dims.

    For :func:`one_step`:

    loss:       scalar loss at ``z0``.
    grad:       ``dL/dz`` at ``z0``, same shape as ``z0``.
    scores:     ``-grad``: larger means "this task explains the data better".
    posterior:  ``softmax(scores / temperature)`` over the last axis.
    prediction: ``argmax(scores)`` over the last axis (int32).

    For :func:`exhaustive` the same fields hold the exact, K-pass quantities (see there):
    ``grad`` is the vector of one-hot losses ``L(e_k)``, ``loss`` its minimum.
    """

    loss: Array
    grad: Array
    scores: Array
    posterior: Array
    prediction: Array


class OptimizeTrace(NamedTuple):
    """Per-step record of :func:`optimize` (leading axis = step).

    loss:      task loss (without the penalty) at the latent *before* each update.
    objective: loss + penalty at the latent before each update.
    z:         latent *after* each update.
    grad_norm: L2 norm of the objective's gradient before each update.
    """

    loss: Array
    objective: Array
    z: Array
    grad_norm: Array


class OnlineTrace(NamedTuple):
    """Per-time-step record of :func:`online` (leading axis = time).

    loss: window loss at the latent carried in from the previous step.
    grad: gradient of that loss w.r.t. the latent (before any update at t).
    z:    latent after this step's updates (carried to t + 1).
    aux:  whatever ``loss_fn`` returned as auxiliary output, evaluated at the
          carried-in latent (e.g. the prediction of the newest observation).
    """

    loss: Array
    grad: Array
    z: Array
    aux: PyTree


class OODScores(NamedTuple):
    """Uncertainty / OOD scores from one forward+backward at the max-entropy point.

    Raw values; their orientation is documented per field (``↑`` = the value is
    expected to grow for out-of-distribution inputs):

    loss:              loss at ``z0``                                   (↑ OOD)
    max_score:         ``max_k -dL/dz_k``; one strong negative gradient
                       coordinate is expected in distribution            (↓ OOD)
    grad_norm:         ``||dL/dz||_2`` at ``z0``                         (either)
    posterior_entropy: entropy of ``softmax(-g / temperature)``          (↑ OOD)
    loss_after_step:   loss at ``z0 - step_size * g``, the latent after one
                       gradient step                                     (↑ OOD)
    """

    loss: Array
    max_score: Array
    grad_norm: Array
    posterior_entropy: Array
    loss_after_step: Array


# --------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------
def max_entropy_latent(num_tasks: int, batch_shape: tuple[int, ...] = (), *,
                       parameterization: str = "probs", dtype=jnp.float32) -> Array:
    """The max-entropy (uniform) latent.

    Args:
      num_tasks: K, the number of task abstractions (must be >= 2).
      batch_shape: leading batch dims; the result has shape ``batch_shape + (K,)``.
      parameterization: ``"probs"`` gives ``1/K`` everywhere (a latent fed to the
        network directly); ``"logits"`` gives zeros (a latent fed through softmax).
    """
    check_int("num_tasks", num_tasks, 2)
    shape = tuple(batch_shape) + (num_tasks,)
    if parameterization == "probs":
        return jnp.full(shape, 1.0 / num_tasks, dtype)
    if parameterization == "logits":
        return jnp.zeros(shape, dtype)
    raise ValueError(
        f"parameterization must be 'probs' or 'logits', got {parameterization!r}.")


def entropy(p: Array, axis: int = -1) -> Array:
    """Shannon entropy (nats) of a probability vector along ``axis``."""
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=axis)


def l2_penalty(z: Array, anchor: Array, kind: str = "norm") -> Array:
    """Distance of ``z`` from ``anchor`` used as the entropy proxy.

    ``kind="norm"`` is ``||z - anchor||_2`` (the authors' toy code adds the norm,
    not its square); its gradient at ``z == anchor`` is defined as 0.
    ``kind="squared"`` is ``||z - anchor||_2^2``.
    """
    d = z - anchor
    sq = jnp.sum(d * d)
    if kind == "squared":
        return sq
    if kind == "norm":
        # Safe norm: gradient 0 at the anchor instead of NaN.
        safe = jnp.where(sq > 0, sq, 1.0)
        return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)
    raise ValueError(f"penalty kind must be 'norm' or 'squared', got {kind!r}.")


def _check_scalar_loss(loss_fn: LossFn, z: Array, batch_fn: str) -> None:
    """``loss_fn(z)`` must be a scalar (checked on shapes only, nothing is computed)."""
    out = jax.eval_shape(loss_fn, z)
    if not hasattr(out, "shape") or out.shape != ():
        raise ValueError("loss_fn must return a scalar loss for one latent, got "
                         f"{getattr(out, 'shape', type(out))}; for a batch use {batch_fn}.")


def _check_latent(z0: Array) -> None:
    if z0.ndim < 1 or z0.shape[-1] < 2:
        raise ValueError(
            "The latent must have a trailing task axis of size K >= 2; got shape "
            f"{tuple(z0.shape)}.")


# --------------------------------------------------------------------------
# One-step inference.
# --------------------------------------------------------------------------
def one_step(loss_fn: LossFn, z0: Array, *, temperature: float = 1.0,
             matmul_dtype: Any = None, grad_mode: str = "reverse") -> OneStepResult:
    """One-step GBI: one gradient of ``loss_fn`` at ``z0`` (usually max entropy).

    Args:
      loss_fn: ``z -> scalar`` loss with the network weights closed over.
      z0: the latent at which to take the gradient, shape ``[..., K]``. A leading
        batch shape is allowed only if ``loss_fn`` returns one scalar that is a
        *sum* of independent per-example losses; prefer :func:`one_step_batch`.
      temperature: ``alpha`` of the soft posterior ``softmax(-g / alpha)``.
      matmul_dtype: ``None`` (float32), ``"bfloat16"`` or ``"auto"`` (bfloat16 where
        the hardware multiplies it natively, else float32:
        :func:`gbi_jax.precision.resolve_matmul_dtype`): the forward and backward
        matrix products take bfloat16 operands with float32 accumulation
        (:func:`gbi_jax.precision.with_matmul_dtype`); the gradient is float32.
      grad_mode: ``"reverse"`` (default: one backward pass) or ``"forward"``: the
        gradient from K forward-mode derivatives (Jacobian-vector products along the K
        unit vectors, vmapped), for an unbatched ``[K]`` latent only. Same gradient to
        float rounding. Forward mode pays off under :func:`one_step_batch` with a shared
        latent, where the latent-only part of the model is then differentiated once for
        all examples (see its ``grad_mode="auto"``).

    Returns:
      :class:`OneStepResult`. Cost: one forward and one backward pass, whatever K
      (``"forward"``: the forward pass and K tangent passes).
    """
    _check_latent(z0)
    check_positive("temperature", temperature)
    _check_grad_mode(grad_mode, z0, auto=False)
    _check_scalar_loss(loss_fn, z0, "one_step_batch")
    vg = jax.value_and_grad(loss_fn) if grad_mode == "reverse" else _forward_value_and_grad(
        loss_fn)
    loss, grad = with_matmul_dtype(vg, matmul_dtype)(z0)
    scores = -grad
    posterior = jax.nn.softmax(scores / temperature, axis=-1)
    prediction = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    return OneStepResult(loss, grad, scores, posterior, prediction)


GRAD_MODES = ("reverse", "forward")
# one_step_batch(grad_mode="auto") takes forward mode only when its estimated cost
# (_program_cost) is below this share of reverse mode's.
FORWARD_COST_SHARE = 0.5
_GRAD_MODE_LOGGED: set = set()


def _check_grad_mode(grad_mode, z0, *, auto: bool) -> None:
    modes = GRAD_MODES + (("auto",) if auto else ())
    if grad_mode not in modes:
        raise ValueError(f"grad_mode must be one of {', '.join(map(repr, modes))}, got "
                         f"{grad_mode!r}.")
    if grad_mode == "forward" and not auto and jnp.ndim(z0) != 1:
        raise ValueError(f"grad_mode='forward' needs an unbatched [K] latent, got shape "
                         f"{tuple(jnp.shape(z0))}; use grad_mode='reverse', or "
                         f"one_step_batch for a batch of latents.")


def _forward_value_and_grad(loss_fn: LossFn) -> Callable[[Array], tuple[Array, Array]]:
    """``z [K] -> (loss, dloss/dz)`` by forward mode: ``jvp`` along each unit vector,
    vmapped (the primal is computed once, the K tangents together)."""
    def vg(z):
        basis = jnp.eye(z.shape[-1], dtype=z.dtype)
        loss, grad = jax.vmap(lambda v: jax.jvp(loss_fn, (z,), (v,)),
                              out_axes=(None, 0))(basis)
        return loss, grad
    return vg


def _program_cost(fn: Callable[..., Any], *args) -> float:
    """Estimated arithmetic of ``fn(*args)``, counted on its jaxpr (tracing only, no
    compilation): ``2 x`` output size ``x`` contracted size per ``dot_general``, output
    size ``x`` window per convolution, the larger of input and output size for any
    other primitive; scan bodies times their length, other sub-programs once."""
    import math

    from jax.extend.core import jaxprs_in_params

    def size(v) -> int:
        shape = getattr(getattr(v, "aval", None), "shape", ())
        return math.prod(shape)

    def count(jaxpr) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            subs = list(jaxprs_in_params(eqn.params))
            if name == "dot_general":
                (lhs_c, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                total += 2.0 * size(eqn.outvars[0]) * math.prod(lhs[d] for d in lhs_c)
            elif name == "conv_general_dilated":
                rhs = eqn.invars[1].aval.shape
                out_feat = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
                total += 2.0 * size(eqn.outvars[0]) * math.prod(rhs) / max(out_feat, 1)
            elif subs:
                scale = float(eqn.params["length"]) if name == "scan" else 1.0
                total += scale * sum(count(sub) for sub in subs)
            else:
                total += max([size(v) for v in eqn.invars] + [size(v) for v in eqn.outvars]
                             + [0])
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)


def choose_grad_mode(example_loss_fn: Callable[[Array, PyTree], Array], z0: Array,
                     batch: PyTree, *, matmul_dtype: Any = None) -> str:
    """The gradient mode :func:`one_step_batch` uses with ``grad_mode="auto"``.

    ``"forward"`` if ``z0`` is one shared ``[K]`` latent and the forward-mode program
    over the whole batch is estimated (:func:`_program_cost`, on the traced programs:
    the same answer on every machine) at under :data:`FORWARD_COST_SHARE` of the
    reverse-mode one's arithmetic, else ``"reverse"``. With a shared latent the part of
    the model that depends on the latent alone runs once for the batch in both modes;
    forward mode also differentiates it once, leaving each example only the K tangents
    of its own part. For a decoder whose only input is the latent (the one-step
    inference of ``python -m benchmarks.inference``: 10 -> 256 -> 256 -> 784 and a
    squared error) that is about 2 % of reverse mode's per-example arithmetic; where
    every example has its own inputs (an encoder, a sequence) forward mode would cost
    about K forward passes per example and reverse mode is kept. A loss that forward mode
    cannot differentiate (e.g. one through a ``jax.custom_vjp`` function) keeps reverse
    mode too.
    """
    if jnp.ndim(z0) != 1:
        return "reverse"
    costs = {}
    for mode in ("forward", "reverse"):
        def single(z, example, mode=mode):
            return one_step(lambda zz: example_loss_fn(zz, example), z, matmul_dtype=matmul_dtype,
                            grad_mode=mode).grad
        try:
            costs[mode] = _program_cost(jax.vmap(single, in_axes=(None, 0)), z0, batch)
        except Exception:  # noqa: BLE001 - no forward mode for this loss: reverse
            if mode == "reverse":
                raise
            return "reverse"
    mode = "forward" if costs["forward"] < FORWARD_COST_SHARE * costs["reverse"] else "reverse"
    key = (mode, tuple(jnp.shape(x) for x in jax.tree_util.tree_leaves(batch)))
    if key not in _GRAD_MODE_LOGGED:
        from absl import logging

        _GRAD_MODE_LOGGED.add(key)
        logging.info("one_step_batch grad_mode 'auto': %s (estimated cost forward/reverse "
                     "%.3g)", mode, costs["forward"] / max(costs["reverse"], 1.0))
    return mode


# The rule per_example(chunk_size="auto") falls back to on CPU where the probe cannot run
# (more than one process, or a per-example function the probe cannot rebuild). For 10,000
# latents through the MLP decoder of benchmarks/inference.py on a 2-core AMD EPYC host
# (AVX-512): one-step inference 201k latents/s unchunked, 474k / 669k / 642k / 581k with
# chunks of 250 / 500 / 1,000 / 2,000; 50 steps of iterative inference 5.7k unchunked,
# 6.0k / 7.0k / 7.3k / 7.0k (on a 2-core Intel host, chunks of 250 were the fastest).
CPU_CHUNK_SIZE = 500
# per_example(chunk_size="auto") on CPU (auto_chunk_size): batches under AUTO_MIN_BATCH
# latents run as one vmap; larger ones use the fastest of one vmap and PROBE_CHUNKS, timed
# on stand-in latents of the same per-example program: as many as the batch has (at most
# PROBE_MAX_LATENTS), or fewer (at least PROBE_MIN_LATENTS) when one call on that many
# would take longer than PROBE_CALL_S.
AUTO_MIN_BATCH = 256
PROBE_CHUNKS = (125, 250, 500, 1000)
PROBE_MAX_LATENTS = 16384
PROBE_MIN_LATENTS = 2000
PROBE_CALL_S = 0.25
# Part of the cache key: a probe that measures differently does not reuse older choices.
PROBE_VERSION = 3
# Round-robin calls of the chunk-size probes (autotune.pick): 3 of every candidate, then up
# to 7 of those within 5 % of the fastest.
PROBE_ROUNDS = dict(rounds=3, final_rounds=7)

_AUTO_CHOICES: dict = {}  # per process: workload key -> chosen chunk size


def resolve_chunk_size(chunk_size: Optional[int | str]) -> Optional[int]:
    """``chunk_size`` for :func:`per_example` without a probe: ``"auto"`` becomes the
    CPU rule :data:`CPU_CHUNK_SIZE` on CPU and ``None`` (one ``vmap``, which keeps an
    accelerator busy) on GPU/TPU. Integers and ``None`` are returned as they are.
    :func:`per_example` itself resolves ``"auto"`` on CPU with :func:`auto_chunk_size`."""
    if chunk_size == "auto":
        return CPU_CHUNK_SIZE if jax.default_backend() == "cpu" else None
    return chunk_size


def _stand_in(x, rng):
    """A concrete array shaped like ``x``: small normal values for floats, zeros for
    integers and booleans (valid indices and masks). Other dtypes (PRNG keys) raise."""
    import numpy as np

    dtype = x.dtype
    if jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating):
        return (0.1 * rng.standard_normal(x.shape)).astype(dtype)
    if jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.bool_):
        return np.zeros(x.shape, dtype)
    raise TypeError(f"no stand-in for dtype {dtype}")


def auto_chunk_size(fn: Callable[..., Any], z: Array, batch: PyTree) -> Optional[int]:
    """The ``chunk_size`` that ``per_example(fn, chunk_size="auto")(z, batch)`` uses: the
    fastest on this machine. ``z`` is batched (leading axis = latents) or, as for
    :func:`per_example`, one latent shared by every example (``ndim == 1``).

    On GPU/TPU: ``None`` (one ``vmap``). On CPU: ``None`` for batches of fewer than
    :data:`AUTO_MIN_BATCH` latents. Otherwise one ``vmap`` and each of
    :data:`PROBE_CHUNKS` below the batch size are timed on ``m`` stand-in latents running
    the same program :func:`per_example` builds (``vmap(fn)`` traced at the chunk's
    shape, in the same chunk loop), with every closed-over traced value (e.g. network
    weights passed to an outer ``jit``) replaced by a stand-in argument of its shape and
    dtype, since the work does not depend on the values. Concrete closed-over values
    stay constants, and a latent shared by every example is an unbatched constant of
    the program (as :func:`per_example` passes it), with the uniform value of the
    max-entropy starting point a caller makes inside its ``jit`` (XLA simplifies
    products with such a splat constant; a shared latent passed as a ``jit`` argument is
    therefore probed as if it were that constant). Stand-ins are placed on the device
    once, so no call copies them in.
    ``m`` is the batch size (at most :data:`PROBE_MAX_LATENTS`), so the probe sees the
    batch's own memory traffic; where one call on that many latents takes longer than
    :data:`PROBE_CALL_S` (e.g. many steps of iterative inference), ``m`` shrinks in
    proportion, to no fewer than :data:`PROBE_MIN_LATENTS`. If one ``vmap`` wins on
    fewer latents than the batch has, the batch runs in chunks of ``m``.

    The probe runs once per process and workload (the program's jaxpr without its
    literal values, and the batch size up to :data:`PROBE_MAX_LATENTS`) and is cached on
    disk per machine (:mod:`gbi_jax.autotune`), so a later run pays nothing. It costs
    one compilation per candidate and a few calls of at most about
    :data:`PROBE_CALL_S` each: 2-4 s for one-step inference, 10-15 s for 50 steps of
    iterative inference through a 270k-weight decoder on a 2-core CPU. The choice is
    logged at WARNING. Where it cannot run (several processes, or a per-example function
    it cannot rebuild, e.g. one closing over traced PRNG keys) the rule
    :data:`CPU_CHUNK_SIZE` is used.

    Works inside ``jit`` (it runs at trace time, outside the traced program) and changes
    only speed: chunked and unchunked results agree to float rounding.
    """
    import hashlib
    import re

    from absl import logging

    leaves = jax.tree_util.tree_leaves(batch)
    shared = z.ndim == 1
    n = leaves[0].shape[0] if leaves else z.shape[0]
    if jax.default_backend() != "cpu" or n < AUTO_MIN_BATCH:
        return None
    if jax.process_count() > 1:
        return CPU_CHUNK_SIZE
    one = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype),
                                 (z[None] if shared else z, batch))
    try:
        closed = jax.make_jaxpr(fn)(*one)
    except Exception as e:  # noqa: BLE001 - any tracing failure: fall back to the rule
        logging.warning("per_example chunk_size: no probe (%s); using %d", e, CPU_CHUNK_SIZE)
        return CPU_CHUNK_SIZE
    # The work does not depend on literal values (a learning rate, a temperature): they
    # are left out of the key, so e.g. a sweep over learning rates probes once.
    program = re.sub(r"(?<![\w.])-?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan):(?=\w+\[)", "#:",
                     str(closed.jaxpr))
    digest = hashlib.sha1(program.encode()).hexdigest()[:16]
    m_max = min(n, PROBE_MAX_LATENTS)
    key = (f"chunk_size|probe={PROBE_VERSION}|{digest}|latents={m_max}"
           + ("|shared_latent" if shared else ""))
    label = f"per_example chunk_size for {m_max}-latent batches"
    if key not in _AUTO_CHOICES:
        from gbi_jax import autotune

        value = autotune.cached(key, "none cached")
        if value == "none cached":
            value, measured = _probe_chunk_size(fn, one, m_max, label, shared)
            if measured:
                autotune.remember(key, value)
        else:
            logging.warning(autotune.Choice(value, "cached").describe(label))
        _AUTO_CHOICES[key] = value
    value = _AUTO_CHOICES[key]
    return m_max if value is None and n > m_max else value


def _probe_chunk_size(fn, one, m_max: int, label: str, shared: bool):
    """``(chunk size, measured)``: the chunk size of :func:`auto_chunk_size` for
    ``m_max``-latent batches, timed at trace time (``None``: one ``vmap``), or the rule
    and ``False`` where the probe failed.

    Each candidate runs the program :func:`per_example` builds: ``vmap(fn)`` traced at
    the chunk's shape (so batching and differentiation happen in the same order as in
    the real program), its closed-over traced values replaced by stand-ins, inside the
    same chunk loop; a latent shared by every example (``shared``) is one unbatched
    constant of the program, as in :func:`per_example`, so XLA sees the same structure."""
    import time

    import numpy as np
    from absl import logging

    from gbi_jax import autotune

    rng = np.random.default_rng(0)
    stand_ins: dict = {}

    def concrete(c):
        if not isinstance(c, jax.core.Tracer):
            return c
        if id(c) not in stand_ins:
            stand_ins[id(c)] = (c, _stand_in(c, rng))  # keeps c alive: ids stay unique
        return stand_ins[id(c)][1]

    def compiled(chunk, m):
        """The chunked program on ``m`` stand-in latents, compiled, and a blocking call."""
        rows = m if chunk is None else chunk
        spec = lambda s: jax.ShapeDtypeStruct((rows,) + s.shape, s.dtype)  # noqa: E731
        z_spec = (jax.ShapeDtypeStruct(one[0].shape, one[0].dtype) if shared
                  else jax.tree_util.tree_map(spec, one[0]))
        closed, out_shape = jax.make_jaxpr(
            jax.vmap(fn, in_axes=(None if shared else 0, 0)), return_shape=True)(
                z_spec, jax.tree_util.tree_map(spec, one[1]))
        out_tree = jax.tree_util.tree_structure(out_shape)
        # Traced values (e.g. weights given to an outer jit) become arguments, concrete
        # ones stay constants of the program, as in the real one.
        traced = [isinstance(c, jax.core.Tracer) for c in closed.consts]
        args = [concrete(c) for c, t in zip(closed.consts, traced) if t]
        batched = lambda s: _stand_in(  # noqa: E731
            jax.ShapeDtypeStruct((m,) + s.shape, s.dtype), rng)
        # One latent for every example: a uniform constant, like the max-entropy starting
        # point a caller makes inside its jit (XLA folds products with a splat).
        z_shared = np.full(one[0].shape, 1.0 / max(1, one[0].size), one[0].dtype)
        data = (None if shared else jax.tree_util.tree_map(batched, one[0]),
                jax.tree_util.tree_map(batched, one[1]))
        # On the device once: a NumPy argument would be copied in on every timed call,
        # a cost the real program (whose arguments are device arrays) does not pay.
        with jax.ensure_compile_time_eval():
            args, data = jax.device_put((args, data))

        def run(cs, zs, xs):
            it = iter(cs)
            consts = [next(it) if t else c for c, t in zip(closed.consts, traced)]

            def vfn(zc, xc):
                outs = jax.core.eval_jaxpr(closed.jaxpr, consts,
                                           *jax.tree_util.tree_leaves((zc, xc)))
                return jax.tree_util.tree_unflatten(out_tree, outs)

            if shared:
                zs = jnp.asarray(z_shared)
            return vfn(zs, xs) if chunk is None else _chunked(vfn, zs, xs, m, chunk,
                                                              shared=shared)

        with jax.ensure_compile_time_eval():
            f = jax.jit(run).lower(args, *data).compile()

        def call():
            with jax.ensure_compile_time_eval():
                jax.block_until_ready(f(args, *data))

        return call

    def seconds(call):
        t = time.perf_counter()
        call()
        return time.perf_counter() - t

    try:
        # Size the probe: one call of the rule's setting on m_max latents (warm, timed).
        m = m_max
        rule = CPU_CHUNK_SIZE if CPU_CHUNK_SIZE < m else None
        call = compiled(rule, m)
        call()
        t_call = seconds(call)
        if t_call > PROBE_CALL_S and m > PROBE_MIN_LATENTS:
            m = max(PROBE_MIN_LATENTS, int(m * PROBE_CALL_S / t_call))
            rule = CPU_CHUNK_SIZE if CPU_CHUNK_SIZE < m else None
            call = compiled(rule, m)
            call()
            t_call = seconds(call)
        # Every candidate's timed unit is the same number of calls (>= 50 ms of the rule's).
        reps = max(1, int(0.05 / max(t_call, 1e-6)))
        ready = {rule: call}

        def make_call(chunk):
            call = ready.get(chunk)
            if call is None:
                call = compiled(chunk, m)
                call()  # compiled above: this call warms up

            def unit():
                for _ in range(reps):
                    call()

            return unit

        candidates = [None] + [c for c in PROBE_CHUNKS if c < m]
        choice = autotune.pick("", candidates, make_call, use_cache=False, warm_up=False,
                               **PROBE_ROUNDS)
    except Exception as e:  # noqa: BLE001 - the probe only changes speed: use the rule
        logging.warning("%s: probe failed (%s: %s); using %d", label, type(e).__name__, e,
                        CPU_CHUNK_SIZE)
        return CPU_CHUNK_SIZE, False
    value = m if choice.value is None and m < m_max else choice.value
    logging.warning(choice.describe(f"{label} (probed on {m:,}"
                                    + (f"; one vmap there = chunks of {m:,} here" if
                                       value != choice.value else "") + ")"))
    return value, True


def chunk_size_candidates(batch_size: int) -> list[Optional[int]]:
    """Chunk sizes :func:`tune_chunk_size` tries for ``batch_size`` latents: ``None`` (one
    ``vmap``) and the powers of two from 128 to 4096 below ``batch_size``."""
    return [None] + [c for c in (128, 256, 512, 1024, 2048, 4096) if c < batch_size]


def tune_chunk_size(make_call: Callable[[Optional[int]], Callable[[], Any]], batch_size: int,
                    key: str, candidates: Optional[list] = None):
    """The fastest ``chunk_size`` of :func:`per_example` for one workload on this machine.

    ``make_call(chunk_size)`` returns a blocking zero-argument callable doing the real
    work with that chunk size (e.g. a jitted :func:`optimize_batch` on the real batch);
    ``key`` names the workload for the per-machine cache (:func:`gbi_jax.autotune.pick`,
    which also documents the cache). On GPU/TPU the answer is ``None`` without timing.
    Returns an :class:`~gbi_jax.autotune.Choice`: use ``.value``, log ``.describe()``.

    Example::

        fit = lambda c: jax.jit(lambda b: optimize_batch(loss, z0, b, opt, 50,
                                                         chunk_size=c)[0])
        choice = tune_chunk_size(lambda c: lambda: fit(c)(batch).block_until_ready(),
                                 n, key="decoder-50-steps")
    """
    from gbi_jax import autotune

    if jax.default_backend() != "cpu":
        return autotune.Choice(None, "default for accelerators")
    cands = chunk_size_candidates(batch_size) if candidates is None else candidates
    return autotune.pick(f"chunk_size|{key}|n={batch_size}", cands, make_call,
                         **PROBE_ROUNDS)


def _chunked(vfn, z: Array, batch: PyTree, n: int, c: int, shared: bool = False):
    """``vfn(z, batch)`` in ``ceil(n / c)`` chunks of ``c`` rows, one after another.

    Chunk ``i`` reads rows ``[s, s + c)`` with ``s = min(i * c, n - c)`` in place
    (``dynamic_slice``; the last chunk overlaps the one before it instead of padding, so
    no copy of the batch is made) and writes its outputs into ``[n, ...]`` buffers.
    ``shared``: ``z`` is one latent every chunk reads whole."""
    take = lambda a, s: jax.lax.dynamic_slice_in_dim(a, s, c)  # noqa: E731
    part = lambda s: (z if shared else take(z, s),  # noqa: E731
                      jax.tree_util.tree_map(lambda a: take(a, s), batch))
    shapes = jax.eval_shape(lambda: vfn(*part(0)))
    out0 = jax.tree_util.tree_map(lambda o: jnp.zeros((n,) + o.shape[1:], o.dtype), shapes)

    def body(i, out):
        s = jnp.minimum(i * c, n - c)
        return jax.tree_util.tree_map(
            lambda buf, o: jax.lax.dynamic_update_slice_in_dim(buf, o, s, 0), out, vfn(*part(s)))

    return jax.lax.fori_loop(0, -(-n // c), body, out0)


def per_example(fn: Callable[..., Any], *, latent_axis: int = 0, data_axis: int = 0,
                chunk_size: Optional[int | str] = "auto"):
    """Vectorise ``fn(z, example)`` over a batch of latents and examples.

    ``per_example(fn)(z_batch, batch)`` == ``vmap(fn)(z_batch, batch)``; ``batch``
    may be any pytree whose leaves share the leading batch axis. ``z_batch`` may be
    a single unbatched latent (``ndim == 1``) that every example starts from: ``fn``
    still runs once per example (a gradient it takes is that example's own), but the
    latent is not copied per example (``vmap`` with ``in_axes=None``), so work that
    depends on the latent alone -- the forward pass of one-step inference at the shared
    max-entropy point -- is done once per chunk, not once per example: one-step
    inference through the decoder of ``python -m benchmarks.inference`` ran 1.6x faster
    at N = 1,000 on a 2-core CPU than with the latent copied per example.

    ``chunk_size``: if set and smaller than the batch, the batch runs as a loop over
    chunks of that many examples, each one ``vmap`` (the last chunk overlaps the one
    before it; nothing is padded or copied) — the same results (to float rounding), but
    each chunk's activations stay in cache while it runs. ``"auto"`` (the default): one
    ``vmap`` on GPU/TPU; on CPU the fastest chunk size for this per-example program on
    this machine, found once by a short probe and cached (:func:`auto_chunk_size`).
    ``None``: always one ``vmap``.
    """
    auto = chunk_size == "auto"
    if not auto and chunk_size is not None and (
            isinstance(chunk_size, (str, bool)) or int(chunk_size) < 1):
        raise ValueError(f"chunk_size must be a positive integer, 'auto' or None, got "
                         f"{chunk_size!r}.")

    def wrapped(z, batch):
        leaves = jax.tree_util.tree_leaves(batch)
        if not leaves:
            raise ValueError("per_example needs a non-empty batch.")
        n = leaves[0].shape[data_axis]
        chunk = chunk_size
        if auto and latent_axis == 0 and data_axis == 0:
            chunk = auto_chunk_size(fn, z, batch)
        shared = z.ndim == 1
        vfn = jax.vmap(fn, in_axes=(None if shared else latent_axis, data_axis))
        if latent_axis != 0 or data_axis != 0:
            return vfn(z, batch)
        if chunk is None or chunk >= n:
            return vfn(z, batch)
        return _chunked(vfn, z, batch, n, int(chunk), shared=shared)

    return wrapped


def _check_outputs(outputs) -> Optional[tuple[str, ...]]:
    """``outputs`` of :func:`one_step_batch` / :func:`exhaustive_batch` as a tuple of
    :class:`OneStepResult` field names (``None``: every field)."""
    if outputs is None:
        return None
    names = (outputs,) if isinstance(outputs, str) else tuple(outputs)
    require(bool(names) and all(n in OneStepResult._fields for n in names), "outputs",
            f"must name fields of OneStepResult ({', '.join(OneStepResult._fields)}), "
            f"got {outputs!r}.")
    return names


def _keep(res: OneStepResult, outputs: Optional[tuple[str, ...]]) -> OneStepResult:
    """``res`` with the fields not named in ``outputs`` set to ``None``."""
    if outputs is None:
        return res
    return res._replace(**{f: None for f in OneStepResult._fields if f not in outputs})


def one_step_batch(example_loss_fn: Callable[[Array, PyTree], Array], z0: Array,
                   batch: PyTree, *, temperature: float = 1.0,
                   chunk_size: Optional[int | str] = "auto",
                   matmul_dtype: Any = None, grad_mode: str = "auto",
                   outputs: Optional[Sequence[str] | str] = None) -> OneStepResult:
    """:func:`one_step` for every example of ``batch`` with its own latent.

    Args:
      example_loss_fn: ``(z [K], example) -> scalar`` for ONE example.
      z0: ``[K]`` (shared starting point, not copied per example: see
        :func:`per_example`) or ``[B, K]``.
      batch: pytree with leading batch axis B.
      chunk_size: process the batch in chunks of this size (default ``"auto"``: see
        :func:`per_example`).
      matmul_dtype: see :func:`one_step`.
      grad_mode: ``"reverse"``, ``"forward"`` (see :func:`one_step`; it saves work only
        from a shared ``[K]`` latent) or ``"auto"`` (default): forward mode where it has
        well under the estimated arithmetic of reverse mode for this model and batch
        (:func:`choose_grad_mode`, decided at trace time, logged once per batch shape).
        Both give the same gradients to float rounding. For the latent-only decoder of
        ``python -m benchmarks.inference`` forward mode made one-step inference 5-10x
        faster than reverse mode at N = 1,000 and 10,000 on a 2-core CPU.
      outputs: the :class:`OneStepResult` fields to compute, e.g. ``("prediction",)``;
        the others are ``None``. Default ``None``: every field. The values do not
        depend on it, and under ``jit`` XLA drops the work of fields a caller never
        uses either way; but ``chunk_size="auto"`` times the program that computes the
        fields named here, and a program that keeps less can have another best chunk
        size. Name what you keep: through the decoder of
        ``python -m benchmarks.chunk_size`` a caller keeping only the predictions ran
        fastest as one ``vmap`` on a 2-core CPU, while with every field kept chunks of
        1,000 were fastest at N = 10,000, and ran at 0.77x one ``vmap`` for the
        smaller program.
    Returns:
      :class:`OneStepResult` whose fields have a leading axis B (``None`` for fields
      not in ``outputs``).
    """
    _check_latent(z0)
    check_matmul_dtype(matmul_dtype)
    _check_grad_mode(grad_mode, z0, auto=True)
    outputs = _check_outputs(outputs)
    if grad_mode == "auto":
        grad_mode = choose_grad_mode(example_loss_fn, z0, batch, matmul_dtype=matmul_dtype)

    def single(z, example):
        return _keep(one_step(lambda zz: example_loss_fn(zz, example), z,
                              temperature=temperature, matmul_dtype=matmul_dtype,
                              grad_mode=grad_mode), outputs)

    return per_example(single, chunk_size=chunk_size)(z0, batch)


# --------------------------------------------------------------------------
# Exhaustive scoring (the exact reference of one-step GBI).
# --------------------------------------------------------------------------
def exhaustive(loss_fn: LossFn, num_tasks: int, *, temperature: float = 1.0,
               dtype=jnp.float32) -> OneStepResult:
    """Score every one-hot latent ``e_k`` with the loss: K forward passes, no gradient.

    If the loss is a negative log-likelihood, ``L(e_k) = -log p(x | z = e_k) + const``,
    this is exact likelihood inference over the K tasks, the quantity one-step GBI
    estimates from one gradient (:func:`one_step`). The result has the type and shapes
    of :func:`one_step`'s, with the exact quantities in its fields:

    loss:       ``min_k L(e_k)``, the loss of the predicted task (scalar).
    grad:       ``[K]`` the one-hot losses ``L(e_k)``. For a loss that is linear in
                ``z`` (a mixture of per-task losses) this is exactly ``dL/dz``; in
                general it is what one-step's gradient approximates to first order.
    scores:     ``-grad`` (larger = this task explains the data better).
    posterior:  ``softmax(-L(e_k) / temperature)``: with an NLL loss and
                ``temperature = 1`` the Bayes posterior under a uniform task prior.
    prediction: ``argmin_k L(e_k)`` (int32; the first one on ties).

    Args:
      loss_fn: ``z [K] -> scalar`` with the network weights closed over.
      num_tasks: K >= 2.
      temperature: of the posterior (> 0).
      dtype: dtype of the one-hot latents.

    Returns:
      :class:`OneStepResult`. Cost: K forward passes (vmapped), against one forward and
      one backward for :func:`one_step`.
    """
    num_tasks = check_int("num_tasks", num_tasks, 2)
    check_positive("temperature", temperature)
    eye = jnp.eye(num_tasks, dtype=dtype)
    _check_scalar_loss(loss_fn, eye[0], "exhaustive_batch")
    losses = jax.vmap(loss_fn)(eye)
    scores = -losses
    posterior = jax.nn.softmax(scores / temperature, axis=-1)
    prediction = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    return OneStepResult(jnp.min(losses, axis=-1), losses, scores, posterior, prediction)


def exhaustive_batch(example_loss_fn: Callable[[Array, PyTree], Array], num_tasks: int,
                     batch: PyTree, *, temperature: float = 1.0,
                     chunk_size: Optional[int | str] = "auto", dtype=jnp.float32,
                     outputs: Optional[Sequence[str] | str] = None) -> OneStepResult:
    """:func:`exhaustive` for every example of ``batch``.

    Args:
      example_loss_fn: ``(z [K], example) -> scalar`` for ONE example.
      num_tasks: K >= 2.
      batch: pytree with leading batch axis B.
      chunk_size: process the batch in chunks of this size (default ``"auto"``: see
        :func:`per_example`).
      outputs: the fields to compute (default: every field), as in
        :func:`one_step_batch`: ``chunk_size="auto"`` times the program that computes them.
    Returns:
      :class:`OneStepResult` whose fields have a leading axis B (``grad`` is the
      ``[B, K]`` matrix of one-hot losses; ``None`` for fields not in ``outputs``).
    """
    num_tasks = check_int("num_tasks", num_tasks, 2)
    outputs = _check_outputs(outputs)

    def single(_, example):
        return _keep(exhaustive(lambda z: example_loss_fn(z, example), num_tasks,
                                temperature=temperature, dtype=dtype), outputs)

    # per_example vmaps over (latent, example) pairs; the latent is not used here, so a
    # zero-width placeholder (broadcast to every example) keeps its batching and chunking.
    return per_example(single, chunk_size=chunk_size)(jnp.zeros((0,), dtype), batch)


# --------------------------------------------------------------------------
# Iterative optimisation (recomposition).
# --------------------------------------------------------------------------
def optimize(loss_fn: LossFn, z0: Array, optimizer: optax.GradientTransformation,
             num_steps: int, *, penalty: float = 0.0, anchor: Optional[Array] = None,
             penalty_kind: str = "norm", matmul_dtype: Any = None) -> tuple[Array, OptimizeTrace]:
    """Iteratively optimise the latent with an optax optimiser, weights frozen.

    Minimises ``loss_fn(z) + penalty * dist(z, anchor)`` for ``num_steps`` steps in
    one ``lax.scan``. The penalty is the L2 pull toward the max-entropy point that
    stands in for the entropy term of the E-step (Hummos et al. 2024, Eqs. 4-6).

    Args:
      loss_fn: ``z -> scalar``.
      z0: initial latent (usually :func:`max_entropy_latent`).
      optimizer: any ``optax.GradientTransformation`` (e.g. ``optax.sgd(0.3, 0.5)``).
      num_steps: number of updates (static, >= 0).
      penalty: weight of the distance to ``anchor`` (>= 0).
      anchor: the max-entropy point; defaults to ``z0``.
      penalty_kind: ``"norm"`` (authors' choice) or ``"squared"``.
      matmul_dtype: ``None`` (float32), ``"bfloat16"`` or ``"auto"``: the matrix
        products of the loss and its gradient take bfloat16 operands with float32
        accumulation (:func:`gbi_jax.precision.with_matmul_dtype`); the latent, the
        gradient and the optimiser state stay float32. About 2x faster where the
        hardware multiplies bfloat16 natively (``avx512_bf16``/AMX CPUs, GPUs, TPUs),
        slower than float32 on CPUs without (``"auto"`` then keeps float32:
        :func:`gbi_jax.precision.resolve_matmul_dtype`); its effect on the inferred
        latents is measured by ``python -m benchmarks.inference``.

    Returns:
      ``(z_final, trace)`` with ``trace`` an :class:`OptimizeTrace` of length
      ``num_steps``.
    """
    _check_latent(z0)
    num_steps = check_int("num_steps", num_steps, 0)
    anchor = z0 if anchor is None else anchor
    value_and_grad = with_matmul_dtype(jax.value_and_grad(loss_fn), matmul_dtype)

    def step(carry, _):
        z, opt_state = carry
        loss, g_loss = value_and_grad(z)
        pen = l2_penalty(z, anchor, penalty_kind)
        g = g_loss + penalty * jax.grad(l2_penalty)(z, anchor, penalty_kind)
        updates, opt_state = optimizer.update(g, opt_state, z)
        z = optax.apply_updates(z, updates)
        gnorm = jnp.sqrt(jnp.sum(g * g))
        return (z, opt_state), OptimizeTrace(loss, loss + penalty * pen, z, gnorm)

    (z_final, _), trace = jax.lax.scan(step, (z0, optimizer.init(z0)), None,
                                       length=num_steps)
    return z_final, trace


def optimize_batch(example_loss_fn: Callable[[Array, PyTree], Array], z0: Array,
                   batch: PyTree, optimizer: optax.GradientTransformation, num_steps: int, *,
                   anchor: Optional[Array] = None, chunk_size: Optional[int | str] = "auto",
                   **kwargs) -> tuple[Array, OptimizeTrace]:
    """:func:`optimize` run independently for every example (``vmap``).

    ``z0`` is ``[K]`` (broadcast) or ``[B, K]``; ``anchor`` likewise ``[K]`` (shared)
    or ``[B, K]`` (one per example); it defaults to each example's ``z0``.
    ``chunk_size`` processes the batch in cache-sized chunks (see :func:`per_example`);
    other keywords (``penalty``, ``matmul_dtype``, ...) go to :func:`optimize`.
    """
    _check_latent(z0)

    def single(z, example_and_anchor):
        example, anc = example_and_anchor
        return optimize(lambda zz: example_loss_fn(zz, example), z, optimizer, num_steps,
                        anchor=anc, **kwargs)

    n = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if z0.ndim == 1:
        z0 = jnp.broadcast_to(z0, (n,) + z0.shape)
    anchors = z0 if anchor is None else jnp.broadcast_to(anchor, z0.shape)
    return per_example(single, chunk_size=chunk_size)(z0, (batch, anchors))


def normalized_sgd(learning_rate: float, momentum: float = 0.0) -> optax.GradientTransformation:
    """SGD (with optional momentum) on the unit-normalised gradient of the latent.

    From the max-entropy point the first step moves along ``-g / ||g||``, so its argmax
    is the one-step answer (:func:`one_step`), and ``learning_rate`` is a step length in
    latent space whatever the scale of the loss (a loss summed over a long window and
    one averaged over it give the same trajectory)."""
    check_positive("learning_rate", learning_rate)
    return optax.chain(optax.normalize_by_update_norm(scale_factor=1.0),
                       optax.sgd(learning_rate, momentum=momentum or None))


# --------------------------------------------------------------------------
# Online inference along a sequence.
# --------------------------------------------------------------------------
def _window_at(padded: PyTree, t: Array, window: int) -> PyTree:
    return jax.tree_util.tree_map(
        lambda a: jax.lax.dynamic_slice_in_dim(a, t, window, axis=0), padded)


def online(loss_fn: Callable[[Array, PyTree, Array], tuple[Array, PyTree]], z0: Array,
           sequence: PyTree, optimizer: optax.GradientTransformation, *, window: int,
           num_steps: int = 1, penalty: float = 0.0, anchor: Optional[Array] = None,
           penalty_kind: str = "norm") -> tuple[Array, OnlineTrace]:
    """Online latent inference: a few latent updates per new observation.

    At time ``t`` the window holds the last ``window`` observations
    ``sequence[t - window + 1 : t + 1]`` (zero-padded before the start, with a
    boolean ``mask`` marking real entries). The loss of the window is evaluated at
    the latent carried in from ``t - 1``; then ``num_steps`` optimiser steps are
    applied and the latent (and optimiser state, e.g. momentum) is carried to
    ``t + 1``: a slow latent shared across the window, recurrent state recomputed
    inside the window (the online protocol of Hummos et al. 2024, Sec. 3.1, Fig. S7).

    Args:
      loss_fn: ``(z, window_obs, mask) -> (loss, aux)``; ``window_obs`` is the
        sequence pytree sliced to ``[window, ...]``; ``mask`` is ``bool[window]``.
        ``aux`` is emitted per step (e.g. the prediction of the newest element).
      z0: initial latent, e.g. the max-entropy point.
      sequence: pytree with a leading time axis of length T.
      optimizer: optax optimiser on the latent.
      window: number of observations in the window (H >= 1).
      num_steps: optimiser steps per time step (>= 1).
      penalty, anchor, penalty_kind: as in :func:`optimize`.

    Returns:
      ``(z_final, trace)``; ``trace`` is an :class:`OnlineTrace` of length T.
    """
    _check_latent(z0)
    window = check_int("window", window, 1)
    num_steps = check_int("num_steps", num_steps, 1)
    anchor = z0 if anchor is None else anchor
    length = jax.tree_util.tree_leaves(sequence)[0].shape[0]
    padded = jax.tree_util.tree_map(
        lambda a: jnp.concatenate([jnp.zeros((window - 1,) + a.shape[1:], a.dtype), a]),
        sequence)

    def objective_grad(zz, obs, mask):
        (loss, aux), g = jax.value_and_grad(lambda q: loss_fn(q, obs, mask), has_aux=True)(zz)
        g_obj = g + penalty * jax.grad(l2_penalty)(zz, anchor, penalty_kind)
        return loss, aux, g, g_obj

    def apply(zi, si, g):
        upd, si = optimizer.update(g, si, zi)
        return optax.apply_updates(zi, upd), si

    def step(carry, t):
        z, opt_state = carry
        obs = _window_at(padded, t, window)
        mask = jnp.arange(window) >= (window - 1 - t)
        loss0, aux0, g0, g_obj = objective_grad(z, obs, mask)
        z_new, opt_state = apply(z, opt_state, g_obj)

        def more(inner, _):
            zi, si = inner
            return apply(zi, si, objective_grad(zi, obs, mask)[3]), None

        if num_steps > 1:
            (z_new, opt_state), _ = jax.lax.scan(more, (z_new, opt_state), None,
                                                 length=num_steps - 1)
        return (z_new, opt_state), OnlineTrace(loss0, g0, z_new, aux0)

    (z_final, _), trace = jax.lax.scan(step, (z0, optimizer.init(z0)), jnp.arange(length))
    return z_final, trace


# --------------------------------------------------------------------------
# Uncertainty / OOD.
# --------------------------------------------------------------------------
def ood_scores(loss_fn: LossFn, z0: Array, *, temperature: float = 1.0,
               step_size: float = 1.0) -> OODScores:
    """The one-pass uncertainty / OOD scores of one example (Hummos et al. 2024, Sec. 3.2).

    Uses one forward+backward at ``z0`` plus one extra forward at the updated
    latent ``z0 - step_size * g``. Vectorise over examples with ``jax.vmap`` or
    :func:`per_example`.
    """
    res = one_step(loss_fn, z0, temperature=temperature)  # validates z0 and temperature
    z1 = z0 - step_size * res.grad
    return OODScores(
        loss=res.loss,
        max_score=jnp.max(res.scores, axis=-1),
        grad_norm=jnp.sqrt(jnp.sum(res.grad * res.grad, axis=-1)),
        posterior_entropy=entropy(res.posterior),
        loss_after_step=loss_fn(z1),
    )
