"""One workdir per run: ``config.json``, ``metrics.jsonl``, ``checkpoints/``,
``results.json``, ``arrays.npz`` (arrays a figure needs), ``figures/``.

Rerunning with the same workdir resumes; a workdir made by a different config
is refused with :class:`WorkdirConflictError` naming the differing fields,
never silently overwritten. Every file but ``metrics.jsonl`` (append-only) is
written atomically (a temporary file, then ``os.replace``).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
REPORT_FILE = "results.md"
ARRAYS_FILE = "arrays.npz"
CHECKPOINT_DIR = "checkpoints"
FIGURES_DIR = "figures"


class WorkdirConflictError(RuntimeError):
    """The workdir holds a run made with a different config."""


def to_jsonable(obj: Any) -> Any:
    """Convert configs, numpy/jax arrays and scalars into plain JSON types."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        obj = obj.to_dict()
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):
        return to_jsonable(np.asarray(obj).tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj


_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def from_jsonable(obj: Any) -> Any:
    """Undo :func:`to_jsonable`'s one lossy step: the strings ``"nan"``, ``"inf"`` and
    ``"-inf"`` it writes for non-finite floats become floats again (in nested dicts/lists)."""
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    return obj


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            p = f"{prefix}.{k}" if prefix else k
            if k not in old:
                out.append(f"{p}: (absent) -> {new[k]!r}")
            elif k not in new:
                out.append(f"{p}: {old[k]!r} -> (absent)")
            else:
                out.extend(_diff(old[k], new[k], p))
        return out
    return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


class Workdir:
    """Paths and small file helpers of one run directory."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def checkpoint_dir(self) -> str:
        return self.file(CHECKPOINT_DIR)

    @property
    def figures_dir(self) -> str:
        d = self.file(FIGURES_DIR)
        os.makedirs(d, exist_ok=True)
        return d

    # -- config -------------------------------------------------------------
    def claim(self, config: Any, *, ignore: Iterable[str] = ()) -> bool:
        """Write ``config.json`` or check it matches. Returns True if resuming.

        ``ignore`` lists top-level fields that may change between a run and its
        resumption (e.g. logging frequency).
        """
        os.makedirs(self.path, exist_ok=True)
        cfg = to_jsonable(config)
        ignore = set(ignore)
        existing_path = self.file(CONFIG_FILE)
        if os.path.exists(existing_path):
            with open(existing_path) as f:
                try:
                    old = json.load(f)
                except json.JSONDecodeError as e:
                    raise WorkdirConflictError(
                        f"{existing_path} is not valid JSON ({e}); it was not written by a "
                        "finished claim. Delete the workdir or use another --workdir.") from None
            strip = lambda d: {k: v for k, v in d.items() if k not in ignore}
            diffs = _diff(strip(old), strip(cfg))
            if diffs:
                shown = "\n  ".join(diffs[:20])
                raise WorkdirConflictError(
                    f"Workdir {self.path} was made by a different config; refusing to "
                    f"overwrite it. Differences (old -> new):\n  {shown}\n"
                    "Use a new --workdir, or delete this one to start over.")
            return True
        tmp = existing_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
        os.replace(tmp, existing_path)
        return False

    # -- metrics ------------------------------------------------------------
    def append_metrics(self, rows: Iterable[Mapping[str, Any]]) -> None:
        with open(self.file(METRICS_FILE), "a") as f:
            for row in rows:
                f.write(json.dumps(to_jsonable(row)) + "\n")

    def read_metrics(self) -> list[dict]:
        path = self.file(METRICS_FILE)
        if not os.path.exists(path):
            return []
        rows = []
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line cut by a kill: everything after it is dropped
        return rows

    def truncate_metrics(self, max_step: int, key: str = "step") -> None:
        """Drop metric rows written after ``max_step`` (work lost by an interruption)."""
        rows = [r for r in self.read_metrics() if r.get(key, -1) <= max_step]
        path = self.file(METRICS_FILE)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)

    # -- results ------------------------------------------------------------
    def write_results(self, results: Mapping[str, Any], name: str = RESULTS_FILE) -> str:
        """Write ``results`` as JSON, keys in the order the run made them (figures drawn
        from the file list datasets, pairs, ... in that order)."""
        path = self.file(name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(to_jsonable(results), f, indent=2)
        os.replace(tmp, path)
        return path

    def read_results(self, name: str = RESULTS_FILE) -> Optional[dict]:
        path = self.file(name)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def write_text(self, name: str, text: str) -> str:
        """Write ``text`` to ``name`` atomically (a temporary file, then ``os.replace``)."""
        path = self.file(name)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        return path

    def finish(self, results: Mapping[str, Any], report: str,
               draw: Optional[Callable[[str], Any]] = None) -> None:
        """End a run: ``results.json``, then the figures (``draw(self.path)``, drawn from the
        workdir alone), then the Markdown report ``results.md``."""
        self.write_results(results)
        if draw is not None:
            draw(self.path)
        self.write_text(REPORT_FILE, report.strip() + "\n")

    # -- arrays -------------------------------------------------------------
    def write_arrays(self, arrays: Mapping[str, Any], name: str = ARRAYS_FILE) -> str:
        """Save named arrays (numbers or strings; no pickled objects) as one ``.npz``."""
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        for k, v in arrays.items():
            if v.dtype == object:
                raise ValueError(f"write_arrays: {k!r} is an object array; only numbers and "
                                 "strings are saved (no pickles).")
        path = self.file(name)
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
        return path

    def read_arrays(self, name: str = ARRAYS_FILE) -> Optional[dict[str, np.ndarray]]:
        """The arrays saved by :meth:`write_arrays`, or None if there is no such file."""
        path = self.file(name)
        if not os.path.exists(path):
            return None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
