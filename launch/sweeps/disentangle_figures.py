"""Disentangling: one figure's networks as one process (job) per seed.

    python -m launch.run --sweep=launch/sweeps/disentangle_figures.py:smoke \
        --root=workdirs/sweeps/disentangle_smoke
    python -m launch.run --sweep=launch/sweeps/disentangle_figures.py:fig1 \
        --root=workdirs/sweeps/disentangle_fig1_seeds

A figure is a config variant (``experiments/disentangle/config.py:<figure>``), and a
sweep file names one config, so ``get_sweep(arg)`` picks it: ``smoke`` runs
``fig1_smoke`` over the five seeds as separate jobs (a quick check of the launcher
path); a figure name runs that figure once per seed as separate processes, each
training its N values (and other dynamic axes) vmapped -- the alternative to the
default single process that vmaps the seeds too. Each job splits the CPU into one host
device per core, so a figure's jobs run one at a time (``parallel=1``; the smoke jobs
as many at once as there are cores).
"""

from launch.sweep import Sweep, fixed, product, sweep


def get_sweep(arg: str = "smoke") -> Sweep:
    config = "fig1_smoke" if arg == "smoke" else arg
    return Sweep(
        experiment="experiments.disentangle.main",
        config=f"experiments/disentangle/config.py:{config}",
        jobs=product(fixed("seeds", (0,)), sweep("seed", (0, 1, 2, 3, 4))),
        name=f"disentangle_{config}",
        parallel=None if arg == "smoke" else 1,
    )
