"""The reduced-scale disentangling driver: its runs are valid configs, its report merges."""

import ast
import csv
import json
import os

import numpy as np
import pytest

from experiments.disentangle import config as config_lib
from experiments.disentangle import experiment
from launch import disentangle_reduced as dr


def _config_of(run):
    c = config_lib.get_config(run.variant)
    argv = dr.command(run, "root")
    for a in argv[5:]:
        key, _, value = a[len("--config."):].partition("=")
        node = c
        *path, leaf = key.split(".")
        for p in path:
            node = node[p]
        node[leaf] = ast.literal_eval(value)
    return c, argv


@pytest.mark.parametrize("run", dr.RUNS, ids=lambda r: r.name)
def test_every_run_is_a_valid_config(run):
    c, argv = _config_of(run)
    experiment.validate(c)
    assert argv[5] == f"--config.seeds={tuple(run.seeds)!r}"
    assert tuple(c.seeds) == tuple(run.seeds)
    assert experiment.members_of(c)  # the grid is non-empty


def test_panels_only_use_known_runs():
    names = {r.name for r in dr.RUNS}
    for panel, parts in dr.PANELS.items():
        assert panel in config_lib.FIGURES, panel
        assert {n for n, _ in parts} <= names, panel


def _row(seed, n, ood, **kw):
    base = dict(core="rnn", dim=2, stim_steps=20, free_rt=False, boundary="linear",
                n_tasks=n, sigma=0.2, rho=0.0, encoder="relu", seed=seed, group="g",
                ood_r2=ood, id_r2=[0.9] * len(ood), angles=[90.0], accuracy=0.95,
                bayes_accuracy=0.96, r2_ceiling=0.976, final_loss=0.67)
    base.update(kw)
    return base


def test_report_filters_and_merges_runs(tmp_path):
    root, docs = tmp_path / "runs", tmp_path / "docs"
    fig1_rows = [_row(s, n, [0.1 * s + n / 100] * 4) for s in range(5) for n in (2, 6, 24)]
    quad_rows = [_row(s, n, [0.5] * 4, encoder="quadratic") for s in (0, 1) for n in (2, 6, 24)]
    for name, rows in (("fig1", fig1_rows), ("fig8_encoder", quad_rows)):
        os.makedirs(root / name)
        with open(root / name / "results.json", "w") as f:
            json.dump({"rows": rows, "wall_time_s": 1.0, "timing": {"g": {"train_s": 1.0}}}, f)
    written = dr.report(str(root), str(docs))
    # only the panels whose runs exist are drawn
    assert [os.path.basename(p) for p in written] == ["fig8_encoder.png"]
    with open(docs / "fig8_encoder" / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6  # 3 N x 2 encoders
    relu = {int(r["n_tasks"]): r for r in table if r["encoder"] == "relu"}
    for n, r in relu.items():  # fig1 rows restricted to seeds 0 and 1
        assert int(r["networks"]) == 2
        np.testing.assert_allclose(float(r["ood_r2_median"]), 0.05 + n / 100)
        # the exact posterior-mean r^2 at sigma 0.2, t = 20 (spec: 0.978)
        np.testing.assert_allclose(float(r["posterior_mean_r2"]), 0.978, atol=1e-3)
    src = json.load(open(docs / "fig8_encoder" / "sources.json"))
    assert src["networks"] == 12 and src["runs"][0]["filter"]["seed"] == [0, 1]
    assert os.path.getsize(docs / "fig8_encoder" / "fig8_encoder.png") > 1000


def test_missing_run_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="--only=fig5"):
        dr.panel_rows(str(tmp_path), [("fig5", {})])


def test_extra_seeds_twin_every_reduced_run_and_merge_into_panels():
    runs = {r.name: r for r in dr.runs_for((2, 3, 4))}
    assert "fig1_s234" not in runs  # fig1 already has five seeds
    twin = runs["fig2_lstm_gru_s234"]
    assert tuple(twin.seeds) == (2, 3, 4)
    assert twin.overrides == runs["fig2_lstm_gru"].overrides
    two_seed = [r for r in dr.RUNS if tuple(r.seeds) == dr.SEEDS]
    assert len(runs) == len(dr.RUNS) + len(two_seed)
    assert "fig2_lstm_gru_n312_s234" not in runs  # five-seed add-on runs are not twinned
    parts = dr.panels_for((2, 3, 4))["fig8_corr"]
    assert parts == [("fig1", {"seed": (0, 1, 2, 3, 4), "n_tasks": (24,)}),
                     ("fig8_corr", {}), ("fig8_corr_s234", {})]
    # without extra seeds, five-seed runs are restricted to the reduced seeds
    fig2 = dict(dr.panels_for(())["fig2"])
    assert fig2["fig1"] == {"seed": (0, 1)} and fig2["fig2_lstm_gru_n312"] == {"seed": (0, 1)}
    assert fig2["fig2_noleak"] == {}
    # Fig. 6: the 2-seed N = 3, 12 run, its twin, and the five-seed N = 6, 9 add-on
    assert dr.panels_for((2, 3, 4))["fig6"] == [
        ("fig6", {}), ("fig6_s234", {}), ("fig6_n69", {"seed": (0, 1, 2, 3, 4)})]
    assert dr._BY_NAME["fig6_n69"].optional
    with pytest.raises(ValueError, match="repeat"):
        dr.runs_for((1, 2))


def test_panel_merges_extra_seeds_only_when_all_its_twins_finished(tmp_path):
    root, docs = tmp_path / "runs", tmp_path / "docs"

    def write(name, seeds, ns=(2, 6, 24), **kw):
        os.makedirs(root / name)
        rows = [_row(s, n, [0.5 + 0.01 * s] * 4, **kw) for s in seeds for n in ns]
        with open(root / name / "results.json", "w") as f:
            json.dump({"rows": rows, "wall_time_s": 1.0, "timing": {}}, f)

    write("fig1", range(5), ns=(2, 3, 6, 12, 24))
    write("fig8_encoder", (0, 1), encoder="quadratic")
    write("fig8_rt", (0, 1), free_rt=True)
    write("fig8_rt_s234", (2, 3, 4), free_rt=True)  # fig8_encoder_s234 not finished
    dr.report(str(root), str(docs), (2, 3, 4))
    enc = json.load(open(docs / "fig8_encoder" / "sources.json"))
    rt = json.load(open(docs / "fig8_rt" / "sources.json"))
    assert enc["seeds"] == [0, 1] and enc["networks"] == 2 * 5 + 2 * 3  # ReLU at every N
    assert [r["run"] for r in enc["runs"]] == ["fig1", "fig8_encoder"]
    assert rt["seeds"] == [0, 1, 2, 3, 4] and rt["networks"] == 5 * 5 + 5 * 3
    with open(docs / "fig8_rt" / "table.csv") as f:
        assert {int(r["networks"]) for r in csv.DictReader(f)} == {5}


def test_optional_runs_join_panels_when_finished(tmp_path):
    root, docs = tmp_path / "runs", tmp_path / "docs"

    def write(name, seeds, ns, **kw):
        os.makedirs(root / name)
        rows = [_row(s, n, [0.5] * 4, **kw) for s in seeds for n in ns]
        with open(root / name / "results.json", "w") as f:
            json.dump({"rows": rows, "wall_time_s": 1.0, "timing": {}}, f)

    write("fig1", range(5), (2, 3, 6, 12, 24))
    write("fig2_transformer", (0, 1), (2, 6, 24), core="transformer")
    write("fig2_transformer_s234", (2, 3, 4), (2, 6, 24), core="transformer")
    dr.report(str(root), str(docs), (2, 3, 4))  # the N = 3, 12 transformer run is missing
    src = json.load(open(docs / "fig3" / "sources.json"))
    assert [r["run"] for r in src["runs"]] == ["fig1", "fig2_transformer",
                                               "fig2_transformer_s234"]
    assert src["networks"] == 5 * 5 + 5 * 3
    write("fig2_transformer_n312", range(5), (3, 12), core="transformer")
    dr.report(str(root), str(docs), (2, 3, 4))
    src = json.load(open(docs / "fig3" / "sources.json"))
    assert src["runs"][-1] == {"run": "fig2_transformer_n312", "filter": {"seed": [0, 1, 2, 3, 4]}}
    with open(docs / "fig3" / "table.csv") as f:
        table = list(csv.DictReader(f))
    gpt = sorted(int(r["n_tasks"]) for r in table if r["core"] == "transformer")
    assert gpt == [2, 3, 6, 12, 24]
    assert {int(r["networks"]) for r in table} == {5}
    dr.report(str(root), str(docs))  # two-seed report: add-on rows restricted to seeds 0, 1
    with open(docs / "fig3" / "table.csv") as f:
        assert {int(r["networks"]) for r in csv.DictReader(f)} == {2}
