"""`launch.docs`: every committed doc artefact is rebuilt from its workdirs, or listed as
missing (with the command that makes the workdir) and left untouched."""

import csv
import filecmp
import json
import os
import shutil
import subprocess
import sys

import pytest

from launch import docs
from launch import report
from launch import runner
from launch.sweep import Run, Sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
PROSE = (".md",)  # hand-written pages; the generated .md files are in the inventory


def _fake_workdir(root, name, lr):
    """A finished workdir of the fake experiment (tests/fixtures), made by the runner."""
    sweep = Sweep("fake_experiment.main", None,
                  [Run(name, {"latent.lr": lr}, config="fake_experiment/config.py")])
    out = runner.run_sweep(sweep, str(root), cwd=FIXTURES, aggregate=False, log=lambda m: None)
    assert out.exit_code == 0
    return os.path.join(root, name)


def _loss_table(workdirs, out):
    with open(os.path.join(workdirs[0], "results.json")) as f:
        loss = json.load(f)["loss"]
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(f"| loss | {loss} |\n")


def _fake_inventory():
    a = docs.Source("a", "python -m fake_experiment.main --workdir={workdirs}/a")
    b = docs.Source("b", "python -m fake_experiment.main --workdir={workdirs}/b")
    return [docs.Artefact(("docs/fake/results.json", "docs/fake/table.md"), (a,),
                          lambda wd, out: (docs.copy_files(("results.json", "results.json"))(
                              wd, out), _loss_table(wd, out))),
            docs.Artefact(("docs/fake_b/table.md",), (a, b), _loss_table),
            docs.External(("docs/fake/BENCH.md",), "make bench")]


def test_rebuilds_what_it_can_and_lists_missing_workdirs(tmp_path):
    workdirs, repo = tmp_path / "workdirs", tmp_path / "repo"
    _fake_workdir(workdirs, "a", 0.5)
    os.makedirs(repo / "docs" / "fake_b")
    (repo / "docs" / "fake_b" / "table.md").write_text("committed\n")
    out = docs.rebuild(_fake_inventory(), str(workdirs), str(repo), log=lambda m: None)
    assert out.rebuilt == ["docs/fake/results.json", "docs/fake/table.md"]
    assert filecmp.cmp(workdirs / "a" / "results.json", repo / "docs" / "fake" / "results.json",
                       shallow=False)
    assert (repo / "docs" / "fake" / "table.md").read_text() == "| loss | 0.5 |\n"
    # b is missing: its artefact is listed with the command and left as committed
    assert out.missing == {str(workdirs / "b"):
                           f"python -m fake_experiment.main --workdir={workdirs}/b"}
    assert out.waiting == ["docs/fake_b/table.md"]
    assert (repo / "docs" / "fake_b" / "table.md").read_text() == "committed\n"
    assert out.exit_code == 1
    text = docs.summary(out)
    assert f"  {workdirs / 'b'}\n    python -m fake_experiment.main" in text
    assert "Not made from workdirs: docs/fake/BENCH.md: make bench." in text
    assert not [f for f in os.listdir(repo / "docs" / "fake") if f.startswith(".docs.")]

    _fake_workdir(workdirs, "b", 0.25)
    out = docs.rebuild(_fake_inventory(), str(workdirs), str(repo), log=lambda m: None)
    assert out.exit_code == 0 and not out.missing
    assert (repo / "docs" / "fake_b" / "table.md").read_text() == "| loss | 0.5 |\n"


def test_a_failing_build_leaves_every_file_of_its_artefact_untouched(tmp_path):
    workdirs, repo = tmp_path / "workdirs", tmp_path / "repo"
    _fake_workdir(workdirs, "a", 0.5)
    os.makedirs(repo / "docs" / "x")
    (repo / "docs" / "x" / "one.md").write_text("one\n")

    def half(wd, out):  # writes one of its two files, then fails
        with open(os.path.join(out, "one.md"), "w") as f:
            f.write("new\n")
        raise RuntimeError("figure failed")

    art = docs.Artefact(("docs/x/one.md", "docs/x/two.png"), (docs.Source("a", "cmd"),), half)
    with pytest.raises(RuntimeError, match="figure failed"):
        docs.rebuild([art], str(workdirs), str(repo), log=lambda m: None)
    assert sorted(os.listdir(repo / "docs" / "x")) == ["one.md"]
    assert (repo / "docs" / "x" / "one.md").read_text() == "one\n"
    forgetful = docs.Artefact(("docs/x/one.md", "docs/x/two.png"), (docs.Source("a", "cmd"),),
                              lambda wd, out: open(os.path.join(out, "one.md"), "w").close())
    with pytest.raises(RuntimeError, match="made no"):
        docs.rebuild([forgetful], str(workdirs), str(repo), log=lambda m: None)
    assert (repo / "docs" / "x" / "one.md").read_text() == "one\n"


def test_only_selects_doc_directories_and_their_children():
    items = docs.inventory()
    groups = {i.group for i in docs.select(items, ["disentangle"])}
    assert "disentangle/fig1" in groups and "disentangle/fig8_rt" in groups
    assert "gbi_toy" not in groups
    assert {i.group for i in docs.select(items, ["gbi_toy"])} == {"gbi_toy"}
    assert {i.group for i in docs.select(items, ["benchmarks"])} == {"benchmarks"}
    with pytest.raises(ValueError, match="names no doc directory: \\['disent'\\]"):
        docs.select(items, ["disent"])


def test_inventory_covers_every_committed_table_and_figure():
    made = {d for item in docs.inventory() for d in item.docs}
    for d in made:
        assert os.path.isfile(os.path.join(REPO, d)), d
    for dirpath, _, files in os.walk(os.path.join(REPO, "docs")):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), REPO)
            if not name.endswith(PROSE):
                assert rel in made, f"{rel} is committed but no artefact of launch.docs makes it"
    # every disentangling panel is made from its five-seed set of runs
    panels = {os.path.basename(os.path.dirname(i.docs[0])): i for i in docs.panel_artefacts()}
    assert set(panels) == {"fig2", "fig3", "fig5", "fig6", "fig7", "fig8_corr", "fig8_curved",
                           "fig8_encoder", "fig8_rt"}
    for name, art in panels.items():
        with open(os.path.join(REPO, "docs", "disentangle", name, "sources.json")) as f:
            committed = [r["run"] for r in json.load(f)["runs"]]
        assert [os.path.basename(s.workdir) for s in art.sources] == committed, name


def _rows(seeds, ns, **kw):
    rows = []
    for s in seeds:
        for n in ns:
            row = dict(core="rnn", dim=2, stim_steps=10, free_rt=True, boundary="linear",
                       n_tasks=n, sigma=0.2, rho=0.0, encoder="relu", seed=s, group="g",
                       ood_r2=[[0.5 + 0.01 * s + 0.001 * n + 0.0001 * k for k in range(5)]] * 4,
                       id_r2=[[0.9] * 5] * 4, angles=[[[90.0 + s]] * 5] * 4, accuracy=0.9 + s / 100,
                       bayes_accuracy=0.95, r2_ceiling=0.95, final_loss=0.67)
            row.update(kw)
            rows.append(row)
    return rows


def _write_run(root, name, rows):
    os.makedirs(root / name)
    with open(root / name / "results.json", "w") as f:
        json.dump({"rows": rows, "wall_time_s": 3.5, "timing": {"g": {"train_s": 2.5}}}, f)


def test_disentangle_panel_is_rebuilt_from_its_runs_or_left_alone(tmp_path):
    workdirs, repo = tmp_path / "workdirs", tmp_path / "repo"
    fig5 = [a for a in docs.panel_artefacts() if a.group == "disentangle/fig5"]
    assert [s.workdir for s in fig5[0].sources] == ["disentangle/fig5", "disentangle/fig5_s234"]
    _write_run(workdirs / "disentangle", "fig5", _rows((0, 1), (24,)))
    committed = repo / "docs" / "disentangle" / "fig5"
    os.makedirs(committed)
    for f in ("table.csv", "table.md", "sources.json", "fig5.png"):
        (committed / f).write_text(f"committed {f}\n")
    out = docs.rebuild(fig5, str(workdirs), str(repo), log=lambda m: None)
    assert list(out.missing) == [str(workdirs / "disentangle" / "fig5_s234")]
    assert "--config=experiments/disentangle/config.py:fig5" in out.missing[
        str(workdirs / "disentangle" / "fig5_s234")]
    assert "'--config.seeds=(2, 3, 4)'" in out.missing[str(workdirs / "disentangle" / "fig5_s234")]
    assert out.hints == [f"python -m launch.run --sweep=launch/sweeps/disentangle_panels.py:fig5 "
                         f"--root={workdirs}/disentangle"]
    for f in ("table.csv", "table.md", "sources.json", "fig5.png"):
        assert (committed / f).read_text() == f"committed {f}\n"  # not drawn from 2 seeds

    _write_run(workdirs / "disentangle", "fig5_s234", _rows((2, 3, 4), (24,)))
    out = docs.rebuild(fig5, str(workdirs), str(repo), log=lambda m: None)
    assert out.exit_code == 0 and len(out.rebuilt) == 4
    # the rebuilt table is what the report makes from the same runs
    panel = {p.name: p for p in report.load_panels(docs.PANEL_SWEEP)}["fig5"]
    assert report.build_panel(panel, str(workdirs / "disentangle"), str(tmp_path / "direct"),
                              strict=True, log=lambda m: None)
    for f in ("table.csv", "table.md", "sources.json"):
        assert filecmp.cmp(committed / f, tmp_path / "direct" / f, shallow=False), f
    with open(committed / "table.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert int(row["networks"]) == 5
    assert float(row["ood_r2_median"]) == pytest.approx(0.5 + 0.02 + 0.024 + 0.0002)
    src = json.load(open(committed / "sources.json"))
    assert src["seeds"] == [0, 1, 2, 3, 4] and src["networks"] == 5
    assert [r["run"] for r in src["runs"]] == ["fig5", "fig5_s234"]


def test_fig1_tables_figures_and_results_are_rebuilt_byte_identically(tmp_path):
    """docs/disentangle/fig1/results.json is the Fig. 1 workdir's; the committed tables
    are recomputed from its rows and the figures redrawn from it, exactly."""
    workdirs, repo = tmp_path / "workdirs", tmp_path / "repo"
    wd = workdirs / "disentangle" / "fig1"
    os.makedirs(wd)
    shutil.copyfile(os.path.join(REPO, "docs/disentangle/fig1/results.json"), wd / "results.json")
    from experiments.disentangle import config as config_lib

    (wd / "config.json").write_text(config_lib.get_config("fig1").to_json())
    items = [i for i in docs.select(docs.inventory(), ["disentangle/fig1"])
             if isinstance(i, docs.Artefact) and i.sources[0].workdir == "disentangle/fig1"]
    out = docs.rebuild(items, str(workdirs), str(repo), log=lambda m: None)
    assert sorted(out.rebuilt) == ["docs/disentangle/fig1/fig1.png",
                                   "docs/disentangle/fig1/fig1_accuracy.png",
                                   "docs/disentangle/fig1/results.json",
                                   "docs/disentangle/fig1/table.csv",
                                   "docs/disentangle/fig1/table.md"]
    for d in out.rebuilt:
        assert filecmp.cmp(repo / d, os.path.join(REPO, d), shallow=False), d


def test_cli_lists_missing_workdirs_and_touches_nothing(tmp_path):
    targets = [os.path.join(REPO, "docs", "disentangle", "fig5", f)
               for f in ("table.csv", "table.md", "sources.json", "fig5.png")]
    before = {t: (os.path.getmtime(t), open(t, "rb").read()) for t in targets}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "launch.docs", f"--workdirs={tmp_path}",
         "--only=disentangle/fig5,gbi_toy"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "0 files rebuilt." in proc.stdout
    assert f"  {tmp_path}/gbi_toy\n    python -m experiments.gbi_toy.main" in proc.stdout
    assert f"  {tmp_path}/disentangle/fig5_s234\n" in proc.stdout
    assert {t: (os.path.getmtime(t), open(t, "rb").read()) for t in targets} == before
    listing = subprocess.run(
        [sys.executable, "-m", "launch.docs", f"--workdirs={tmp_path}", "--list",
         "--only=benchmarks,disentangle/fig4"], cwd=REPO, env=env, capture_output=True,
        text=True, timeout=120, check=False)
    assert listing.returncode == 0, listing.stderr
    assert "docs/disentangle/fig4/attractor.json\n    from disentangle/fig4 (missing)" in (
        listing.stdout)
    assert "docs/benchmarks/inference.md\n    not from workdirs: make bench" in listing.stdout
