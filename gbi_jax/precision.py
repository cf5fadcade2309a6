"""Reduced-precision matmuls for frozen-weight work (latent inference).

:func:`with_matmul_dtype` rewrites a function so that every float32 matrix product in
it -- including the products of its backward pass, when the function is a
``jax.grad``/``value_and_grad`` -- takes its two operands in a narrower dtype
(``bfloat16`` by default) and accumulates and returns float32. Everything else
(elementwise ops, reductions, the latent and the optimiser state) stays float32.

Why: latent inference is GEMM-bound (the frozen decoder's forward and input-gradient
products are almost all of its FLOPs), and CPUs with ``avx512_bf16`` / AMX and every
GPU/TPU multiply bfloat16 at two or more times their float32 rate. Rounding the
operands to bfloat16 (8 bits of mantissa) perturbs each product by a relative
~2^-9 per term; the accumulation in float32 keeps sums of many terms accurate. What
that does to a given inference (agreement of the predicted tasks with float32, error
of the final latent) depends on the model and is measured in ``benchmarks.inference``.

The rewrite works on the function's jaxpr, so it applies to any model (Flax, plain
``jnp``) without changing its code: it traces ``fn`` once per call signature (inside
``jit`` that is once per compilation), replaces ``dot_general`` equations whose
operands are float32, and recurses into ``jit``, ``scan``, ``while``, ``cond`` and
custom-derivative sub-programs. Gradients must be taken *before* the rewrite (rewrite
``value_and_grad(loss)``, not ``loss``): the rewritten function is for evaluation.

Example::

    vg = precision.with_matmul_dtype(jax.value_and_grad(loss_fn), jnp.bfloat16)
    loss, grad = vg(z)          # bf16 products, f32 accumulation, f32 results

Where it pays: bfloat16 products are only faster where the hardware multiplies
bfloat16 natively. Measured with 2048 x 2048 products (bfloat16 operands, float32
accumulation, against float32; ``python -m benchmarks.inference``): 2.05x on an AMD
EPYC with ``avx512_bf16`` (708 against 346 GFLOP/s), but 0.68x on an AMD EPYC with
AVX2 only (95 against 140 GFLOP/s), where XLA converts the operands and multiplies in
float32. ``matmul_dtype="auto"`` (:func:`resolve_matmul_dtype`) therefore takes
bfloat16 on GPUs, TPUs and CPUs with ``avx512_bf16``, AMX-BF16 or Arm's BF16 extension
(:func:`native_bf16`), and float32 elsewhere; asking for ``"bfloat16"`` on a CPU without
them logs a warning once per process. CPUs whose flags cannot be read (no
``/proc/cpuinfo``) count as without.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jex_core

__all__ = ["with_matmul_dtype", "check_matmul_dtype", "resolve_matmul_dtype", "native_bf16",
           "cpu_flags", "MATMUL_DTYPES", "AUTO", "BF16_CPU_FLAGS"]

MATMUL_DTYPES = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}
AUTO = "auto"
# CPU flags (``/proc/cpuinfo``) of native bfloat16 products: AVX-512 BF16 and AMX-BF16
# (x86), FEAT_BF16 (Arm, listed as ``bf16``).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags: the ``flags`` (x86) or ``Features`` (Arm) line of
    ``/proc/cpuinfo``; empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features") and ":" in line:
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(platform: Optional[str] = None, flags: Optional[frozenset] = None) -> bool:
    """Whether ``platform`` (default: JAX's default backend) multiplies bfloat16 natively:
    every GPU and TPU, and a CPU with one of :data:`BF16_CPU_FLAGS` (``flags``, default
    :func:`cpu_flags`)."""
    platform = jax.default_backend() if platform is None else platform
    if platform != "cpu":
        return True
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


_warned_bf16 = False  # the slow-bfloat16 warning is logged once per process


def resolve_matmul_dtype(matmul_dtype: Any) -> Optional[Any]:
    """:func:`check_matmul_dtype` (``"auto"``: bfloat16 where :func:`native_bf16`, else
    ``None``), warning once per process when an explicit bfloat16 is asked for on a CPU
    without native bfloat16 products, where it runs slower than float32."""
    global _warned_bf16
    dt = check_matmul_dtype(matmul_dtype)
    if dt == np.dtype(jnp.bfloat16) and not _warned_bf16 and not native_bf16():
        from absl import logging

        _warned_bf16 = True
        logging.warning(
            "matmul_dtype=bfloat16 on a CPU without native bfloat16 products (none of %s "
            "in its flags): XLA converts the operands and multiplies in float32, slower "
            "than float32 products; matmul_dtype='auto' picks float32 here.",
            "/".join(BF16_CPU_FLAGS))
    return dt


def check_matmul_dtype(matmul_dtype: Any) -> Optional[Any]:
    """``None`` (full float32) or the numpy dtype of ``matmul_dtype`` (``"bfloat16"``,
    ``jnp.bfloat16``, ``"float16"``; ``"auto"``: bfloat16 where :func:`native_bf16`, else
    ``None``); anything else is a ``ValueError`` naming the choices."""
    if matmul_dtype is None:
        return None
    if isinstance(matmul_dtype, str) and matmul_dtype == AUTO:
        return np.dtype(jnp.bfloat16) if native_bf16() else None
    if isinstance(matmul_dtype, str):
        if matmul_dtype not in MATMUL_DTYPES:
            raise ValueError(f"matmul_dtype must be None, 'auto' or one of "
                             f"{sorted(MATMUL_DTYPES)}, got {matmul_dtype!r}.")
        return np.dtype(MATMUL_DTYPES[matmul_dtype])
    try:
        dt = np.dtype(matmul_dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in {np.dtype(v) for v in MATMUL_DTYPES.values()}:
        raise ValueError(f"matmul_dtype must be None, 'auto' or one of "
                         f"{sorted(MATMUL_DTYPES)}, got {matmul_dtype!r}.")
    return dt


def with_matmul_dtype(fn: Callable, matmul_dtype: Any = jnp.bfloat16) -> Callable:
    """``fn`` with every float32 ``dot_general`` computed from ``matmul_dtype`` operands
    with float32 accumulation and float32 results (see the module docstring).

    ``matmul_dtype=None`` returns ``fn`` itself, and so does ``"auto"`` where it resolves
    to float32 (:func:`resolve_matmul_dtype`). The wrapped function takes and returns the
    same pytrees as ``fn``.
    """
    dtype = resolve_matmul_dtype(matmul_dtype)
    if dtype is None:
        return fn

    def wrapped(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        flat = _eval(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args), dtype)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), flat)

    return wrapped


def _is_f32(x) -> bool:
    return np.dtype(getattr(x, "dtype", np.float64)) == np.float32


def _rewrite_closed(closed, dtype):
    """The ClosedJaxpr ``closed`` with its products rewritten (same signature)."""
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in closed.in_avals]
    return jax.make_jaxpr(lambda *a: _eval(closed.jaxpr, closed.consts, list(a), dtype))(*specs)


def _rewrite_param(value, dtype):
    if isinstance(value, jex_core.ClosedJaxpr):
        return _rewrite_closed(value, dtype)
    if isinstance(value, (tuple, list)) and value and all(
            isinstance(v, jex_core.ClosedJaxpr) for v in value):
        return type(value)(_rewrite_closed(v, dtype) for v in value)
    return value


# Sub-program parameters evaluated inline (their primitive is a call whose result is
# the sub-program's): jit, and the primal of custom-derivative functions (the rewritten
# function is evaluated, not differentiated, so their derivative rules are not needed).
_INLINE = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
           "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
           "custom_vjp_call_jaxpr": "fun_jaxpr", "remat": "jaxpr", "checkpoint": "jaxpr"}
# Control flow whose ClosedJaxpr parameters are rewritten and then bound as they were.
_REWRITE = {"scan": ("jaxpr",), "while": ("cond_jaxpr", "body_jaxpr"), "cond": ("branches",)}


def _eval(jaxpr, consts, args, dtype) -> list:
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, consts):
        env[v] = c
    for v, a in zip(jaxpr.invars, args):
        env[v] = a
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name == "dot_general" and len(invals) == 2 and all(map(_is_f32, invals)):
            params = dict(eqn.params, preferred_element_type=np.dtype(np.float32))
            outs = eqn.primitive.bind(*(x.astype(dtype) for x in invals), **params)
        elif name in _INLINE and _INLINE[name] in eqn.params:
            sub = eqn.params[_INLINE[name]]
            if isinstance(sub, jex_core.ClosedJaxpr):
                outs = _eval(sub.jaxpr, sub.consts, invals, dtype)
            else:  # an open Jaxpr (no consts)
                outs = _eval(sub, [], invals, dtype)
        elif name in _REWRITE:
            params = {k: (_rewrite_param(v, dtype) if k in _REWRITE[name] else v)
                      for k, v in eqn.params.items()}
            outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))
        else:
            outs = eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(eqn.params))
        if not eqn.primitive.multiple_results:
            outs = [outs]
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
    return [read(v) for v in jaxpr.outvars]
