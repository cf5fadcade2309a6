"""Shared helpers for the benchmark scripts: timing, matmul peak, machine info.

Benchmarks are scripts, not tests: they time the project against a PyTorch peer on
the same work and report ratios. Every timed callable passed to :func:`median_time`
must *block* until its result is ready (``jax.block_until_ready`` for JAX; PyTorch
CPU ops are synchronous).
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Optional



def define_run_flags(quick_help: str, out_default: Optional[str], out_help: str):
    """``--quick`` and ``--out``, the two flags every benchmark has: a short run that prints
    only, and the Markdown file a full run writes (``''`` disables). Returns both holders."""
    from absl import flags

    return (flags.DEFINE_bool("quick", False, quick_help),
            flags.DEFINE_string("out", out_default, out_help))

def median_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time (seconds) of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(fns: dict[str, Callable[[], Any]], *, repeats: int = 5,
                        warmup: int = 1) -> dict[str, float]:
    """Median wall time of each callable, timed round-robin.

    Every repeat runs each callable once in turn, so a change of load on a shared
    machine hits all of them alike and their *ratios* stay meaningful.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def jax_matmul_fn(n: int = 2048) -> tuple[Callable[[], Any], float]:
    """``(blocking callable, flops)`` for one jitted float32 ``[n, n] @ [n, n]``."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return (lambda: dot(a, b).block_until_ready()), 2.0 * n ** 3


def torch_matmul_fn(n: int = 2048) -> tuple[Callable[[], Any], float]:
    """``(callable, flops)`` for one float32 ``torch.mm`` of two ``[n, n]`` matrices."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g, dtype=torch.float32)
    b = torch.randn(n, n, generator=g, dtype=torch.float32)
    out = torch.empty(n, n, dtype=torch.float32)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * n ** 3


def jax_matmul_peak(n: int = 2048, *, repeats: int = 7) -> float:
    """Measured float32 FLOP/s of one jitted ``[n, n] @ [n, n]`` (``2 n^3`` FLOPs)."""
    fn, flops = jax_matmul_fn(n)
    return flops / median_time(fn, repeats=repeats, warmup=2)


def torch_matmul_peak(n: int = 2048, *, repeats: int = 7) -> float:
    """Measured float32 FLOP/s of one ``torch.mm`` of two ``[n, n]`` matrices."""
    fn, flops = torch_matmul_fn(n)
    return flops / median_time(fn, repeats=repeats, warmup=2)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """Machine and library facts to print next to every benchmark table."""
    import jax

    info = {
        "date (UTC)": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "os.cpu_count()": str(os.cpu_count()),
        "usable cores (sched_getaffinity)": (str(len(os.sched_getaffinity(0)))
                                             if hasattr(os, "sched_getaffinity") else "n/a"),
        "load average (1, 5, 15 min) at start": (
            ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg")
            else "n/a"),
        "python": sys.version.split()[0],
        "jax devices": ", ".join(str(d) for d in jax.devices()),
    }
    try:
        import jaxlib

        info["jax / jaxlib"] = f"{jax.__version__} / {jaxlib.__version__}"
    except ImportError:
        info["jax"] = jax.__version__
    for mod in ("flax", "optax", "numpy", "torch"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            info[mod] = "not installed"
    for var in ("XLA_FLAGS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "MKL_NUM_THREADS"):
        if var in os.environ:
            info[f"${var}"] = os.environ[var]
    if extra:
        info.update(extra)
    return info


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def plain_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    out = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*r) for r in rows]
    return "\n".join(out)


def xla_op_profile(fn: Callable[[], Any], hlo_text: str, *, calls: int = 1, devices: int = 1,
                   top: int = 25) -> tuple[list[dict], float]:
    """Per-HLO-op CPU time of one ``fn()`` call, from a ``jax.profiler`` trace.

    Needs ``--xla_cpu_enable_xprof_traceme=true`` in ``XLA_FLAGS`` *before* JAX starts
    (then the XLA CPU runtime records every executed op). ``fn`` must block, and be
    compiled already (call it once first). ``hlo_text`` (``compiled.as_text()``) maps op
    names to result shapes and their JAX source (``op_name`` metadata).

    Ops run on the XLA worker threads (``tf_XLAEigen``) or inline on the client thread
    (``tf_XLAPjRtCpuClient``); both are counted. Only events named after an op of
    ``hlo_text`` are: the runtime's bookkeeping (``ThunkExecutor...``,
    ``ThreadpoolListener...``, the ``end: <op>`` markers of asynchronous completion, which
    can take time under load) is not an op.

    Returns ``(rows, wall_s)``: ``rows`` sorted by time, each ``{"op", "ms", "count",
    "shape", "source"}`` with ``ms`` and ``count`` summed over all executions in one ``fn()``
    call and divided by ``devices`` (the program runs once per device), i.e. per device;
    loops (``while``) include their body's ops, so their rows overlap the rows of those ops.
    """
    import collections
    import glob
    import re
    import tempfile

    import jax

    if "xla_cpu_enable_xprof_traceme=true" not in os.environ.get("XLA_FLAGS", ""):
        raise RuntimeError("xla_op_profile needs XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true "
                           "set before JAX is imported.")
    info = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = (\S+) ", line)
        if m:
            src = re.search(r'op_name="([^"]*)"', line)
            info[m.group(1)] = (m.group(2).split("{")[0], src.group(1) if src else "")
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            wall = (time.perf_counter() - t0) / calls
        path = sorted(glob.glob(os.path.join(d, "**", "*.xplane.pb"), recursive=True))[-1]
        data = jax.profiler.ProfileData.from_file(path)
        total = collections.Counter()
        count = collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                if not line.name.startswith(("tf_XLAEigen", "tf_XLAPjRtCpuClient")):
                    continue
                for ev in line.events:
                    if ev.name not in info:
                        continue
                    total[ev.name] += ev.duration_ns
                    count[ev.name] += 1
    rows = []
    for name, ns in total.most_common(top):
        shape, src = info.get(name, ("", ""))
        rows.append({"op": name, "ms": ns / 1e6 / devices / calls,
                     "count": count[name] / devices / calls, "shape": shape, "source": src})
    return rows, wall


def matmul_flops(fn: Callable[..., Any], *args) -> float:
    """Matmul FLOPs of one call ``fn(*args)``, counted in its jaxpr: ``2 x`` output size
    ``x`` contracted size of every ``dot_general``, scan bodies times their length,
    ``shard_map`` bodies times the mesh size (while loops: once)."""
    import math

    import jax

    def count(jaxpr) -> float:
        total = 0.0
        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            if name == "dot_general":
                (lhs_c, _), _ = eqn.params["dimension_numbers"]
                lhs = eqn.invars[0].aval.shape
                total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(
                    lhs[d] for d in lhs_c)
                continue
            scale = float(eqn.params["length"]) if name == "scan" else 1.0
            if name == "shard_map":
                scale = float(eqn.params["mesh"].size)
            for sub in jax.core.jaxprs_in_params(eqn.params):
                total += scale * count(sub)
        return total

    return count(jax.make_jaxpr(fn)(*args).jaxpr)
