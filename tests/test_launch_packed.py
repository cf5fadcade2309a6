"""The packed disentangling sweep: one valid job per program, and panels that select the
same networks as the per-figure sweep's."""

import ast
import os

import pytest

from experiments.disentangle import config as config_lib
from experiments.disentangle import experiment
from launch import jobs as jobs_lib
from launch import report
from launch.sweep import load_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKED_FILE = os.path.join(REPO, "launch", "sweeps", "disentangle_packed.py")
PANELS_FILE = os.path.join(REPO, "launch", "sweeps", "disentangle_panels.py")
SWEEP = load_sweep(PACKED_FILE)
JOBS = {j.name: j for j in jobs_lib.plan_jobs(SWEEP.jobs)}
PROGRAMS = experiment.programs_of(config_lib.get_config("panels"))


def _config_of(job):
    argv = jobs_lib.command(SWEEP, job, "root")
    c = config_lib.get_config(argv[3].partition(":")[2])
    for a in argv[5:]:
        key, _, value = a[len("--config."):].partition("=")
        c[key] = ast.literal_eval(value) if value.startswith("(") else value
    return c


def test_one_job_per_program():
    assert SWEEP.parallel == 1 and SWEEP.root == "workdirs/disentangle_packed"
    assert set(JOBS) == set(PROGRAMS) and len(JOBS) == 27
    for name, job in JOBS.items():
        c = _config_of(job)
        experiment.validate(c)
        (program,) = experiment.programs_of(c).values()
        assert program == PROGRAMS[name]  # the same networks and rows as in the full run


def _selected(panel, lookup):
    """(run, member) pairs the parts of `panel` keep, ``lookup(part)`` giving the
    candidate (run, member, row fields) triples of one part."""
    out = set()
    for part in panel.parts:
        for run, member, fields in lookup(part):
            if part.keeps(fields):
                out.add((run, member))
    return out


def test_packed_panels_select_the_per_figure_panels_networks():
    per_figure = {p.name: p for p in report.load_panels(PANELS_FILE)}
    packed = {p.name: p for p in report.load_panels(PACKED_FILE)}
    assert set(packed) == set(per_figure)
    base = config_lib.get_config("panels")

    def figure_rows(part):
        members = experiment.members_of(config_lib.part_config(base, part.run))
        return [(part.run, m, m.row()) for m in members]

    def packed_rows(part):
        return [(e.part, e.member, {**e.member.row(), "part": e.part})
                for e in PROGRAMS[part.run].entries]

    for name in per_figure:
        want = _selected(per_figure[name], figure_rows)
        got = _selected(packed[name], packed_rows)
        assert want and got == want, name


def test_one_panels_jobs():
    fig5 = {j.name for j in load_sweep(f"{PACKED_FILE}:fig5").jobs}
    assert fig5 == {f"rnn_D2_T{t}_free_linear_R24_relu" for t in (5, 10, 20, 40)}
    with pytest.raises(ValueError, match="unknown panel 'fig9'"):
        load_sweep(f"{PACKED_FILE}:fig9")
