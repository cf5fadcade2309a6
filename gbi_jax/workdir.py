"""One workdir per run: ``config.json``, ``metrics.jsonl``, ``checkpoints/``,
``results.json``, ``arrays.npz`` (arrays a figure needs), ``figures/``, ``results.md``,
and ``complete.json`` (written last, when results, figures and report all exist).

Rerunning with the same workdir resumes; a workdir made by a different config
is refused with :class:`WorkdirConflictError` naming the differing fields,
never silently overwritten (fields changed on purpose are listed in ``override_ok``
and recorded in ``history.jsonl``). Every file is written atomically (a temporary
file, then ``os.replace``); ``metrics.jsonl`` is appended to, one row per line, and
reconciled with the checkpoints on every start (:meth:`Workdir.reconcile_metrics`).
One process at a time works in a workdir (:meth:`Workdir.lock`).

In a ``jax.distributed`` program of several processes only process 0 writes: on the
others every write method (lock, metrics, results, arrays, report, figures, completion
marker) does nothing, so every process can run the same code; :meth:`Workdir.claim`
still checks an existing ``config.json`` there, so a conflicting config stops every
process with the same error.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import numpy as np

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
REPORT_FILE = "results.md"
ARRAYS_FILE = "arrays.npz"
CHECKPOINT_DIR = "checkpoints"
FIGURES_DIR = "figures"
COMPLETE_FILE = "complete.json"
LOCK_FILE = "lock"
HISTORY_FILE = "history.jsonl"


class WorkdirConflictError(RuntimeError):
    """The workdir holds a run made with a different config."""


class CorruptWorkdirError(RuntimeError):
    """A file of the workdir is damaged in a way a resume cannot repair by itself (e.g. a
    garbled line in the middle of ``metrics.jsonl``); the message names file, line and fix."""


class WorkdirLockedError(RuntimeError):
    """Another live process works in this workdir; ``pid`` is its process id (or None)."""

    def __init__(self, message: str, pid: Optional[int] = None):
        super().__init__(message)
        self.pid = pid


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "w",
                 tmp: Optional[str] = None) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file (``tmp``, default
    ``<path>.tmp<pid>``, in the same directory), fsync it, then ``os.replace``: readers
    see the old file or the whole new one, never a part."""
    tmp = tmp or f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _matches(path: str, prefixes: Iterable[str]) -> bool:
    """True if dotted ``path`` is one of ``prefixes`` or lies under one of them."""
    return any(path == p or path.startswith(p + ".") for p in prefixes)


def _diff_paths(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves (or whole sub-trees) that differ between two dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            p = f"{prefix}.{k}" if prefix else k
            if k not in old or k not in new:
                out.append(p)
            else:
                out.extend(_diff_paths(old[k], new[k], p))
        return out
    return [] if old == new else [prefix]


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def _get(tree: Mapping, path: str) -> Any:
    for k in path.split("."):
        if not isinstance(tree, Mapping) or k not in tree:
            return _ABSENT
        tree = tree[k]
    return tree


def _set(tree: dict, path: str, value: Any) -> None:
    *head, last = path.split(".")
    for k in head:
        tree = tree.setdefault(k, {})
    if value is _ABSENT:
        tree.pop(last, None)
    else:
        tree[last] = value


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


def process_index() -> int:
    """This process's index in a ``jax.distributed`` program (0 without JAX or alone)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return 0
    try:
        return int(jax.process_index())
    except Exception:  # pylint: disable=broad-except  # no backend: a one-process program
        return 0


class Workdir:
    """Paths and small file helpers of one run directory."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    @property
    def writer(self) -> bool:
        """Whether this process writes the workdir (process 0 of a multi-process program)."""
        return process_index() == 0

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
    def claim(self, config: Any, *, ignore: Iterable[str] = (),
              override_ok: Iterable[str] = ()) -> bool:
        """Write ``config.json`` or check it matches. Returns True if resuming.

        Call it once the config is validated and the data found, so that a run that
        fails before training leaves nothing behind (see also
        :meth:`release_claim_if_untouched`).

        Args:
          config: the run's config (a ``ConfigDict`` or nested dict).
          ignore: dotted fields (or prefixes of them, e.g. ``"runtime"`` or
            ``"data.dir"``) that may change between a run and its resumption without
            being conflicts: runtime-only and evaluation-only settings. They are not
            compared and the stored ``config.json`` keeps its values.
          override_ok: dotted fields (or prefixes) that the user changes on purpose
            when resuming (e.g. ``"train.lr"`` after a divergence). Each change is
            appended to ``history.jsonl`` (``time``, ``field``, ``old``, ``new``) and
            the stored ``config.json`` updated.

        Raises:
          WorkdirConflictError: any other field differs (the message lists them, old ->
            new), or ``config.json`` is not valid JSON.
        """
        cfg = to_jsonable(config)
        ignore, override_ok = tuple(ignore), tuple(override_ok)
        existing_path = self.file(CONFIG_FILE)
        if os.path.exists(existing_path):
            with open(existing_path) as f:
                try:
                    old = json.load(f)
                except json.JSONDecodeError as e:
                    raise WorkdirConflictError(
                        f"{existing_path} is not valid JSON ({e}); it was not written by a "
                        "finished claim. Delete the workdir or use another --workdir.") from None
            paths = [p for p in _diff_paths(old, cfg) if not _matches(p, ignore)]
            conflicts = [p for p in paths if not _matches(p, override_ok)]
            if conflicts:
                shown = "\n  ".join(f"{p}: {_get(old, p)!r} -> {_get(cfg, p)!r}"
                                     for p in conflicts[:20])
                raise WorkdirConflictError(
                    f"Workdir {self.path} was made by a different config; refusing to "
                    f"overwrite it. Differences (old -> new):\n  {shown}\n"
                    "Use a new --workdir, or delete this one to start over (a field changed "
                    "on purpose, e.g. a learning rate after a divergence, can be allowed "
                    "with --config_override_ok=<field>).")
            if paths and self.writer:  # the other processes check, process 0 records
                now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                shown = lambda v: repr(v) if v is _ABSENT else v
                lines = [json.dumps({"time": now, "field": p, "old": shown(_get(old, p)),
                                     "new": shown(_get(cfg, p))}) for p in paths]
                self._append_lines(self.file(HISTORY_FILE), lines)
                for p in paths:
                    _set(old, p, _get(cfg, p))
                atomic_write(existing_path,
                              lambda f: json.dump(old, f, indent=2, sort_keys=True))
            return True
        if not self.writer:  # process 0 writes the claim
            return False
        self._created_dir = not os.path.isdir(self.path)
        os.makedirs(self.path, exist_ok=True)
        atomic_write(existing_path, lambda f: json.dump(cfg, f, indent=2, sort_keys=True))
        self._fresh_claim = True
        return False

    @contextlib.contextmanager
    def claimed(self, config: Any, *, ignore: Iterable[str] = (),
                override_ok: Iterable[str] = ()) -> Iterator["Workdir"]:
        """:meth:`claim` the workdir for the block; if the block fails before the run
        wrote anything (no checkpoints, metrics, results), the fresh claim is released
        (:meth:`release_claim_if_untouched`), so a corrected rerun is not a conflict.

            with Workdir(path).claimed(config, ignore=("figures",)) as wd:
                ...  # train, evaluate, wd.finish(...)
        """
        self.claim(config, ignore=ignore, override_ok=override_ok)
        try:
            yield self
        except BaseException:
            self.release_claim_if_untouched()
            raise

    def release_claim_if_untouched(self) -> bool:
        """Undo a fresh :meth:`claim` of this object if the run wrote nothing else.

        For the error path of a run that failed before training: ``config.json`` is
        removed (and the workdir itself if the claim created it and it is now empty)
        when this object made the claim (it returned False) and there are no
        checkpoints, metric rows or results. The lock file (:meth:`lock`) is left alone.
        Returns True when the claim was removed; safe to call in any state.
        """
        if not getattr(self, "_fresh_claim", False):
            return False
        ckpt = self.checkpoint_dir
        touched = (os.path.isdir(ckpt) and any(os.scandir(ckpt))) or any(
            os.path.exists(self.file(n)) and os.path.getsize(self.file(n)) > 0
            for n in (METRICS_FILE, RESULTS_FILE, ARRAYS_FILE))
        if touched:
            return False
        for n in (CONFIG_FILE, METRICS_FILE):  # the lock file stays: a caller may hold it
            if os.path.exists(self.file(n)):
                os.remove(self.file(n))
        for d in (ckpt, self.file(FIGURES_DIR)):
            if os.path.isdir(d) and not any(os.scandir(d)):
                os.rmdir(d)
        self._fresh_claim = False
        if getattr(self, "_created_dir", False) and not any(os.scandir(self.path)):
            os.rmdir(self.path)
        return True

    # -- lock ---------------------------------------------------------------
    _held: dict = {}  # path -> [fd, depth] of the locks this process holds

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the workdir's exclusive lock while the block runs.

        An advisory ``fcntl.flock`` on ``<workdir>/lock``, which holds the PID of the
        holder (the file stays after release; the kernel drops the lock when the
        process dies, so a killed run never leaves a stale lock). Re-entrant within
        one process. Creates the workdir if needed.

        Raises:
          WorkdirLockedError: another process holds the lock (names its PID).
        """
        if not self.writer:  # process 0 holds the lock for the program
            yield
            return
        path = self.file(LOCK_FILE)
        held = Workdir._held.get(path)
        if held is not None:
            held[1] += 1
            try:
                yield
            finally:
                held[1] -= 1
            return
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                os.close(fd)
                raise
            try:
                pid = int(os.read(fd, 32).decode().strip() or "x")
            except ValueError:
                pid = None
            os.close(fd)
            raise WorkdirLockedError(
                f"Workdir {self.path} is in use by another process "
                f"({'PID ' + str(pid) if pid is not None else 'PID unknown'}); two runs "
                "must not write one workdir. Wait for it to end (or stop it), or use "
                "another --workdir.", pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        Workdir._held[path] = [fd, 1]
        try:
            yield
        finally:
            del Workdir._held[path]
            os.close(fd)  # closing the descriptor releases the flock

    # -- metrics ------------------------------------------------------------
    @staticmethod
    def _append_lines(path: str, lines: list[str]) -> None:
        """Append whole lines in one write (a kill can only tear the last one)."""
        if lines:
            with open(path, "a") as f:
                f.write("".join(line + "\n" for line in lines))

    def append_metrics(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append one JSON line per row to ``metrics.jsonl``."""
        if not self.writer:
            return
        self._append_lines(self.file(METRICS_FILE),
                           [json.dumps(to_jsonable(row)) for row in rows])

    def _read_metric_lines(self) -> tuple[list[dict], bool]:
        """``(rows, torn)``: the rows of ``metrics.jsonl``; ``torn`` if its last line was
        cut by a kill (that line is left out) or lacks its newline (the next row appended
        would run into it)."""
        path = self.file(METRICS_FILE)
        if not os.path.exists(path):
            return [], False
        with open(path) as f:
            text = f.read()
        lines = text.split("\n")
        rows, bad = [], []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError:
                bad.append(number)
                continue
            if bad:
                raise CorruptWorkdirError(
                    f"{path}: line {bad[0]} is not a valid metrics row, but rows follow it "
                    f"(line {number}), so it was not cut by an interrupted write. Nothing "
                    "was changed. Repair or delete that line by hand and rerun, or start "
                    "over in a new --workdir.")
            rows.append(row)
        return rows, bool(bad) or not text.endswith("\n") and bool(text)

    def read_metrics(self) -> list[dict]:
        """All rows of ``metrics.jsonl`` (a last line cut by a kill is left out).

        Raises:
          CorruptWorkdirError: a line in the middle is not a valid row (names it).
        """
        return self._read_metric_lines()[0]

    def reconcile_metrics(self, key: str, max_step: int) -> int:
        """Make the rows of one fit agree with its checkpoint; returns the rows dropped.

        Rows that have ``key`` (e.g. ``"train_step"``) with a value above ``max_step``
        (the restored checkpoint's step; 0 when training starts afresh) are work an
        interruption lost and are dropped, so the rerun does not log them twice; rows
        of other fits are kept. A last line cut by a kill is removed. The file is
        rewritten atomically, and only when something changes.

        Raises:
          CorruptWorkdirError: a line in the middle is not a valid row (nothing is
            dropped or rewritten then).
        """
        rows, torn = self._read_metric_lines()
        kept = [r for r in rows if not (key in r and r[key] > max_step)]
        if (len(kept) == len(rows) and not torn) or not self.writer:
            return len(rows) - len(kept)
        atomic_write(self.file(METRICS_FILE),
                      lambda f: f.write("".join(json.dumps(r) + "\n" for r in kept)))
        return len(rows) - len(kept)

    # -- results ------------------------------------------------------------
    def write_results(self, results: Mapping[str, Any], name: str = RESULTS_FILE) -> str:
        """Write ``results`` as JSON, keys in the order the run made them (figures drawn
        from the file list datasets, pairs, ... in that order)."""
        if not self.writer:
            return self.file(name)
        path = self.file(name)
        atomic_write(path, lambda f: json.dump(to_jsonable(results), f, indent=2))
        return path

    def read_results(self, name: str = RESULTS_FILE) -> Optional[dict]:
        path = self.file(name)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)

    def write_text(self, name: str, text: str) -> str:
        """Write ``text`` to ``name`` atomically (a temporary file, then ``os.replace``)."""
        if not self.writer:
            return self.file(name)
        path = self.file(name)
        atomic_write(path, lambda f: f.write(text))
        return path

    def finish(self, results: Mapping[str, Any], report: str,
               draw: Optional[Callable[[str], Any]] = None) -> None:
        """End a run: ``results.json``, then the figures (``draw(self.path)``, drawn from the
        workdir alone), then the Markdown report ``results.md``, and last the completion
        marker ``complete.json`` (see :meth:`is_complete`).

        An older marker is removed first, so a run interrupted anywhere in between is
        not complete; calling ``finish`` again redoes all of it (it is idempotent).
        """
        if not self.writer:
            return
        marker = self.file(COMPLETE_FILE)
        if os.path.exists(marker):
            os.remove(marker)
        self.write_results(results)
        if draw is not None:
            draw(self.path)
        self.write_text(REPORT_FILE, report.strip() + "\n")
        self.write_text(COMPLETE_FILE, json.dumps(
            {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "files": [RESULTS_FILE, REPORT_FILE] + ([FIGURES_DIR] if draw else [])}) + "\n")

    def is_complete(self) -> bool:
        """True once :meth:`finish` has written results, figures and report (the marker
        ``complete.json`` exists). A workdir with ``results.json`` but no marker was
        interrupted while finishing: rerun it to redo the report and figures."""
        return os.path.exists(self.file(COMPLETE_FILE))

    # -- arrays -------------------------------------------------------------
    def write_arrays(self, arrays: Mapping[str, Any], name: str = ARRAYS_FILE) -> str:
        """Save named arrays (numbers or strings; no pickled objects) as one ``.npz``."""
        if not self.writer:
            return self.file(name)
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        for k, v in arrays.items():
            if v.dtype == object:
                raise ValueError(f"write_arrays: {k!r} is an object array; only numbers and "
                                 "strings are saved (no pickles).")
        path = self.file(name)
        atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")
        return path

    def read_arrays(self, name: str = ARRAYS_FILE) -> Optional[dict[str, np.ndarray]]:
        """The arrays saved by :meth:`write_arrays`, or None if there is no such file."""
        path = self.file(name)
        if not os.path.exists(path):
            return None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
