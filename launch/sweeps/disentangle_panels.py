r"""Disentangling, Figs. 2, 3 and 5-8: every run behind the panels, five seeds each.

    python -m launch.run --sweep=launch/sweeps/disentangle_panels.py           # every run
    python -m launch.run --sweep=launch/sweeps/disentangle_panels.py:fig5      # one panel's runs
    python -m launch.report --sweep=launch/sweeps/disentangle_panels.py        # tables, figures
    python -m launch.docs --only=disentangle                                   # docs/disentangle

Each run is ``python -m experiments.disentangle.main`` with a figure's config variant
(``experiments/disentangle/config.py:<variant>``) in ``workdirs/disentangle/<run>``, at
the full step budget (1e5 Adam steps, 2e4 for the transformer) and the full evaluation
protocol. The runs go one at a time (``parallel=1``): each trains its networks vmapped
over every core. Training takes 3-6 hours on a 2-core CPU host, by CPU kind; on an
AVX2 EPYC 5.9 hours (``docs/benchmarks/sweep_projection.md``, every program timed): the
seed-0,1 runs 1.6 hours, their seed-2,3,4 twins 2.4 hours, the five-seed N = 3, 12
add-ons 62 minutes, ``fig6_n69`` 36 minutes, ``fig1`` 18 minutes; evaluation adds a few
percent. ``launch/sweeps/disentangle_packed.py`` trains the same networks as one job
per compiled program (5.55 hours there).

How the five seeds are made (``RUNS``, defined in ``experiments/disentangle/config.py``
with the variants they override): a run on seeds 0, 1 (where a figure's N axis is
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

from typing import Sequence

from experiments.disentangle import config as config_lib
from launch.report import Panel, Part
from launch.sweep import Run, Sweep

CONFIG = "experiments/disentangle/config.py"
ROOT = "workdirs/disentangle"
FIRST_SEEDS = config_lib.FIRST_SEEDS
TWIN_SEEDS = config_lib.TWIN_SEEDS
ALL_SEEDS = config_lib.ALL_SEEDS


# The runs and their seed twins are defined with the configs they override.
FigureRun = config_lib.FigureRun
RUNS = config_lib.RUNS
twin = config_lib.twin
all_runs = config_lib.panel_runs
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
