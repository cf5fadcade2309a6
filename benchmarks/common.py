"""Shared helpers for the benchmark scripts: timing, matmul peaks, machine info, and
PyTorch work run in one process per core.

Benchmarks are scripts, not tests: they time the project against PyTorch peers on
the same work and report ratios. Every timed callable passed to :func:`median_time`
must *block* until its result is ready (``jax.block_until_ready`` for JAX; PyTorch
CPU ops are synchronous).

* Peaks (:func:`measure_peaks`, :class:`Peaks`): the float32 matmul rate of this machine
  (jitted ``jnp.dot`` and ``torch.mm`` of two ``[n, n]`` matrices, and one 1-thread
  ``torch.mm`` per core in :class:`ProcessPool` workers, summed), and the bfloat16 rate
  with float32 accumulation where the CPU multiplies bfloat16 natively. :func:`share`
  writes any achieved rate as GFLOP/s and percentages of those peaks.
* One process per core (:class:`ProcessPool`): P spawned workers with one PyTorch thread
  each, each doing ``1/P`` of the work, started together at a barrier and timed by the
  parent until all are done; ``pool.fn(name)`` is a callable for
  :func:`interleaved_medians`, so the workers are timed round-robin with the in-process
  variants.
"""

from __future__ import annotations

import dataclasses
import datetime
import multiprocessing
import os
import platform
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Optional, Sequence



def define_run_flags(quick_help: str, out_default: Optional[str], out_help: str):
    """``--quick`` and ``--out``, the two flags every benchmark has: a short run that prints
    only, and the Markdown file a full run writes (``''`` disables). Returns both holders."""
    from absl import flags

    return (flags.DEFINE_bool("quick", False, quick_help),
            flags.DEFINE_string("out", out_default, out_help))

def usable_cores() -> int:
    """Cores this process may run on (``sched_getaffinity``; ``os.cpu_count()`` elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _timed_call(fn: Callable[[], Any]) -> float:
    """Seconds of one ``fn()``: its wall time, or what it returns if it is *self-timed*
    (``fn.self_timed`` true, e.g. :meth:`ProcessPool.fn`: the time from the workers' start
    barrier to the last one done, without the parent's messaging)."""
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    return float(out) if getattr(fn, "self_timed", False) else wall


def median_time(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time (seconds) of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    for _ in range(warmup):
        fn()
    return statistics.median(_timed_call(fn) for _ in range(repeats))


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
            times[k].append(_timed_call(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def jax_matmul_fn(n: int = 2048, dtype: str = "float32") -> tuple[Callable[[], Any], float]:
    """``(blocking callable, flops)`` for one jitted ``[n, n] @ [n, n]``.

    ``dtype="bfloat16"``: bfloat16 operands with float32 accumulation and result
    (``jnp.dot(a, b, preferred_element_type=jnp.float32)``)."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    return (lambda: dot(a, b).block_until_ready()), 2.0 * n ** 3


def torch_matmul_fn(n: int = 2048, dtype: str = "float32") -> tuple[Callable[[], Any], float]:
    """``(callable, flops)`` for one ``torch.mm`` of two ``[n, n]`` matrices of ``dtype``
    (``"bfloat16"``: PyTorch accumulates in float32 and rounds the result to bfloat16)."""
    import torch

    dt = getattr(torch, dtype)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dt)
    b = torch.randn(n, n, generator=g).to(dt)
    out = torch.empty(n, n, dtype=dt)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * n ** 3


def jax_matmul_peak(n: int = 2048, *, repeats: int = 7) -> float:
    """Measured float32 FLOP/s of one jitted ``[n, n] @ [n, n]`` (``2 n^3`` FLOPs)."""
    fn, flops = jax_matmul_fn(n)
    return flops / median_time(fn, repeats=repeats, warmup=2)


def torch_matmul_peak(n: int = 2048, *, repeats: int = 7) -> float:
    """Measured float32 FLOP/s of one ``torch.mm`` of two ``[n, n]`` matrices."""
    fn, flops = torch_matmul_fn(n)
    return flops / median_time(fn, repeats=repeats, warmup=2)


# --------------------------------------------------------------------------
# CPU features.
# --------------------------------------------------------------------------
MATMUL_FLAGS = ("fma", "avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_flags() -> dict[str, bool]:
    """Which of the CPU features that decide matmul speed (`MATMUL_FLAGS`) the CPU has
    (``gbi_jax.precision.cpu_flags``: ``/proc/cpuinfo``; all false where it cannot be
    read)."""
    from gbi_jax.precision import cpu_flags as flags  # imports JAX: only where it is called

    have = flags()
    return {k: k in have for k in MATMUL_FLAGS}


def has_bf16() -> bool:
    """The CPU multiplies bfloat16 natively: the rule of ``matmul_dtype="auto"``
    (``gbi_jax.precision.native_bf16``: ``avx512_bf16``, AMX-BF16 or Arm BF16)."""
    from gbi_jax.precision import native_bf16  # imports JAX: only where it is called

    return native_bf16("cpu")


# --------------------------------------------------------------------------
# One process per core.
# --------------------------------------------------------------------------
def split_range(n: int, parts: int, rank: int) -> tuple[int, int]:
    """``[start, stop)`` of part ``rank`` when ``n`` items are split into ``parts`` near-equal
    contiguous parts (the larger first)."""
    base, extra = divmod(n, parts)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _pool_worker(rank: int, procs: int, threads: int, pin: Optional[int], workloads: dict,
                 conn, barrier) -> None:
    """Worker loop of :class:`ProcessPool`: build every workload, then run on command."""
    try:
        if pin is not None:
            os.sched_setaffinity(0, {pin})
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass
        fns = {name: build(rank, procs, *args) for name, (build, args) in workloads.items()}
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", None))
    last: dict[str, Any] = {}
    while True:
        cmd, name = conn.recv()
        if cmd == "stop":
            return
        if cmd == "fetch":
            conn.send(("result", last.get(name)))
            continue
        barrier.wait()
        t0 = time.perf_counter()  # CLOCK_MONOTONIC: comparable between processes
        try:
            last[name] = fns[name]()
        except BaseException:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))
            continue
        conn.send(("done", (t0, time.perf_counter())))


class ProcessPool:
    """``procs`` worker processes (default: the usable cores), one PyTorch thread each.

    Each workload is a picklable builder ``(fn, args)``: ``fn(rank, procs, *args)``, a
    module-level function, runs once in every worker when the pool starts (spawned: a
    fresh interpreter, so ``fn``'s module should not start JAX) and returns the
    callable that does worker ``rank``'s share (``1/procs``, e.g. `split_range`) of one
    run. Workers are spawned once; every :meth:`run` starts all of them together at a
    barrier and is timed from the barrier's release to the last worker done (each worker
    reports when it started and finished on the system-wide monotonic clock, so the
    time does not depend on when the parent itself is scheduled).

    ``pool.fn(name)`` is a self-timed callable for :func:`interleaved_medians` (it
    returns that time). ``pool.fetch(name)`` returns each worker's result of its last
    run (outside the timing); ``pool.worker_times[name]`` each run's per-worker seconds.
    ``pin=True`` pins worker ``r`` to the ``r``-th usable core (default: the kernel
    schedules them). Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, workloads: dict[str, tuple[Callable[..., Callable[[], Any]], tuple]],
                 procs: Optional[int] = None, *, threads: int = 1, pin: bool = False,
                 timeout: float = 1800.0):
        ctx = multiprocessing.get_context("spawn")
        self.procs = int(procs or usable_cores())
        self.timeout = timeout
        self.worker_times: dict[str, list[list[float]]] = {k: [] for k in workloads}
        self._barrier = ctx.Barrier(self.procs + 1)
        self._conns, self._workers = [], []
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        env_keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
        saved = {k: os.environ.get(k) for k in env_keys}
        os.environ.update({k: str(threads) for k in env_keys})  # inherited by the workers
        try:
            for rank in range(self.procs):
                parent, child = ctx.Pipe()
                pin_to = cores[rank % len(cores)] if pin and cores else None
                p = ctx.Process(target=_pool_worker, daemon=True,
                                args=(rank, self.procs, threads, pin_to, workloads, child,
                                      self._barrier))
                p.start()
                child.close()
                self._conns.append(parent)
                self._workers.append(p)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        try:
            for conn in self._conns:
                self._recv(conn, "ready")
        except BaseException:
            self.close()
            raise

    def _recv(self, conn, expect: str):
        if not conn.poll(self.timeout):
            raise RuntimeError(f"a pool worker sent nothing in {self.timeout:.0f} s")
        try:
            kind, value = conn.recv()
        except EOFError:
            codes = [p.exitcode for p in self._workers]
            raise RuntimeError(f"a pool worker died (exit codes {codes})") from None
        if kind == "error":
            raise RuntimeError(f"pool worker failed:\n{value}")
        if kind != expect:
            raise RuntimeError(f"pool worker sent {kind!r}, expected {expect!r}")
        return value

    def run(self, name: str) -> float:
        """One run of workload ``name`` in every worker; seconds from the start barrier to
        the last worker done."""
        for conn in self._conns:
            conn.send(("run", name))
        try:
            self._barrier.wait(self.timeout)
        except Exception as e:  # BrokenBarrierError: a worker is gone
            codes = [p.exitcode for p in self._workers]
            raise RuntimeError(f"pool workers did not start (exit codes {codes})") from e
        t0 = time.perf_counter()
        spans = [self._recv(conn, "done") for conn in self._conns]
        # From the barrier's release (the first process to wake: with P workers on P cores
        # the parent may be scheduled after the workers) to the last worker done.
        # ``perf_counter`` is CLOCK_MONOTONIC on Linux, one clock for all processes.
        wall = max(b for _, b in spans) - min([t0] + [a for a, _ in spans])
        self.worker_times[name].append([b - a for a, b in spans])
        return wall

    def fn(self, name: str) -> Callable[[], float]:
        """A self-timed callable running workload ``name`` once (see :meth:`run`)."""
        def call() -> float:
            return self.run(name)

        call.self_timed = True
        return call

    def fetch(self, name: str) -> list:
        """Each worker's result of its last run of ``name`` (``None`` before any)."""
        for conn in self._conns:
            conn.send(("fetch", name))
        return [self._recv(conn, "result") for conn in self._conns]

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop", None))
            except (OSError, ValueError):
                pass
        for p in self._workers:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for conn in self._conns:
            conn.close()
        self._conns, self._workers = [], []

    def __enter__(self) -> "ProcessPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def torch_mm_builder(rank: int, procs: int, n: int, dtype: str = "float32") -> Callable[[], Any]:
    """:class:`ProcessPool` workload: one ``torch.mm`` of two ``[n, n]`` matrices per run
    (every worker does a whole product: the pool's rate is the sum over cores)."""
    del rank, procs
    return torch_matmul_fn(n, dtype)[0]


# --------------------------------------------------------------------------
# Peaks.
# --------------------------------------------------------------------------
@dataclasses.dataclass
class Peaks:
    """Measured matmul rates of this machine (FLOP/s; ``None``: not measured).

    ``fp32_jax`` / ``fp32_torch``: one jitted ``jnp.dot`` / one ``torch.mm`` (all the
    process's threads) of two ``[n, n]`` float32 matrices; ``fp32_per_core``: one
    1-thread ``torch.mm`` per core in a :class:`ProcessPool`, run together, summed.
    ``bf16_jax`` / ``bf16_torch``: the same products with bfloat16 operands and float32
    accumulation (measured where the CPU has bfloat16 instructions, `has_bf16`).
    """

    n: int
    fp32_jax: float
    fp32_torch: float
    fp32_per_core: Optional[float] = None
    bf16_jax: Optional[float] = None
    bf16_torch: Optional[float] = None

    @property
    def fp32(self) -> float:
        """The fp32 peak: the fastest of the fp32 measurements."""
        return max(x for x in (self.fp32_jax, self.fp32_torch, self.fp32_per_core)
                   if x is not None)

    @property
    def bf16(self) -> Optional[float]:
        """The bf16 peak (``None`` where not measured)."""
        vals = [x for x in (self.bf16_jax, self.bf16_torch) if x is not None]
        return max(vals) if vals else None

    def describe(self) -> str:
        """One line: every measured peak in GFLOP/s."""
        g = lambda x: "-" if x is None else f"{x / 1e9:,.0f}"  # noqa: E731
        out = (f"fp32 peak {g(self.fp32)} GFLOP/s (jnp.dot {g(self.fp32_jax)}, torch.mm "
               f"{g(self.fp32_torch)}, 1-thread torch.mm per core summed "
               f"{g(self.fp32_per_core)})")
        if self.bf16 is not None:
            out += (f"; bf16 peak {g(self.bf16)} GFLOP/s (jnp.dot bf16->fp32 {g(self.bf16_jax)}, "
                    f"torch.mm bf16 {g(self.bf16_torch)})")
        return out + f"; {self.n}x{self.n} products"


PEAK_KEYS = ("fp32_jax", "fp32_torch", "fp32_per_core", "bf16_jax", "bf16_torch")


def peak_fns(n: int, pool: Optional[ProcessPool] = None, pool_name: str = "peak_mm",
             bf16: Optional[bool] = None) -> tuple[dict[str, Callable[[], Any]], float]:
    """``({key: callable}, flops)``: the timed calls of :class:`Peaks` (keys `PEAK_KEYS`),
    to be timed in the same :func:`interleaved_medians` as the work they are compared with.

    ``fp32_per_core`` is timed when ``pool`` holds the workload ``pool_name``
    (``(torch_mm_builder, (n,))``); bf16 where ``bf16`` (default: `has_bf16`)."""
    bf16 = has_bf16() if bf16 is None else bf16
    fns = {"fp32_jax": jax_matmul_fn(n)[0], "fp32_torch": torch_matmul_fn(n)[0]}
    if pool is not None:
        fns["fp32_per_core"] = pool.fn(pool_name)
    if bf16:
        fns["bf16_jax"] = jax_matmul_fn(n, "bfloat16")[0]
        fns["bf16_torch"] = torch_matmul_fn(n, "bfloat16")[0]
    return fns, 2.0 * n ** 3


def peaks_from_times(t: dict[str, float], n: int, pool: Optional[ProcessPool] = None,
                     pool_name: str = "peak_mm") -> Peaks:
    """:class:`Peaks` from the medians of :func:`peak_fns`' calls. ``fp32_per_core`` is the
    sum over workers of each one's rate (median of its own times) when ``pool`` is given,
    else ``procs x flops / median wall`` of the pool call."""
    flops = 2.0 * n ** 3
    r = {k: flops / t[k] for k in PEAK_KEYS if k in t}
    if "fp32_per_core" in t and pool is not None and pool.worker_times.get(pool_name):
        runs = pool.worker_times[pool_name]
        r["fp32_per_core"] = sum(flops / statistics.median(run[w] for run in runs)
                                 for w in range(pool.procs))
    elif "fp32_per_core" in t and pool is not None:
        r["fp32_per_core"] = pool.procs * flops / t["fp32_per_core"]
    return Peaks(n=n, **r)


def measure_peaks(n: int = 2048, *, repeats: int = 5, per_core: bool = True,
                  bf16: Optional[bool] = None) -> Peaks:
    """:class:`Peaks` measured now (round-robin, ``repeats`` rounds after a warm-up);
    ``per_core`` spawns a :class:`ProcessPool` for ``fp32_per_core`` (a few seconds)."""
    pool = ProcessPool({"peak_mm": (torch_mm_builder, (n,))}) if per_core else None
    try:
        fns, _ = peak_fns(n, pool, bf16=bf16)
        t = interleaved_medians(fns, repeats=repeats, warmup=1)
        return peaks_from_times(t, n, pool)
    finally:
        if pool is not None:
            pool.close()


def share(flops_per_s: float, peaks: Peaks, *, bf16: Optional[bool] = None) -> str:
    """``"X GFLOP/s = Y% of fp32 peak[, Z% of bf16 peak]"`` for an achieved rate; the bf16
    share is shown where a bf16 peak was measured (``bf16=False`` hides it)."""
    out = f"{flops_per_s / 1e9:,.1f} GFLOP/s = {flops_per_s / peaks.fp32:.0%} of fp32 peak"
    if peaks.bf16 is not None and bf16 is not False:
        out += f", {flops_per_s / peaks.bf16:.0%} of bf16 peak"
    return out


def share_cells(flops_per_s: float, peaks: Peaks) -> list[str]:
    """Table cells for an achieved rate: GFLOP/s, % of fp32 peak, % of bf16 peak (``-``
    where no bf16 peak was measured)."""
    return [f"{flops_per_s / 1e9:,.1f}", f"{flops_per_s / peaks.fp32:.0%}",
            f"{flops_per_s / peaks.bf16:.0%}" if peaks.bf16 else "-"]


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
        "cpu flags for matmul speed": ", ".join(
            f"{k} {'yes' if v else 'no'}" for k, v in cpu_flags().items()),
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


def fastest(rates: dict, keys: Sequence[str]) -> tuple[str, float]:
    """``(key, rate)`` of the fastest of ``keys`` measured in ``rates``."""
    k = max((k for k in keys if k in rates), key=lambda k: rates[k])
    return k, rates[k]


NOTES_MARKER = "<!-- hand-written notes below are kept when the benchmark rewrites this file -->"


def write_page(path: str, md: str) -> None:
    """Write the results page ``md`` to ``path`` atomically, keeping an existing page's
    hand-written notes below `NOTES_MARKER`."""
    from gbi_jax.workdir import atomic_write

    notes_md = ""
    if os.path.exists(path):
        with open(path) as f:
            old_md = f.read()
        if NOTES_MARKER in old_md:
            notes_md = old_md[old_md.index(NOTES_MARKER):]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    page = md.rstrip("\n") + "\n\n" + (notes_md or NOTES_MARKER + "\n")
    atomic_write(path, lambda f: f.write(page))
