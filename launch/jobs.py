"""From a sweep's jobs to concrete jobs: workdir names, seed merging, commands.

A `launch.sweep.Run` names its workdir itself. A plain override dict gets a
workdir name that is stable and filesystem-safe: the overrides sorted by key and
rendered as ``key=value`` joined by commas, e.g. ``latent.lr=0.1,seed=0``
(tuples as ``seeds=0_1_2``, no overrides as ``default``). When that rendering
could be ambiguous or unsafe (strings with characters outside
``[A-Za-z0-9.+-]``, nested tuples, names over 120 characters) the readable part
is sanitised/truncated and a short hash of the exact overrides is appended.

vmap mode (`group_by_seed`, `merge_seeds`): jobs whose overrides differ only in ``seed`` are merged
into one job that sets ``seeds=(s0, s1, ...)`` instead, so the experiment trains
those seeds together in one process with ``vmap``. See `launch.runner` for how
the merged job's results are split back per seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
from typing import Any, Mapping, Sequence

from launch.sweep import JobSpec, Overrides, Run, Sweep

SEED_KEY = "seed"
SEEDS_KEY = "seeds"
RESULTS_FILE = "results.json"
COMPLETE_FILE = "complete.json"  # gbi_jax.workdir.COMPLETE_FILE: written last by a run
JOB_FILE = "job.json"
LOG_FILE = "log.txt"
PER_SEED_KEY = "per_seed"  # results.json key: list of per-seed dicts aligned with `seeds`

_MAX_NAME = 120
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9.+-]*$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._=,+-]")


@dataclasses.dataclass
class Job:
    """One process to launch.

    Attributes:
        name: workdir name under the sweep root (see `workdir_name`).
        overrides: dotted config path -> value passed as ``--config.<path>=<value>``.
        seed_jobs: for a vmap-merged job, the per-seed jobs it stands for, in the
            order of ``overrides["seeds"]``; empty for an ordinary job.
        config: the job's config file spec (None: the sweep's ``config``).
    """

    name: str
    overrides: Overrides
    seed_jobs: tuple["Job", ...] = ()
    config: str | None = None

    @property
    def is_merged(self) -> bool:
        return bool(self.seed_jobs)

    @property
    def seeds(self) -> tuple:
        return tuple(self.overrides.get(SEEDS_KEY, ())) if self.is_merged else ()


def _render(value: Any) -> tuple[str, bool]:
    """Returns (text, exact): `exact` is False when `text` may be ambiguous."""
    if isinstance(value, tuple):
        parts = [_render(v) for v in value]
        nested = any(isinstance(v, tuple) for v in value)
        exact = all(e for _, e in parts) and not nested and bool(value)
        return "_".join(p for p, _ in parts), exact
    if isinstance(value, float):
        return repr(value), True
    if isinstance(value, str):
        return value, bool(_SAFE_VALUE.match(value)) and value not in ("True", "False", "None") \
            and not _looks_numeric(value)
    return str(value), True  # bool, int, None


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def overrides_hash(overrides: Mapping[str, Any]) -> str:
    """8 hex digits identifying the exact overrides (types included)."""
    canonical = json.dumps(sorted((k, repr(v)) for k, v in overrides.items()))
    return hashlib.sha1(canonical.encode()).hexdigest()[:8]


def workdir_name(overrides: Mapping[str, Any]) -> str:
    """Stable, filesystem-safe directory name for a job's overrides.

    >>> workdir_name({"seed": 0, "latent.lr": 0.1})
    'latent.lr=0.1,seed=0'
    """
    if not overrides:
        return "default"
    parts, exact = [], True
    for key in sorted(overrides):
        text, ok = _render(overrides[key])
        exact &= ok and bool(re.match(r"^[A-Za-z0-9_.-]+$", key))
        parts.append(f"{key}={text}")
    name = _UNSAFE_CHARS.sub("-", ",".join(parts))
    if not exact or len(name) > _MAX_NAME:
        name = f"{name[:_MAX_NAME - 9]}-{overrides_hash(overrides)}"
    return name


def plan_jobs(jobs: Sequence[JobSpec]) -> list[Job]:
    """One `Job` per override dict or `Run`; raises on jobs that would share a workdir."""
    planned = [Job(j.name, dict(j.overrides), config=j.config) if isinstance(j, Run)
               else Job(workdir_name(j), dict(j)) for j in jobs]
    seen: dict[str, int] = {}
    for i, job in enumerate(planned):
        if job.name in seen:
            raise ValueError(
                f"sweep jobs {seen[job.name]} and {i} map to the same workdir {job.name!r} "
                f"({jobs[seen[job.name]]!r} and {jobs[i]!r}); remove the duplicate")
        seen[job.name] = i
    return planned


def group_by_seed(jobs: Sequence[Job],
                  seed_key: str = SEED_KEY) -> list[tuple[Overrides, list[Job]]]:
    """Groups jobs whose overrides are equal apart from `seed_key` (and ``seeds``).

    Returns (base overrides without the seed keys, jobs) pairs in first-appearance
    order. Jobs without `seed_key` form groups of their own, and so do jobs with
    different configs.
    """
    groups: dict[str, tuple[Overrides, list[Job]]] = {}
    for job in jobs:
        if seed_key not in job.overrides:
            groups[f"solo:{job.name}"] = ({}, [job])
            continue
        base = {k: v for k, v in job.overrides.items() if k not in (seed_key, SEEDS_KEY)}
        key = f"group:{job.config!r}:{workdir_name(base)}"
        groups.setdefault(key, (base, []))[1].append(job)
    return list(groups.values())


def merge_seeds(base: Overrides, seed_jobs: Sequence[Job], seed_key: str = SEED_KEY,
                seeds_key: str = SEEDS_KEY) -> Job:
    """One job that runs all `seed_jobs` at once with ``seeds=(s0, s1, ...)``."""
    seeds = tuple(job.overrides[seed_key] for job in seed_jobs)
    overrides = {**base, seeds_key: seeds}
    return Job(workdir_name(overrides), overrides, tuple(seed_jobs), seed_jobs[0].config)


def seed_results(results: Mapping[str, Any], index: int, num_seeds: int) -> dict[str, Any]:
    """The results of seed `index` out of a run over `num_seeds` seeds (the per_seed convention).

    ``results[PER_SEED_KEY]``, a list of `num_seeds` dicts aligned with the run's
    ``seeds``, gives the seed's own results: entry `index` is merged into the
    top level. Every other key is shared by the seeds and copied, except that a
    nested dict holding its own ``per_seed`` list of length `num_seeds` (a
    cross-seed summary such as ``{"mean", "std", "per_seed"}``) is replaced by
    that list's entry `index`.
    """

    def pick(node: Any) -> Any:
        if isinstance(node, Mapping):
            per_seed = node.get(PER_SEED_KEY)
            if isinstance(per_seed, list) and len(per_seed) == num_seeds:
                return per_seed[index]
            return {k: pick(v) for k, v in node.items()}
        return node

    shared = {k: pick(v) for k, v in results.items() if k != PER_SEED_KEY}
    return {**shared, **results[PER_SEED_KEY][index]}


def config_flag_value(value: Any) -> str:
    """Renders an override as ml_collections config_flags parses it."""
    if isinstance(value, tuple):
        return repr(value)  # TupleParser: literal_eval of "(0, 1)"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def command(sweep: Sweep, job: Job, workdir: str, python: str | None = None) -> list[str]:
    """The argv that runs `job` of `sweep` in `workdir`."""
    argv = [python or sys.executable, "-m", sweep.experiment,
            f"--config={job.config or sweep.config}", f"--workdir={os.path.abspath(workdir)}"]
    argv += [f"--config.{k}={config_flag_value(v)}" for k, v in job.overrides.items()]
    return argv
