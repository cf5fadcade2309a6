"""Sweeps as data: small combinators over lists of config overrides.

A *sweep* is a plain list of override dicts. Each dict maps a dotted config
path ("latent.lr") to a Python scalar or tuple and stands for one job:

    >>> product(sweep("seed", [0, 1]), sweep("latent.lr", [0.1, 0.3]))
    [{'seed': 0, 'latent.lr': 0.1}, {'seed': 0, 'latent.lr': 0.3},
     {'seed': 1, 'latent.lr': 0.1}, {'seed': 1, 'latent.lr': 0.3}]
    >>> zipit(sweep("a", [1, 2]), sweep("b", [3, 4]))
    [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]

A job's workdir is named after its overrides (``latent.lr=0.1,seed=0``). A `Run`
instead names its workdir explicitly and may use its own config variant, for
sweeps whose jobs are different figures of one experiment::

    Run("fig5_s234", {"seeds": (2, 3, 4)}, config="experiments/disentangle/config.py:fig5")

A *sweep file* is a Python file defining ``get_sweep()`` (or
``get_sweep(arg)``, selected with ``path.py:arg``) that returns a `Sweep` (or a
dict with the same fields): the experiment's entry-point module, its config
file, the jobs and, optionally, the sweep's defaults for ``--root`` and
``--parallel``. `load_sweep` imports such a file and checks it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import re
import sys
from typing import Any, Iterable, Mapping, Sequence, Union

Overrides = dict[str, Any]

__all__ = ["Sweep", "Run", "sweep", "fixed", "product", "zipit", "chain", "as_sweep", "load_sweep"]

_SCALARS = (bool, int, float, str)
_NAME = re.compile(r"^[A-Za-z0-9_.=,+-]+$")


def sweep(name: str, values: Iterable[Any]) -> list[Overrides]:
    """One axis: ``[{name: v} for v in values]``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"sweep name must be a non-empty dotted config path, got {name!r}")
    values = list(values)
    if not values:
        raise ValueError(f"sweep({name!r}, ...) got no values; give at least one")
    return [{name: _check_value(name, v)} for v in values]


def fixed(name: str, value: Any) -> list[Overrides]:
    """A single override, applied to every job when combined with `product`."""
    return [{name: _check_value(name, value)}]


def product(*sweeps: Sequence[Mapping[str, Any]]) -> list[Overrides]:
    """Cartesian product of sweeps; the last one varies fastest. ``product()`` is ``[{}]``."""
    return [_merge(parts, "product") for parts in itertools.product(*sweeps)]


def zipit(*sweeps: Sequence[Mapping[str, Any]]) -> list[Overrides]:
    """Element-wise merge of sweeps of equal length; raises ValueError on a length mismatch."""
    lengths = [len(s) for s in sweeps]
    if len(set(lengths)) > 1:
        raise ValueError(
            f"zipit needs sweeps of equal length, got lengths {lengths}; "
            "use product() for all combinations or make the sweeps the same length")
    return [_merge(parts, "zipit") for parts in zip(*sweeps)]


def chain(*sweeps: Sequence[Mapping[str, Any]]) -> list[Overrides]:
    """Concatenation: the jobs of each sweep, one after another."""
    return [dict(job) for s in sweeps for job in s]


def _merge(parts: Iterable[Mapping[str, Any]], how: str) -> Overrides:
    merged: Overrides = {}
    for part in parts:
        for key, value in part.items():
            if key in merged and merged[key] != value:
                raise ValueError(
                    f"{how} combines two different values for {key!r} "
                    f"({merged[key]!r} and {value!r}); each key may come from one axis only")
            merged[key] = value
    return merged


def _check_value(key: str, value: Any) -> Any:
    """Returns `value` with lists turned into tuples; rejects non-scalar types."""
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, tuple):
        for v in value:
            _check_value(key, v)
        return value
    if value is None or isinstance(value, _SCALARS):
        return value
    raise TypeError(
        f"override {key!r}={value!r} has type {type(value).__name__}; "
        "use a Python scalar (bool/int/float/str/None) or a tuple of them")


def _check_overrides(job: Any, where: str) -> Overrides:
    if not isinstance(job, Mapping):
        raise ValueError(f"{where} must be a dict of overrides, got {job!r}")
    checked = {}
    for key, value in job.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where} has a non-string key {key!r}")
        checked[key] = _check_value(key, value)
    return checked


@dataclasses.dataclass(frozen=True)
class Run:
    """A job with an explicit workdir name and, optionally, its own config.

    Attributes:
        name: workdir name under the sweep root (letters, digits and ``_.=,+-``).
        overrides: dotted config path -> value, as in a plain job dict.
        config: config file spec for this job (default: the sweep's ``config``).
    """

    name: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    config: str | None = None

    def __post_init__(self):
        if (not isinstance(self.name, str) or not _NAME.match(self.name)
                or self.name in (".", "..")):
            raise ValueError(f"Run name {self.name!r} must be a directory name made of "
                             "letters, digits and '_.=,+-'")
        if self.config is not None and (not isinstance(self.config, str) or not self.config):
            raise ValueError(f"Run {self.name!r}: config must be a config file spec like "
                             f"'experiments/gbi_toy/config.py:smoke', got {self.config!r}")
        object.__setattr__(self, "overrides",
                           _check_overrides(self.overrides, f"Run {self.name!r} overrides"))


JobSpec = Union[Overrides, Run]


@dataclasses.dataclass
class Sweep:
    """What a sweep file's ``get_sweep()`` returns.

    Attributes:
        experiment: entry-point module run with ``python -m``, e.g.
            "experiments.gbi_toy.main".
        config: config file path (relative to the project root), optionally
            with ":arg", e.g. "experiments/gbi_toy/config.py:smoke"; may be None
            when every job is a `Run` with its own config.
        jobs: list of override dicts (workdir named after the overrides) and
            `Run` s (workdir named explicitly), one per job.
        name: optional short name (defaults to the sweep file's stem).
        root: default sweep root directory (``launch.run --root`` overrides it).
        parallel: default maximum of concurrent jobs (``--parallel`` overrides it;
            None: one per CPU core). Use 1 for jobs that each use every core.
        aggregate: whether ``launch.run`` writes ``<root>/results.csv`` and
            ``summary.md`` after the run by default.
    """

    experiment: str
    config: str | None
    jobs: list[JobSpec]
    name: str | None = None
    root: str | None = None
    parallel: int | None = None
    aggregate: bool = True

    def __post_init__(self):
        if not isinstance(self.experiment, str) or not self.experiment:
            raise ValueError("Sweep.experiment must be a module path like "
                             f"'experiments.gbi_toy.main', got {self.experiment!r}")
        if self.config is not None and (not isinstance(self.config, str) or not self.config):
            raise ValueError("Sweep.config must be a config file path like "
                             f"'experiments/gbi_toy/config.py:smoke', got {self.config!r}")
        if isinstance(self.jobs, (Mapping, str)) or not isinstance(self.jobs, Iterable):
            raise ValueError("Sweep.jobs must be a list of override dicts, "
                             f"got {type(self.jobs).__name__}")
        jobs: list[JobSpec] = []
        for i, job in enumerate(self.jobs):
            if isinstance(job, Run):
                if job.config is None and self.config is None:
                    raise ValueError(f"Sweep.jobs[{i}] (Run {job.name!r}) has no config and "
                                     "the sweep has none; set Sweep.config or Run.config")
                jobs.append(job)
            else:
                if self.config is None:
                    raise ValueError(f"Sweep.jobs[{i}] is a plain dict but Sweep.config is "
                                     "None; give the sweep a config or use Run(..., config=)")
                jobs.append(_check_overrides(job, f"Sweep.jobs[{i}]"))
        if not jobs:
            raise ValueError("Sweep.jobs is empty; a sweep needs at least one job "
                             "(use [{}] to run the config unchanged)")
        if self.parallel is not None and (isinstance(self.parallel, bool)
                                          or not isinstance(self.parallel, int)
                                          or self.parallel < 1):
            raise ValueError(f"Sweep.parallel must be None or an int >= 1, got {self.parallel!r}")
        self.jobs = jobs

    def configs(self) -> list[str]:
        """The distinct config specs the jobs use, in first-use order."""
        out: dict[str, None] = {}
        for job in self.jobs:
            spec = job.config if isinstance(job, Run) and job.config else self.config
            out[spec] = None
        return list(out)


_SWEEP_FIELDS = {f.name for f in dataclasses.fields(Sweep)}
_REQUIRED = {"experiment", "config", "jobs"}


def as_sweep(obj: Any, origin: str = "get_sweep()") -> Sweep:
    """Coerces a `Sweep`, or a dict with its fields, into a checked `Sweep`."""
    if isinstance(obj, Sweep):
        return dataclasses.replace(obj)
    if isinstance(obj, Mapping):
        unknown = set(obj) - _SWEEP_FIELDS
        missing = _REQUIRED - set(obj)
        if unknown or missing:
            raise ValueError(
                f"{origin} returned a dict with missing keys {sorted(missing)} and unknown "
                f"keys {sorted(unknown)}; expected keys experiment, config, jobs"
                f"[, {', '.join(sorted(_SWEEP_FIELDS - _REQUIRED))}]")
        return Sweep(**obj)
    raise TypeError(f"{origin} must return a launch.sweep.Sweep or a dict with keys "
                    f"experiment, config, jobs; got {type(obj).__name__}")


def load_module(path: str) -> Any:
    """Imports the Python file `path` (a sweep file) as a fresh module."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"sweep file {path!r} not found (cwd: {os.getcwd()}); "
                                "pass a path like launch/sweeps/gbi_toy_seeds.py")
    module_name = "_launch_sweep_" + "".join(
        c if c.isalnum() else "_" for c in os.path.abspath(path))
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot import sweep file {path!r}; it must be a .py file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses in the file look their module up there
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def load_sweep(spec: str) -> Sweep:
    """Imports a sweep file ``path/to/sweep.py[:arg]`` and returns its checked `Sweep`."""
    path, _, arg = spec.partition(":")
    module = load_module(path)
    get_sweep = getattr(module, "get_sweep", None)
    if not callable(get_sweep):
        raise AttributeError(
            f"sweep file {path!r} defines no get_sweep(); add `def get_sweep(): "
            "return Sweep(experiment=..., config=..., jobs=[...])`")
    result = get_sweep(arg) if arg else get_sweep()
    sweep_obj = as_sweep(result, origin=f"{path}: get_sweep()")
    if sweep_obj.name is None:
        sweep_obj.name = os.path.splitext(os.path.basename(path))[0]
    return sweep_obj
