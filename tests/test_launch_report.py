"""`launch.report` and the disentangling panel sweep: runs are valid configs, panels merge."""

import ast
import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from experiments.disentangle import config as config_lib
from experiments.disentangle import experiment
from launch import jobs as jobs_lib
from launch import report
from launch.sweep import load_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_FILE = os.path.join(REPO, "launch", "sweeps", "disentangle_panels.py")
SWEEP = load_sweep(SWEEP_FILE)
PANELS = {p.name: p for p in report.load_panels(SWEEP_FILE)}
JOBS = {j.name: j for j in jobs_lib.plan_jobs(SWEEP.jobs)}


def _config_of(job):
    """The config a job's command builds (variant + ``--config.<path>=<value>`` overrides)."""
    argv = jobs_lib.command(SWEEP, job, "root")
    variant = argv[3].partition(":")[2]
    c = config_lib.get_config(variant)
    for a in argv[5:]:
        key, _, value = a[len("--config."):].partition("=")
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = ast.literal_eval(value)
    return c


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_run_is_a_valid_config(name):
    c = _config_of(JOBS[name])
    experiment.validate(c)
    assert tuple(c.seeds) == JOBS[name].overrides["seeds"]
    assert experiment.members_of(c)  # the grid is non-empty


def test_sweep_runs_one_at_a_time_into_named_workdirs():
    assert SWEEP.parallel == 1 and SWEEP.root == "workdirs/disentangle"
    assert not SWEEP.aggregate
    assert "fig1" in JOBS and not any("reduced" in n for n in JOBS)
    assert JOBS["fig1"].config == "experiments/disentangle/config.py:fig1"
    assert JOBS["fig1"].overrides == {"seeds": (0, 1, 2, 3, 4)}


def test_every_two_seed_run_has_a_twin_on_seeds_234():
    two_seed = [n for n, j in JOBS.items() if j.overrides["seeds"] == (0, 1)]
    assert two_seed
    for name in two_seed:
        twin = JOBS[name + "_s234"]
        assert twin.overrides == {**JOBS[name].overrides, "seeds": (2, 3, 4)}
        assert twin.config == JOBS[name].config
    five = [n for n, j in JOBS.items() if j.overrides["seeds"] == (0, 1, 2, 3, 4)]
    assert set(five) == {"fig1", "fig2_transformer_n312", "fig2_lstm_gru_n312",
                         "fig8_encoder_n312", "fig8_rt_n312", "fig6_n69"}
    assert not any(n + "_s234" in JOBS for n in five)
    assert len(JOBS) == len(five) + 2 * len(two_seed)


def test_panels_use_sweep_runs_and_figure_kinds():
    assert set(PANELS) == {"fig2", "fig3", "fig5", "fig6", "fig7", "fig8_corr",
                           "fig8_curved", "fig8_encoder", "fig8_rt"}
    for name, panel in PANELS.items():
        assert name in config_lib.FIGURES, name
        assert set(panel.runs) <= set(JOBS), name
    # the full panel covers five seeds per condition: a two-seed run and its twin, or the
    # five-seed run filtered to the seeds 0-4
    assert [(p.run, dict(p.where)) for p in PANELS["fig8_corr"].parts] == [
        ("fig1", {"n_tasks": (24,), "seed": (0, 1, 2, 3, 4)}),
        ("fig8_corr", {}), ("fig8_corr_s234", {})]
    assert [(p.run, dict(p.where)) for p in PANELS["fig8_corr"].fallbacks[0]] == [
        ("fig1", {"n_tasks": (24,), "seed": (0, 1)}), ("fig8_corr", {})]
    fig6 = PANELS["fig6"].parts
    assert [p.run for p in fig6] == ["fig6", "fig6_s234", "fig6_n69"]
    assert [p.optional for p in fig6] == [False, False, True]


def test_one_panels_runs():
    fig5 = load_sweep(f"{SWEEP_FILE}:fig5")
    assert [j.name for j in fig5.jobs] == ["fig5", "fig5_s234"]
    fig8 = {j.name for j in load_sweep(f"{SWEEP_FILE}:fig8_corr").jobs}
    assert fig8 == {"fig1", "fig8_corr", "fig8_corr_s234"}
    with pytest.raises(ValueError, match="unknown panel 'fig9'"):
        load_sweep(f"{SWEEP_FILE}:fig9")


def _row(seed, n, ood, **kw):
    base = dict(core="rnn", dim=2, stim_steps=20, free_rt=False, boundary="linear",
                n_tasks=n, sigma=0.2, rho=0.0, encoder="relu", seed=seed, group="g",
                ood_r2=ood, id_r2=[0.9] * len(ood), angles=[90.0], accuracy=0.95,
                bayes_accuracy=0.96, r2_ceiling=0.976, final_loss=0.67)
    base.update(kw)
    return base


def _write(root, name, seeds, ns=(2, 6, 24), ood=None, **kw):
    os.makedirs(root / name)
    rows = [_row(s, n, ood(s, n) if ood else [0.5 + 0.01 * s] * 4, **kw)
            for s in seeds for n in ns]
    with open(root / name / "results.json", "w") as f:
        json.dump({"rows": rows, "wall_time_s": 1.0, "timing": {"g": {"train_s": 2.0}}}, f)


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_filters_merges_and_adds_the_posterior_mean(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "out"
    _write(root, "fig1", range(5), ns=(2, 3, 6, 12, 24), ood=lambda s, n: [0.1 * s + n / 100] * 4)
    _write(root, "fig8_encoder", (0, 1), encoder="quadratic")
    _write(root, "fig8_encoder_s234", (2, 3, 4), encoder="quadratic")
    _write(root, "fig8_encoder_n312", range(5), ns=(3, 12), encoder="quadratic")
    built = report.report(list(PANELS.values()), str(root), str(out), log=lambda m: None)
    assert {k for k, v in built.items() if v} == {"fig8_encoder"}  # only its runs exist
    table = _read_csv(out / "fig8_encoder" / "table.csv")
    assert len(table) == 10  # 5 N x 2 encoders
    assert {int(r["networks"]) for r in table} == {5}
    relu = {int(r["n_tasks"]): r for r in table if r["encoder"] == "relu"}
    for n, r in relu.items():  # the median over seeds 0-4 of 0.1 s + n / 100
        np.testing.assert_allclose(float(r["ood_r2_median"]), 0.2 + n / 100)
        # the exact posterior-mean r^2 at sigma 0.2, t = 20 samples: 0.978
        np.testing.assert_allclose(float(r["posterior_mean_r2"]), 0.978, atol=1e-3)
    # the table is experiment.summarise of the merged rows, written by write_tables
    rows = [r for name in ("fig1", "fig8_encoder", "fig8_encoder_s234", "fig8_encoder_n312")
            for r in json.load(open(root / name / "results.json"))["rows"]]
    expected = experiment.summarise(rows)
    assert [r["ood_r2_median"] for r in expected] == [float(r["ood_r2_median"]) for r in table]
    src = json.load(open(out / "fig8_encoder" / "sources.json"))
    assert src["networks"] == 5 * 5 + 2 * 3 + 3 * 3 + 5 * 2
    assert src["seeds"] == [0, 1, 2, 3, 4]
    assert src["runs"][0] == {"run": "fig1", "filter": {"seed": [0, 1, 2, 3, 4]}}
    assert src["timing"]["fig1"] == {"wall_s": 1.0, "train_s": 2.0}
    assert os.path.getsize(out / "fig8_encoder" / "fig8_encoder.png") > 1000


def test_panel_falls_back_to_two_seeds_until_its_twins_finish(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "out"
    _write(root, "fig1", range(5), ns=(2, 3, 6, 12, 24))
    _write(root, "fig8_rt", (0, 1), free_rt=True)  # fig8_rt_s234 not finished
    _write(root, "fig8_rt_n312", range(5), ns=(3, 12), free_rt=True)
    notices = []
    report.report([PANELS["fig8_rt"]], str(root), str(out), log=notices.append)
    src = json.load(open(out / "fig8_rt" / "sources.json"))
    assert src["seeds"] == [0, 1]
    assert [r["run"] for r in src["runs"]] == ["fig1", "fig8_rt", "fig8_rt_n312"]
    assert {int(r["networks"]) for r in _read_csv(out / "fig8_rt" / "table.csv")} == {2}
    assert any("['fig8_rt_s234'] not finished: drawn from seeds [0, 1] only" in m
               for m in notices)
    # strict: the full set or nothing, and the files already there stay as they are
    before = {f: (out / "fig8_rt" / f).read_bytes() for f in os.listdir(out / "fig8_rt")}
    assert report.report([PANELS["fig8_rt"]], str(root), str(out), strict=True,
                         log=notices.append) == {"fig8_rt": None}
    assert {f: (out / "fig8_rt" / f).read_bytes() for f in os.listdir(out / "fig8_rt")} == before
    assert "panel fig8_rt: not drawn, runs not finished: ['fig8_rt_s234']" in notices


def test_optional_runs_join_panels_when_finished(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "out"
    _write(root, "fig1", range(5), ns=(2, 3, 6, 12, 24))
    _write(root, "fig2_transformer", (0, 1), core="transformer")
    _write(root, "fig2_transformer_s234", (2, 3, 4), core="transformer")
    notices = []
    report.report([PANELS["fig3"]], str(root), str(out), log=notices.append)
    src = json.load(open(out / "fig3" / "sources.json"))
    assert [r["run"] for r in src["runs"]] == ["fig1", "fig2_transformer",
                                               "fig2_transformer_s234"]
    assert src["networks"] == 5 * 5 + 5 * 3
    assert any("['fig2_transformer_n312'] not finished: drawn without them" in m
               for m in notices)
    _write(root, "fig2_transformer_n312", range(5), ns=(3, 12), core="transformer")
    report.report([PANELS["fig3"]], str(root), str(out), strict=True, log=notices.append)
    src = json.load(open(out / "fig3" / "sources.json"))
    assert src["runs"][-1] == {"run": "fig2_transformer_n312", "filter": {"seed": [0, 1, 2, 3, 4]}}
    table = _read_csv(out / "fig3" / "table.csv")
    assert sorted(int(r["n_tasks"]) for r in table if r["core"] == "transformer") == [
        2, 3, 6, 12, 24]
    assert {int(r["networks"]) for r in table} == {5}


def _mean_panel(name, parts, draw=None):
    """A panel that is not the disentangling one: mean 'loss' per 'lr'."""

    def summarise(rows):
        lrs = sorted({r["lr"] for r in rows})
        return [{"lr": lr, "loss": float(np.mean([r["loss"] for r in rows if r["lr"] == lr]))}
                for lr in lrs]

    def write_tables(out_dir, table):
        with open(os.path.join(out_dir, "table.md"), "w") as f:
            f.write("".join(f"| {r['lr']} | {r['loss']} |\n" for r in table))

    def default_draw(results, out_dir):
        path = os.path.join(out_dir, f"{results['figure']}.png")
        with open(path, "wb") as f:
            f.write(b"png")
        return path

    return report.Panel(name, parts, summarise, write_tables, draw or default_draw)


def test_report_is_generic_and_writes_a_panel_all_or_nothing(tmp_path):
    root, out = tmp_path / "runs", tmp_path / "out"
    for name, seeds in (("a", (0, 1)), ("b", (2,))):
        os.makedirs(root / name)
        rows = [{"lr": lr, "seed": s, "loss": lr * (s + 1)} for s in seeds for lr in (0.1, 0.2)]
        (root / name / "results.json").write_text(json.dumps({"rows": rows}))
    panel = _mean_panel("p", [report.Part("a", {"lr": (0.1,)}), report.Part("b")])
    written = report.build_panel(panel, str(root), str(out / "p"), log=lambda m: None)
    assert sorted(os.path.basename(w) for w in written) == ["p.png", "sources.json", "table.md"]
    cells = [[float(c) for c in line.strip("| ").split(" | ")]
             for line in (out / "p" / "table.md").read_text().splitlines()]
    assert cells == [[0.1, pytest.approx(0.2)], [0.2, pytest.approx(0.6)]]  # lr 0.2 from b only
    src = json.load(open(out / "p" / "sources.json"))
    assert src["networks"] == 4 and src["seeds"] == [0, 1, 2]
    assert src["timing"]["a"] == {"wall_s": None, "train_s": 0}

    def broken(results, out_dir):
        raise RuntimeError("figure failed")

    bad = _mean_panel("p", [report.Part("b")], draw=broken)
    with pytest.raises(RuntimeError, match="figure failed"):
        report.build_panel(bad, str(root), str(out / "p"), log=lambda m: None)
    assert (out / "p" / "table.md").read_text().startswith("| 0.1 | 0.2")  # untouched
    assert sorted(os.listdir(out)) == ["p"]  # no temporary directory left behind
    with pytest.raises(ValueError, match="unknown panels \\['q'\\]"):
        report.report([panel], str(root), str(out), only=["q"])


def test_cli_reports_and_exits_nonzero_for_panels_it_cannot_draw(tmp_path):
    sweep_file = tmp_path / "sweep.py"
    sweep_file.write_text(textwrap.dedent("""
        import json, os
        from launch.report import Panel, Part
        from launch.sweep import Run, Sweep

        def get_sweep():
            return Sweep(experiment="m", config="c.py", jobs=[Run("a"), Run("b")],
                         root=os.path.join(os.path.dirname(__file__), "runs"))

        def summarise(rows):
            return [{"n": len(rows)}]

        def write_tables(out_dir, table):
            json.dump(table, open(os.path.join(out_dir, "table.json"), "w"))

        def draw(results, out_dir):
            return ""

        def get_panels():
            return [Panel("pa", [Part("a")], summarise, write_tables, draw),
                    Panel("pb", [Part("b")], summarise, write_tables, draw)]
    """))
    os.makedirs(tmp_path / "runs" / "a")
    (tmp_path / "runs" / "a" / "results.json").write_text(json.dumps({"rows": [{"x": 1}]}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "launch.report", f"--sweep={sweep_file}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "panel pb: not drawn, runs not finished: ['b']" in proc.stdout
    assert json.load(open(tmp_path / "runs" / "panels" / "pa" / "table.json")) == [{"n": 1}]
    assert not (tmp_path / "runs" / "panels" / "pb").exists()
    proc = subprocess.run([sys.executable, "-m", "launch.report", f"--sweep={sweep_file}",
                           "--only=pa", f"--out={tmp_path / 'o'}"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "o" / "pa" / "table.json").exists()


def test_run_cli_dry_run_of_one_panel_uses_the_sweep_root(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "launch.run",
                           "--sweep=launch/sweeps/disentangle_panels.py:fig5", "--dry_run"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "parallel=1" in proc.stdout
    root = os.path.join(REPO, "workdirs", "disentangle")
    for name, seeds in (("fig5", "(0, 1)"), ("fig5_s234", "(2, 3, 4)")):
        assert (f"--config=experiments/disentangle/config.py:fig5 "
                f"--workdir={os.path.join(root, name)} '--config.seeds={seeds}'") in proc.stdout
