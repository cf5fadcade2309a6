r"""Merge finished workdirs of a sweep into panels: one table and one figure per panel.

    python -m launch.report --sweep=launch/sweeps/disentangle_panels.py \
        [--root=workdirs/disentangle] [--out=workdirs/disentangle/panels] [--only=fig2,fig5]

A panel is data (`Panel`, listed by the sweep file's ``get_panels()``): the runs it
takes per-network rows from (`Part`: a workdir name under the sweep root and a row
filter such as ``{"seed": (0, 1, 2, 3, 4)}``), the function that summarises those rows
into table rows, the function that writes ``table.csv`` / ``table.md`` and the one that
draws the figure. For each panel the report reads ``<root>/<run>/results.json`` of its
runs, keeps the rows (``results["rows"]``) that pass each part's filter, summarises them
and writes ``<out>/<panel>/``::

    table.csv, table.md   the summarised table
    sources.json          which runs and filters, their wall / training seconds, the number
                          of rows (networks) and the seeds they cover
    <figure>.png          the panel's figure

Unfinished runs (no ``results.json``): an ``optional`` part that has not finished is left
out of its panel with a notice; a panel with any other unfinished part is drawn from its
first ``fallbacks`` set whose parts have all finished (e.g. the first two seeds of every
condition, so that every condition keeps the same seeds), with a notice, else not drawn.
``strict=True`` (what ``launch.docs`` uses for the committed tables) takes the full set of
parts or nothing. A panel's files are written together: a panel that fails leaves the
previous files in ``<out>/<panel>/`` as they were. Exit status 1 when a selected panel
could not be drawn.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any, Callable, Mapping, Sequence

from absl import app, flags

from launch.jobs import RESULTS_FILE
from launch.sweep import load_module, load_sweep

SOURCES_FILE = "sources.json"
TABLE_FILES = ("table.csv", "table.md")


@dataclasses.dataclass(frozen=True)
class Part:
    """The rows one run contributes to a panel.

    Attributes:
        run: workdir name under the sweep root.
        where: row filter, field -> allowed values (a row is kept when every field's
            value is one of them); empty keeps every row.
        optional: a panel is drawn without this part (with a notice) until it finishes.
    """

    run: str
    where: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    optional: bool = False

    def keeps(self, row: Mapping[str, Any]) -> bool:
        return all(row[k] in tuple(v) for k, v in self.where.items())


@dataclasses.dataclass(frozen=True)
class Panel:
    """One table and one figure merged from the rows of several runs.

    Attributes:
        name: output directory name under ``--out``.
        parts: the runs and row filters of the full panel, in the order they are listed.
        summarise: per-network rows -> table rows (list of dicts).
        write_tables: ``(out_dir, table)`` -> writes ``table.csv`` and ``table.md``.
        draw: ``(results, out_dir)`` -> path of the png written; ``results`` is
            ``{"figure": figure, "table": table}``.
        figure: figure kind passed to ``draw`` (default: ``name``).
        fallbacks: smaller sets of parts, in order of preference, for a panel whose
            full set has not finished.
    """

    name: str
    parts: Sequence[Part]
    summarise: Callable[[list[dict]], list[dict]]
    write_tables: Callable[[str, list[dict]], None]
    draw: Callable[[dict, str], str]
    figure: str | None = None
    fallbacks: Sequence[Sequence[Part]] = ()

    @property
    def runs(self) -> list[str]:
        """Every run name the panel may read (full set first, then the fallbacks)."""
        names: dict[str, None] = {}
        for parts in (self.parts, *self.fallbacks):
            names.update(dict.fromkeys(p.run for p in parts))
        return list(names)


def finished(root: str, run: str) -> bool:
    return os.path.isfile(os.path.join(root, run, RESULTS_FILE))


def choose_parts(panel: Panel, root: str, *, strict: bool = False
                 ) -> tuple[list[Part] | None, list[str], list[str]]:
    """The parts a panel is drawn from now: ``(parts or None, notices, missing runs)``.

    ``missing`` lists the unfinished runs of the full set (optional ones included in
    strict mode); ``parts`` is None when the panel cannot be drawn.
    """
    if strict:
        missing = [p.run for p in panel.parts if not finished(root, p.run)]
        return (None if missing else list(panel.parts)), [], missing
    notices = []
    skip = {p.run for p in panel.parts if p.optional and not finished(root, p.run)}
    if skip:
        notices.append(f"{sorted(skip)} not finished: drawn without them")
    parts = [p for p in panel.parts if p.run not in skip]
    missing = [p.run for p in parts if not finished(root, p.run)]
    if not missing:
        return parts, notices, []
    for fallback in panel.fallbacks:
        fb = [p for p in fallback if not (p.optional and not finished(root, p.run))]
        if all(finished(root, p.run) for p in fb):
            seeds = sorted({s for p in fb for s in p.where.get("seed", ())})
            notices.append(f"{missing} not finished: drawn from "
                           + (f"seeds {seeds} only" if seeds else f"{[p.run for p in fb]}"))
            return fb, notices, missing
    return None, notices, missing


def panel_rows(root: str, parts: Sequence[Part]) -> tuple[list[dict], dict]:
    """Per-network rows of `parts` and the wall / training seconds of their runs."""
    rows, timing = [], {}
    for part in parts:
        path = os.path.join(root, part.run, RESULTS_FILE)
        with open(path) as f:
            res = json.load(f)
        rows += [r for r in res["rows"] if part.keeps(r)]
        timing[part.run] = {"wall_s": res.get("wall_time_s"),
                            "train_s": sum(t["train_s"] for t in res.get("timing", {}).values())}
    return rows, timing


def sources(parts: Sequence[Part], rows: Sequence[Mapping[str, Any]], timing: dict) -> dict:
    """The ``sources.json`` record of a panel."""
    out = {"runs": [{"run": p.run, "filter": {k: list(v) for k, v in p.where.items()}}
                    for p in parts],
           "timing": timing, "networks": len(rows)}
    if rows and all("seed" in r for r in rows):
        out["seeds"] = sorted({int(r["seed"]) for r in rows})
    return out


def write_panel(panel: Panel, rows: list[dict], src: dict, out: str) -> list[str]:
    """Writes the panel's tables, sources.json and figure into `out` (all or nothing)."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{panel.name}.", dir=parent)
    try:
        table = panel.summarise(rows)
        panel.write_tables(tmp, table)
        with open(os.path.join(tmp, SOURCES_FILE), "w") as f:
            json.dump(src, f, indent=1)
        panel.draw({"figure": panel.figure or panel.name, "table": table}, tmp)
        os.makedirs(out, exist_ok=True)
        written = []
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
            written.append(os.path.join(out, name))
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_panel(panel: Panel, root: str, out: str, *, strict: bool = False,
                log: Callable[[str], None] = print) -> list[str] | None:
    """Draws `panel` from the runs under `root` into `out`; returns the files written,
    or None (with the reason logged) when its runs have not finished."""
    parts, notices, missing = choose_parts(panel, root, strict=strict)
    for notice in notices:
        log(f"panel {panel.name}: {notice}")
    if parts is None:
        log(f"panel {panel.name}: not drawn, runs not finished: {missing}")
        return None
    rows, timing = panel_rows(root, parts)
    written = write_panel(panel, rows, sources(parts, rows, timing), out)
    log(f"panel {panel.name}: {len(rows)} networks -> {out}")
    return written


def load_panels(spec: str) -> list[Panel]:
    """The panels of a sweep file ``path.py`` (its ``get_panels()``)."""
    path = spec.partition(":")[0]
    get_panels = getattr(load_module(path), "get_panels", None)
    if not callable(get_panels):
        raise AttributeError(f"sweep file {path!r} defines no get_panels(); add one returning "
                             "a list of launch.report.Panel")
    panels = list(get_panels())
    if not all(isinstance(p, Panel) for p in panels):
        raise TypeError(f"{path}: get_panels() must return launch.report.Panel objects")
    return panels


def report(panels: Sequence[Panel], root: str, out: str, *, only: Sequence[str] = (),
           strict: bool = False, log: Callable[[str], None] = print) -> dict[str, list[str] | None]:
    """Builds every panel (or those named in `only`) into ``<out>/<panel>``."""
    names = [p.name for p in panels]
    unknown = sorted(set(only) - set(names))
    if unknown:
        raise ValueError(f"unknown panels {unknown}; choose from {names}")
    return {p.name: build_panel(p, root, os.path.join(out, p.name), strict=strict, log=log)
            for p in panels if not only or p.name in only}


def define_flags() -> None:
    """The command's flags (defined only when run as a command, so that sweep files can
    import this module next to ``launch.run``)."""
    flags.DEFINE_string("sweep", None, "Sweep file defining get_sweep() and get_panels().")
    flags.DEFINE_string("root", None, "Directory of the run workdirs (default: the sweep's "
                        "root).")
    flags.DEFINE_string("out", None, "Where the panel directories go (default: "
                        "<root>/panels).")
    flags.DEFINE_list("only", None, "Draw only these panels (default: all).")
    flags.DEFINE_bool("strict", False, "Draw a panel only from its full set of runs "
                      "(no fallback seeds, no optional run left out).")


def main(argv: Sequence[str]) -> int:
    # Run as ``python -m launch.report`` this file is ``__main__``; the sweep file's panels
    # are objects of the importable ``launch.report``, so work with that module.
    from launch import report as lib

    FLAGS = flags.FLAGS  # pylint: disable=invalid-name
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.sweep:
        raise app.UsageError("--sweep is required, e.g. "
                             "--sweep=launch/sweeps/disentangle_panels.py")
    panels = lib.load_panels(FLAGS.sweep)
    root = FLAGS.root or load_sweep(FLAGS.sweep.partition(":")[0]).root
    if not root:
        raise app.UsageError("the sweep sets no root; pass --root")
    out = FLAGS.out or os.path.join(root, "panels")
    try:
        built = lib.report(panels, root, out, only=FLAGS.only or (), strict=FLAGS.strict,
                       log=lambda msg: print(msg, flush=True))
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    not_drawn = [name for name, files in built.items() if files is None]
    if not_drawn:
        print(f"not drawn: {not_drawn}; run their missing runs with "
              f"`python -m launch.run --sweep={FLAGS.sweep.partition(':')[0]}:<panel>`",
              flush=True)
    return 1 if not_drawn else 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
