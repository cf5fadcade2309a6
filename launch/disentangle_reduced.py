r"""Figures 2, 3, 5-8 of the disentangling paper at reduced scale, plus their report.

    python -m launch.disentangle_reduced --root=workdirs/disentangle --docs=docs/disentangle/reduced
    python -m launch.disentangle_reduced --root=workdirs/disentangle --docs=... --report_only

The paper-scale grids (5 seeds for every condition, ``experiments/disentangle/config.py``)
need about 8 hours of a 2-core machine. This driver runs the same variants with the
full per-network step budget (1e5 Adam steps, 2e4 for the transformer) and the full
evaluation protocol, but **2 seeds** and, where a figure's N axis is long, a subset of N
(listed in ``RUNS``) -- about 2.3 hours on 2 cores (the seed-2-4 twins about 3.5 hours
more, the five-seed N = 3, 12 add-on runs about 1.5 hours, the Fig. 6 N = 6, 9 add-on 50
minutes). Conditions that figure 1 already
trained (the ReLU RNN at sigma 0.2, rho 0, fixed RT, ReLU encoder) are taken from the
``fig1`` run (paper scale, 5 seeds) restricted to the same 2 seeds, so every condition
in a panel has the same number of networks.

Each run is ``python -m experiments.disentangle.main`` in ``<root>/<name>`` (log in
``<root>/<name>.log``), skipped when its ``results.json`` exists and resumed from its
checkpoints otherwise. ``--extra_seeds=2,3,4`` adds a twin of every 2-seed run on those
seeds (``<name>_s234``) and merges it into the panels: the way to the paper's 5 seeds
in resumable pieces. A panel merges the twins only when all of its twins have finished
(every condition of a panel has the same seeds); until then it reports seeds 0 and 1,
and ``sources.json`` lists the seeds each panel used. Runs with five seeds (``fig1`` and
the add-on N points of Figs. 2, 6 and 8) are not twinned: a panel takes the seeds it
reports from them; an ``optional`` run (extra N points) that has not finished is left out
of its panels with a notice instead of holding them back. The report merges the
per-network rows of the runs a panel uses (``PANELS``), filters them, re-summarises (median and IQR over nets x folds x
fits), adds the exact Bayes posterior-mean r^2 (``theory.posterior_mean_r2``; the
Eq. 7 ceiling is its Gaussian approximation) and writes ``<docs>/<panel>/table.csv``,
``table.md``, ``sources.json`` (which runs and rows) and ``<panel>.png``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from absl import app, flags

_ROOT = flags.DEFINE_string("root", "workdirs/disentangle", "Directory holding the run workdirs.")
_DOCS = flags.DEFINE_string("docs", "docs/disentangle/reduced", "Where the panel tables/figures go.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the report from finished runs.")
_ONLY = flags.DEFINE_list("only", None, "Run only these run names (default: all).")
_EXTRA = flags.DEFINE_list(
    "extra_seeds", None, "More seeds for every reduced run, e.g. 2,3,4 (toward the paper's 5): "
    "each run gets a twin '<name>_s<seeds>' with these seeds, and the report merges them.")

CONFIG = "experiments/disentangle/config.py"
SEEDS = (0, 1)
FULL_SEEDS = (0, 1, 2, 3, 4)


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    variant: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds: Sequence[int] = SEEDS
    optional: bool = False  # extra points: a panel is drawn without them until they finish


RUNS = (
    # Figure 1 at paper scale (5 seeds): the shared reference networks.
    Run("fig1", "fig1", seeds=FULL_SEEDS),
    Run("fig2_noleak", "fig2", {"grid.cores": ("noleak",)}),
    Run("fig2_lstm_gru", "fig2", {"grid.cores": ("lstm", "gru"), "grid.n_tasks": (2, 6, 24)}),
    Run("fig2_transformer", "fig2", {"grid.cores": ("transformer",),
                                     "grid.n_tasks": (2, 6, 24)}),
    Run("fig5", "fig5"),
    Run("fig6", "fig6", {"grid.n_tasks": (3, 12)}),
    Run("fig8_corr", "fig8_corr", {"grid.rhos": (0.3, 0.6, 0.9)}),
    Run("fig8_curved", "fig8_curved"),
    Run("fig8_encoder", "fig8_encoder", {"grid.encoders": ("quadratic",),
                                         "grid.n_tasks": (2, 6, 24)}),
    Run("fig8_rt", "fig8_rt", {"grid.free_rt": (True,), "grid.n_tasks": (2, 6, 24)}),
    Run("fig7_reduced", "fig7", {"grid.n_tasks": (2, 24)}),
    Run("fig7_n6", "fig7", {"grid.n_tasks": (6,)}),
    # The remaining N of Fig. 2 for the gated nets and the transformer, five seeds at once.
    Run("fig2_transformer_n312", "fig2", {"grid.cores": ("transformer",),
                                          "grid.n_tasks": (3, 12)},
        seeds=FULL_SEEDS, optional=True),
    Run("fig2_lstm_gru_n312", "fig2", {"grid.cores": ("lstm", "gru"), "grid.n_tasks": (3, 12)},
        seeds=FULL_SEEDS, optional=True),
    # ... and of the Fig. 8 encoder and free-RT panels.
    Run("fig8_encoder_n312", "fig8_encoder", {"grid.encoders": ("quadratic",),
                                              "grid.n_tasks": (3, 12)},
        seeds=FULL_SEEDS, optional=True),
    Run("fig8_rt_n312", "fig8_rt", {"grid.free_rt": (True,), "grid.n_tasks": (3, 12)},
        seeds=FULL_SEEDS, optional=True),
    # Fig. 6's other two N of the paper's probable set {3, 6, 9, 12}, every D, five seeds.
    Run("fig6_n69", "fig6", {"grid.n_tasks": (6, 9)}, seeds=FULL_SEEDS, optional=True),
)
_BY_NAME = {r.name: r for r in RUNS}

# panel (= figure kind of experiments.disentangle.figures) -> [(run, row filter), ...];
# ``panels_for`` adds the seed filters of the five-seed runs and the extra-seed twins.
PANELS = {
    "fig2": [("fig1", {}), ("fig2_noleak", {}), ("fig2_lstm_gru", {}),
             ("fig2_lstm_gru_n312", {}), ("fig2_transformer", {}),
             ("fig2_transformer_n312", {})],
    "fig3": [("fig1", {}), ("fig2_transformer", {}), ("fig2_transformer_n312", {})],
    "fig5": [("fig5", {})],
    "fig6": [("fig6", {}), ("fig6_n69", {})],
    "fig7": [("fig7_reduced", {}), ("fig7_n6", {})],
    "fig8_encoder": [("fig1", {}), ("fig8_encoder", {}), ("fig8_encoder_n312", {})],
    "fig8_corr": [("fig1", {"n_tasks": (24,)}), ("fig8_corr", {})],
    "fig8_rt": [("fig1", {}), ("fig8_rt", {}), ("fig8_rt_n312", {})],
    "fig8_curved": [("fig8_curved", {})],
}


def _suffix(extra: Sequence[int]) -> str:
    return "_s" + "".join(str(int(e)) for e in extra)


def runs_for(extra: Sequence[int] = ()) -> list[Run]:
    """``RUNS`` plus, with ``extra`` seeds, a twin of every 2-seed run on those seeds."""
    extra = tuple(int(e) for e in extra)
    if set(extra) & set(SEEDS):
        raise ValueError(f"extra seeds {extra} repeat the reduced seeds {SEEDS}.")
    twins = [dataclasses.replace(r, name=r.name + _suffix(extra), seeds=extra)
             for r in RUNS if extra and tuple(r.seeds) == SEEDS]
    return list(RUNS) + twins


def panels_for(extra: Sequence[int] = ()) -> dict:
    """``PANELS`` with seed filters: seeds ``SEEDS + extra`` of every panel.

    A two-seed run contributes itself and, with ``extra``, its twin; a five-seed run
    (``fig1``, the add-on N points) contributes the rows of those seeds.
    """
    extra = tuple(int(e) for e in extra)
    seeds = tuple(SEEDS) + extra
    out = {}
    for panel, parts in PANELS.items():
        new = []
        for name, where in parts:
            if tuple(_BY_NAME[name].seeds) != tuple(SEEDS):
                new.append((name, {**where, "seed": seeds}))
            else:
                new.append((name, where))
                if extra:
                    new.append((name + _suffix(extra), where))
        out[panel] = new
    return out


def command(run: Run, root: str) -> list[str]:
    argv = [sys.executable, "-m", "experiments.disentangle.main",
            f"--config={CONFIG}:{run.variant}", f"--workdir={os.path.join(root, run.name)}",
            f"--config.seeds={tuple(run.seeds)!r}"]
    argv += [f"--config.{k}={v!r}" for k, v in run.overrides.items()]
    return argv


def run_all(runs: Sequence[Run], root: str) -> list[str]:
    """Run what is missing, one at a time (each run uses every core); return failures."""
    failed = []
    for r in runs:
        if os.path.exists(os.path.join(root, r.name, "results.json")):
            print(f"skip {r.name} (results.json exists)", flush=True)
            continue
        log = os.path.join(root, r.name + ".log")
        os.makedirs(root, exist_ok=True)
        t0, argv = time.time(), command(r, root)
        print(f"run  {r.name}: {' '.join(argv[1:])}", flush=True)
        with open(log, "a") as f:
            rc = subprocess.call(argv, stdout=f, stderr=subprocess.STDOUT)
        print(f"     {r.name}: exit {rc} after {time.time() - t0:.0f}s (log {log})", flush=True)
        if rc:
            failed.append(r.name)
    return failed


def _keep(row: Mapping[str, Any], where: Mapping[str, Sequence[Any]]) -> bool:
    return all(row[k] in tuple(v) for k, v in where.items())


def panel_rows(root: str, parts) -> tuple[list[dict], dict]:
    """Per-network rows of a panel and the wall/train seconds of the runs it uses."""
    rows, timing = [], {}
    for name, where in parts:
        path = os.path.join(root, name, "results.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} missing: run `python -m launch.disentangle_reduced "
                                    f"--root={root} --only={name}` first.")
        with open(path) as f:
            res = json.load(f)
        rows += [r for r in res["rows"] if _keep(r, where)]
        timing[name] = {"wall_s": res.get("wall_time_s"),
                        "train_s": sum(t["train_s"] for t in res.get("timing", {}).values())}
    return rows, timing


def report(root: str, docs: str, extra: Sequence[int] = ()) -> list[str]:
    from experiments.disentangle import experiment, figures
    from gbi_jax.analysis import theory
    from gbi_jax.workdir import Workdir

    def done(name):
        return os.path.exists(os.path.join(root, name, "results.json"))

    written = []
    base = panels_for(())
    for panel, parts in panels_for(extra).items():
        skip = {n for n, _ in parts if n in _BY_NAME and _BY_NAME[n].optional and not done(n)}
        if skip:
            print(f"panel {panel}: {sorted(skip)} not finished: drawn without them", flush=True)
        parts = [p for p in parts if p[0] not in skip]
        two_seed = [p for p in base[panel] if p[0] not in skip]
        missing = [n for n, _ in parts if not done(n)]
        if extra and missing and not any(n in missing for n, _ in two_seed):
            # Every condition of a panel keeps the same seeds: until all the extra-seed
            # twins of a panel have finished, the panel reports the 2-seed runs.
            print(f"panel {panel}: {missing} not finished: reporting seeds {list(SEEDS)} only",
                  flush=True)
            parts = two_seed
        try:
            rows, timing = panel_rows(root, parts)
        except FileNotFoundError as e:
            print(f"panel {panel}: {e}", flush=True)
            continue
        table = experiment.summarise(rows)
        for row in table:  # the Bayes posterior mean's r^2: exact for independent factors
            t = row["stim_steps"] + (1 if row["free_rt"] else 0)
            row["posterior_mean_r2"] = (float(theory.posterior_mean_r2(row["sigma"], t))
                                        if row["rho"] == 0 else float("nan"))
        out = os.path.join(docs, panel)
        os.makedirs(out, exist_ok=True)
        experiment.write_tables(Workdir(out), table)
        with open(os.path.join(out, "sources.json"), "w") as f:
            json.dump({"runs": [{"run": n, "filter": {k: list(v) for k, v in w.items()}}
                                for n, w in parts], "timing": timing,
                       "networks": len(rows),
                       "seeds": sorted({int(r["seed"]) for r in rows})}, f, indent=1)
        written.append(figures.make_figure({"figure": panel, "table": table}, out))
        print(f"panel {panel}: {len(rows)} networks -> {out}", flush=True)
    return written


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        extra = tuple(int(e) for e in (_EXTRA.value or ()))
        all_runs = runs_for(extra)
    except ValueError as e:
        raise app.UsageError(f"--extra_seeds: {e}") from None
    names = {r.name for r in all_runs}
    if _ONLY.value and not set(_ONLY.value) <= names:
        raise app.UsageError(f"--only names unknown runs {sorted(set(_ONLY.value) - names)}; "
                             f"choose from {sorted(names)}")
    failed = []
    if not _REPORT_ONLY.value:
        runs = [r for r in all_runs if not _ONLY.value or r.name in _ONLY.value]
        failed = run_all(runs, _ROOT.value)
    report(_ROOT.value, _DOCS.value, extra)
    if failed:
        print(f"FAILED runs: {failed}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
