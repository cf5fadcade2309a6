r"""Disentangling, Figs. 2, 3 and 5-8: every run behind the panels, five seeds each.

    python -m launch.run --sweep=launch/sweeps/disentangle_panels.py           # every run
    python -m launch.run --sweep=launch/sweeps/disentangle_panels.py:fig5      # one panel's runs
    python -m launch.report --sweep=launch/sweeps/disentangle_panels.py        # tables, figures
    python -m launch.docs --only=disentangle                                   # docs/disentangle

Each run is ``python -m experiments.disentangle.main`` with a figure's config variant
(``experiments/disentangle/config.py:<variant>``) in ``workdirs/disentangle/<run>``, at
the full step budget (1e5 Adam steps, 2e4 for the transformer) and the full evaluation
protocol. The runs go one at a time (``parallel=1``): each trains its networks vmapped
over every core. About 8 hours on a 2-core CPU host in all: the seed-0,1 runs 2.3 hours,
their seed-2,3,4 twins 3.5 hours, the five-seed N = 3, 12 add-ons 1.5 hours,
``fig6_n69`` 50 minutes, ``fig1`` 20 minutes.

How the five seeds are made (``RUNS``): a run on seeds 0, 1 (where a figure's N axis is
long, on a subset of N) has a twin ``<run>_s234`` on seeds 2, 3, 4; the add-on runs
(``*_n312``, ``fig6_n69``: the remaining N points) train all five seeds at once; the
conditions Fig. 1 already trained (ReLU RNN, sigma 0.2, rho 0, fixed RT, ReLU encoder)
come from the ``fig1`` run (paper scale, 5 seeds, the same workdir as the Fig. 1
command). A panel (``get_panels()``) merges the per-network rows of its runs, summarises
them with ``experiments.disentangle.experiment.summarise`` (median and IQR over networks
x folds x fits), adds the exact Bayes posterior-mean r^2
(``gbi_jax.analysis.theory.posterior_mean_r2``; the Eq. 7 ceiling is its Gaussian
approximation) and draws the figure kind of the same name
(``experiments.disentangle.figures``). While some seed-2,3,4 twins of a panel have not
finished, ``launch.report`` draws it from seeds 0, 1 of every condition; an add-on run
that has not finished is left out of its panels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from launch.report import Panel, Part
from launch.sweep import Run, Sweep

CONFIG = "experiments/disentangle/config.py"
ROOT = "workdirs/disentangle"
FIRST_SEEDS = (0, 1)
TWIN_SEEDS = (2, 3, 4)
ALL_SEEDS = FIRST_SEEDS + TWIN_SEEDS
TWIN_SUFFIX = "_s" + "".join(str(s) for s in TWIN_SEEDS)


@dataclasses.dataclass(frozen=True)
class FigureRun:
    """One training run: a config variant, overrides and the seeds it trains."""

    name: str
    variant: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds: Sequence[int] = FIRST_SEEDS
    optional: bool = False  # an add-on: panels are drawn without it until it finishes

    @property
    def twinned(self) -> bool:
        return tuple(self.seeds) == FIRST_SEEDS


RUNS = (
    # Figure 1 at paper scale (5 seeds): the shared reference networks.
    FigureRun("fig1", "fig1", seeds=ALL_SEEDS),
    FigureRun("fig2_noleak", "fig2", {"grid.cores": ("noleak",)}),
    FigureRun("fig2_lstm_gru", "fig2", {"grid.cores": ("lstm", "gru"),
                                        "grid.n_tasks": (2, 6, 24)}),
    FigureRun("fig2_transformer", "fig2", {"grid.cores": ("transformer",),
                                           "grid.n_tasks": (2, 6, 24)}),
    FigureRun("fig5", "fig5"),
    FigureRun("fig6", "fig6", {"grid.n_tasks": (3, 12)}),
    FigureRun("fig8_corr", "fig8_corr", {"grid.rhos": (0.3, 0.6, 0.9)}),
    FigureRun("fig8_curved", "fig8_curved"),
    FigureRun("fig8_encoder", "fig8_encoder", {"grid.encoders": ("quadratic",),
                                               "grid.n_tasks": (2, 6, 24)}),
    FigureRun("fig8_rt", "fig8_rt", {"grid.free_rt": (True,), "grid.n_tasks": (2, 6, 24)}),
    FigureRun("fig7_n2_24", "fig7", {"grid.n_tasks": (2, 24)}),
    FigureRun("fig7_n6", "fig7", {"grid.n_tasks": (6,)}),
    # The remaining N of Fig. 2 for the gated nets and the transformer, five seeds at once ...
    FigureRun("fig2_transformer_n312", "fig2", {"grid.cores": ("transformer",),
                                                "grid.n_tasks": (3, 12)},
              seeds=ALL_SEEDS, optional=True),
    FigureRun("fig2_lstm_gru_n312", "fig2", {"grid.cores": ("lstm", "gru"),
                                             "grid.n_tasks": (3, 12)},
              seeds=ALL_SEEDS, optional=True),
    # ... and of the Fig. 8 encoder and free-RT panels.
    FigureRun("fig8_encoder_n312", "fig8_encoder", {"grid.encoders": ("quadratic",),
                                                    "grid.n_tasks": (3, 12)},
              seeds=ALL_SEEDS, optional=True),
    FigureRun("fig8_rt_n312", "fig8_rt", {"grid.free_rt": (True,), "grid.n_tasks": (3, 12)},
              seeds=ALL_SEEDS, optional=True),
    # Fig. 6 at N = 6, 9 (with fig6's 3, 12: the set {3, 6, 9, 12}), every D, five seeds.
    FigureRun("fig6_n69", "fig6", {"grid.n_tasks": (6, 9)}, seeds=ALL_SEEDS, optional=True),
)
BY_NAME = {r.name: r for r in RUNS}

# panel (= figure kind of experiments.disentangle.figures) -> [(run, row filter), ...]
PANELS = {
    "fig2": [("fig1", {}), ("fig2_noleak", {}), ("fig2_lstm_gru", {}),
             ("fig2_lstm_gru_n312", {}), ("fig2_transformer", {}),
             ("fig2_transformer_n312", {})],
    "fig3": [("fig1", {}), ("fig2_transformer", {}), ("fig2_transformer_n312", {})],
    "fig5": [("fig5", {})],
    "fig6": [("fig6", {}), ("fig6_n69", {})],
    "fig7": [("fig7_n2_24", {}), ("fig7_n6", {})],
    "fig8_encoder": [("fig1", {}), ("fig8_encoder", {}), ("fig8_encoder_n312", {})],
    "fig8_corr": [("fig1", {"n_tasks": (24,)}), ("fig8_corr", {})],
    "fig8_rt": [("fig1", {}), ("fig8_rt", {}), ("fig8_rt_n312", {})],
    "fig8_curved": [("fig8_curved", {})],
}


def twin(run: FigureRun) -> FigureRun:
    """The same run on the seeds 2, 3, 4."""
    return dataclasses.replace(run, name=run.name + TWIN_SUFFIX, seeds=TWIN_SEEDS)


def all_runs() -> list[FigureRun]:
    """``RUNS`` and the seed-2,3,4 twin of every run on seeds 0, 1."""
    return list(RUNS) + [twin(r) for r in RUNS if r.twinned]


def job(run: FigureRun) -> Run:
    return Run(run.name, {"seeds": tuple(run.seeds), **run.overrides},
               config=f"{CONFIG}:{run.variant}")


def panel_parts(panel: str, seeds: Sequence[int] = ALL_SEEDS) -> list[Part]:
    """The parts of `panel` on `seeds` (all five, or the first two)."""
    parts = []
    for name, where in PANELS[panel]:
        run = BY_NAME[name]
        if run.twinned:
            parts.append(Part(name, where))
            if tuple(seeds) == ALL_SEEDS:
                parts.append(Part(twin(run).name, where))
        else:
            parts.append(Part(name, {**where, "seed": tuple(seeds)}, optional=run.optional))
    return parts


def get_sweep(arg: str = "") -> Sweep:
    """Every run (``arg`` empty), or the runs of one panel (``arg`` = its name)."""
    runs = all_runs()
    if arg:
        if arg not in PANELS:
            raise ValueError(f"unknown panel {arg!r}; choose from {sorted(PANELS)} "
                             "or give no argument for every run")
        names = {p.run for p in panel_parts(arg)}
        runs = [r for r in runs if r.name in names]
    return Sweep(experiment="experiments.disentangle.main", config=None,
                 jobs=[job(r) for r in runs], name=f"disentangle_panels_{arg}" if arg else None,
                 root=ROOT, parallel=1, aggregate=False)


def summarise(rows: list[dict]) -> list[dict]:
    """Median / IQR table of the rows, plus the exact posterior-mean r^2 of each condition
    (independent factors only; NaN for rho != 0)."""
    from experiments.disentangle import experiment
    from gbi_jax.analysis import theory

    table = experiment.summarise(rows)
    for row in table:
        t = row["stim_steps"] + (1 if row["free_rt"] else 0)
        row["posterior_mean_r2"] = (float(theory.posterior_mean_r2(row["sigma"], t))
                                    if row["rho"] == 0 else float("nan"))
    return table


def write_tables(out_dir: str, table: list[dict]) -> None:
    from experiments.disentangle import experiment
    from gbi_jax.workdir import Workdir

    experiment.write_tables(Workdir(out_dir), table)


def draw(results: dict, out_dir: str) -> str:
    from experiments.disentangle import figures

    return figures.make_figure(results, out_dir)


def get_panels() -> list[Panel]:
    return [Panel(name, panel_parts(name), summarise, write_tables, draw,
                  fallbacks=(panel_parts(name, FIRST_SEEDS),))
            for name in PANELS]
