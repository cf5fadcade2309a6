r"""Disentangling, every panel's networks packed by program: one job per compiled program.

    python -m launch.run --sweep=launch/sweeps/disentangle_packed.py            # every job
    python -m launch.run --sweep=launch/sweeps/disentangle_packed.py:fig5       # one panel's
    python -m launch.run --sweep=launch/sweeps/disentangle_packed.py --executor=slurm \
        --gpus_per_job=1                                                       # on a cluster
    python -m launch.report --sweep=launch/sweeps/disentangle_packed.py         # panels

The same 405 network rows as ``launch/sweeps/disentangle_panels.py`` (its runs are the
*parts*, ``experiments.disentangle.config.RUNS`` and their seed twins), trained as 27
programs instead of 49 and 390 networks instead of 405: a run's seed-0,1 and seed-2,3,4
twins train together, runs whose networks share a static setting and program shapes
(readout width, encoder kinds) share one program, and a network two runs both train
(Fig. 7 at sigma = 0.2, N = 2, 24 is Fig. 1's; the free-RT N = 24 networks of Fig. S5c
are Fig. 5a's at T = 20) is trained once. Each network keeps its run's initialisation,
data stream and evaluation keys (``tests/test_disentangle_experiment.py`` checks that
the rows equal the per-figure runs'); with another number of networks per device XLA's
CPU kernels may round the last bit differently, which training amplifies as between two
machines (``docs/benchmarks/sweep_packing.md`` counts the rows that stay bit-equal).
Each job is
``python -m experiments.disentangle.main --config=experiments/disentangle/config.py:panels
--config.parts=(...) --config.pack=<program>`` in ``workdirs/disentangle_packed/<program>``;
its rows carry the ``part`` (run) they belong to, and the panels select rows by part.
Jobs run one at a time here (each trains its networks vmapped over every core); give
``--parallel`` the number of GPUs on a GPU host. The CPU time of both sweeps is measured
by ``benchmarks/sweep_packing.py`` (``docs/benchmarks/sweep_packing.md``).
"""

from __future__ import annotations

from experiments.disentangle import config as config_lib
from experiments.disentangle import grid
from launch.report import Panel, Part
from launch.sweep import Run, Sweep
from launch.sweeps import disentangle_panels as panels_sweep

CONFIG = "experiments/disentangle/config.py"
VARIANT = "panels"
ROOT = "workdirs/disentangle_packed"


def programs() -> dict[str, tuple[str, ...]]:
    """Program name -> the parts (panel runs) with networks in it, in run order."""
    config = config_lib.get_config(VARIANT)
    return {name: tuple(dict.fromkeys(e.part for e in program.entries))
            for name, program in grid.programs_of(config).items()}


def get_sweep(arg: str = "") -> Sweep:
    """One job per program (``arg`` empty), or the jobs of one panel's programs."""
    progs = programs()
    if arg:
        if arg not in panels_sweep.PANELS:
            raise ValueError(f"unknown panel {arg!r}; choose from {sorted(panels_sweep.PANELS)} "
                             "or give no argument for every job")
        wanted = {p.run for p in panels_sweep.panel_parts(arg)}
        progs = {k: v for k, v in progs.items() if wanted & set(v)}
    jobs = [Run(name, {"parts": parts, "pack": name}, config=f"{CONFIG}:{VARIANT}")
            for name, parts in progs.items()]
    return Sweep(experiment="experiments.disentangle.main", config=None, jobs=jobs,
                 name=f"disentangle_packed_{arg}" if arg else None, root=ROOT, parallel=1,
                 aggregate=False)


def panel_parts(panel: str) -> list[Part]:
    """The rows of `panel`: the rows of each of its runs (the per-figure sweep's parts),
    from the programs that hold them."""
    progs = programs()
    return [Part(program, {**part.where, "part": (part.run,)})
            for part in panels_sweep.panel_parts(panel)
            for program, parts in progs.items() if part.run in parts]


def get_panels() -> list[Panel]:
    return [Panel(name, panel_parts(name), panels_sweep.summarise, panels_sweep.write_tables,
                  panels_sweep.draw) for name in panels_sweep.PANELS]
