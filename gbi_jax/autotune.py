"""Machine-adaptive settings: pick the fastest of a few candidates by timing them.

Some settings change only speed, and their best value depends on the machine: the cache
blocking of :func:`gbi_jax.training.fit` (``member_block``: networks per block on a
CPU core) or the chunking of :func:`gbi_jax.inference.per_example` (``chunk_size``).
The best block on one CPU can be slower than no blocking on another (cache sizes, core
kind, how the matmul library splits work), so no constant is right everywhere.
:func:`pick` times each candidate on the real work, a few calls each, round-robin, and
returns the fastest. Its choice is cached on disk per machine and workload, so a
machine probes a workload once; later runs (a sweep's other members, a resumed run)
read the cache and pay nothing.

Cache: a JSON file, ``$GBI_JAX_AUTOTUNE_CACHE`` or ``~/.cache/gbi_jax/autotune.json``
(written atomically; ``GBI_JAX_AUTOTUNE_CACHE=off`` disables it). Its keys hold the
workload key the caller gives, the CPU model, the core count, the JAX version and
backend. Delete the file to probe again.

In a ``jax.distributed`` program every process runs the same probe (the candidates are
SPMD programs they run together) and process 0's choice is used by all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

import jax
from absl import logging

__all__ = ["Choice", "pick", "cached", "remember", "machine_key", "cache_path"]


@dataclasses.dataclass(frozen=True)
class Choice:
    """The value chosen, how (``"measured"`` or ``"cached"``), and, when measured, each
    candidate's median seconds per call and the probe's own wall time."""

    value: Any
    how: str
    seconds: Optional[dict] = None
    probe_s: float = 0.0

    def describe(self, label: str) -> str:
        """One log line: the choice and, when measured, every candidate's relative speed."""
        if self.how == "cached":
            path = (cache_path() or "").replace(os.path.expanduser("~"), "~", 1)
            return f"{label}: {self.value!r} (cached for this machine; {path})"
        if not self.seconds:
            return f"{label}: {self.value!r} ({self.how})"
        best = min(self.seconds.values())
        parts = ", ".join(f"{k} {best / v:.2f}x" for k, v in self.seconds.items())
        return (f"{label}: {self.value!r} (measured in {self.probe_s:.1f}s; speed relative to "
                f"the fastest: {parts})")


def cache_path() -> Optional[str]:
    """The cache file, or None when ``GBI_JAX_AUTOTUNE_CACHE=off``."""
    env = os.environ.get("GBI_JAX_AUTOTUNE_CACHE")
    if env is not None and env.strip().lower() in ("off", "0", "none", ""):
        return None
    return env or os.path.join(os.path.expanduser("~"), ".cache", "gbi_jax", "autotune.json")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def machine_key() -> str:
    """What identifies the machine a choice was measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    dev = jax.devices()[0]
    return (f"{_cpu_model()}|cores={cores}|jax={jax.__version__}|{jax.default_backend()}:"
            f"{getattr(dev, 'device_kind', '')}x{jax.device_count()}")


def _read_cache(path: Optional[str]) -> dict:
    if path is None or not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):  # a damaged cache is rebuilt, never fatal
        return {}


def _write_cache(path: Optional[str], key: str, value: Any) -> None:
    if path is None or jax.process_index() != 0:
        return
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        data = _read_cache(path)
        data[key] = {"value": value, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as e:  # read-only home: probe again next time
        logging.warning("autotune: could not write %s (%s)", path, e)


def _contenders(times: list[list[float]], margin: float) -> list[int]:
    """Indices whose median time is within ``margin`` (relative) of the fastest median."""
    medians = [statistics.median(t) for t in times]
    best = min(medians)
    return [i for i, m in enumerate(medians) if m <= best * (1.0 + margin)]


def _agree(index: int) -> int:
    """Process 0's ``index`` on every process (itself in a single-process program)."""
    if jax.process_count() == 1:
        return index
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(jax.numpy.int32(index)))


_MISSING = object()


def cached(key: str, default: Any = _MISSING) -> Any:
    """The value cached for workload ``key`` on this machine, or ``default`` (``KeyError``
    without one). Reads this process's cache file only (:func:`pick` is the form that
    agrees across the processes of a ``jax.distributed`` program)."""
    entry = _read_cache(cache_path()).get(f"{key}|{machine_key()}")
    if entry is None or "value" not in entry:
        if default is _MISSING:
            raise KeyError(key)
        return default
    return entry["value"]


def remember(key: str, value: Any) -> None:
    """Cache ``value`` (JSON-serialisable) for workload ``key`` on this machine."""
    _write_cache(cache_path(), f"{key}|{machine_key()}", value)


def pick(key: str, candidates: Sequence[Any], make_call: Callable[[Any], Callable[[], Any]], *,
         rounds: int = 3, final_rounds: Optional[int] = None, margin: float = 0.05,
         use_cache: bool = True, warm_up: bool = True) -> Choice:
    """The fastest of ``candidates`` for the work ``make_call(candidate)()`` does.

    Args:
      key: names the workload (what makes the timing comparable: the program and its
        shapes); the machine is added to it (:func:`machine_key`).
      candidates: JSON-serialisable values (``None`` allowed), tried in this order; on a
        tie within timing noise the earlier one wins only if strictly faster, so put the
        simplest first.
      make_call: ``candidate -> fn``; ``fn()`` must do one unit of the real work and
        block until it is done (``jax.block_until_ready``). It is called once to compile
        and warm up (unless ``warm_up=False``: ``make_call`` has done that), then
        ``rounds`` times, round-robin with the other candidates.
      rounds: timed calls of every candidate, round-robin (the median is used).
      final_rounds: after those, the *contenders* (candidates whose median is within
        ``margin`` of the fastest median) get further round-robin calls until each has
        ``final_rounds`` (default: ``rounds``, no further calls); a candidate that falls
        behind by more than ``margin`` stops being timed. The timing goes where the
        choice is close, so near-equal candidates are told apart at little cost.
      margin: relative speed gap (0.05 = 5 %) that puts a candidate out of contention.
      use_cache: read and write the per-machine cache.

    Returns:
      :class:`Choice`; log ``choice.describe(name)`` so the run records it.
    """
    if not candidates:
        raise ValueError("autotune.pick needs at least one candidate.")
    candidates = list(candidates)
    full_key = f"{key}|{machine_key()}"
    path = cache_path() if use_cache else None
    cached = _read_cache(path).get(full_key)
    index = -1
    if cached is not None and cached.get("value") in candidates:
        index = candidates.index(cached["value"])
    index = _agree(index)
    if index >= 0:
        return Choice(candidates[index], "cached")
    if len(candidates) == 1:
        return Choice(candidates[0], "measured", {repr(candidates[0]): 1.0}, 0.0)
    t0 = time.perf_counter()
    fns = [make_call(c) for c in candidates]
    for fn in fns if warm_up else ():  # compile and warm up
        fn()
    times: list[list[float]] = [[] for _ in fns]

    def timed_round(indices):
        for i in indices:
            t = time.perf_counter()
            fns[i]()
            times[i].append(time.perf_counter() - t)

    rounds = max(1, int(rounds))
    for _ in range(rounds):
        timed_round(range(len(fns)))
    for _ in range(max(rounds, int(final_rounds or rounds)) - rounds):
        contenders = _contenders(times, margin)
        if len(contenders) == 1:
            break
        timed_round(contenders)
    medians = [statistics.median(t) for t in times]
    best = _agree(min(_contenders(times, margin), key=lambda i: medians[i]))
    _write_cache(path, full_key, candidates[best])
    return Choice(candidates[best], "measured",
                  {repr(c): m for c, m in zip(candidates, medians)}, time.perf_counter() - t0)
