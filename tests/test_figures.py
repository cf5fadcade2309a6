"""experiments.figures: which experiment made a workdir, and redrawing a finished run's
figures from its workdir alone gives the PNGs the run drew."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from experiments import figures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_results(path, results):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "results.json"), "w") as f:
        json.dump(results, f)
    return str(path)


def test_the_experiment_is_read_from_results_json(tmp_path):
    for name in figures.EXPERIMENTS:
        wd = _write_results(tmp_path / name, {"experiment": name, "arms": []})
        assert figures.experiment_of(wd) == name
    wd = _write_results(tmp_path / "bad", {"experiment": "gbi_nothing"})
    with pytest.raises(figures.UnknownWorkdirError, match="gbi_nothing"):
        figures.experiment_of(wd)


def test_older_workdirs_are_recognised_by_their_keys(tmp_path):
    for name, keys in figures.SIGNATURES.items():
        wd = _write_results(tmp_path / name, {k: {} for k in keys} | {"wall_time_s": 1.0})
        assert figures.experiment_of(wd) == name
    wd = _write_results(tmp_path / "unknown", {"figure": "fig1"})
    with pytest.raises(figures.UnknownWorkdirError, match="cannot tell"):
        figures.experiment_of(wd)
    with pytest.raises(figures.UnknownWorkdirError, match="does not exist"):
        figures.experiment_of(str(tmp_path / "empty"))


def _redraw_cli(workdir):
    return subprocess.run([sys.executable, "-m", "experiments.figures", f"--workdir={workdir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_refuses_an_unfinished_workdir_without_traceback(tmp_path):
    out = _redraw_cli(tmp_path)
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def assert_redraw_reproduces(workdir):
    """Delete ``figures/``, redraw it with the CLI: the same files, byte for byte."""
    fig_dir = os.path.join(workdir, "figures")
    drawn = {}
    for name in sorted(os.listdir(fig_dir)):
        with open(os.path.join(fig_dir, name), "rb") as f:
            drawn[name] = f.read()
    assert drawn, "the run drew no figures"
    shutil.rmtree(fig_dir)
    out = _redraw_cli(workdir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(os.listdir(fig_dir)) == sorted(drawn)
    assert sorted(os.path.basename(p) for p in out.stdout.split()) == sorted(drawn)
    for name, data in drawn.items():
        with open(os.path.join(fig_dir, name), "rb") as f:
            assert f.read() == data, name


def test_disentangle_run_figures_redraw_from_the_workdir(tmp_path):
    from experiments.disentangle import config as dis_config
    from experiments.disentangle import experiment

    config = dis_config.get_config("fig1_smoke")
    config.train.steps = 10
    experiment.run(config, str(tmp_path))
    assert_redraw_reproduces(str(tmp_path))


def test_image_run_figures_redraw_from_the_workdir(tmp_path):
    from experiments.gbi_images import config as images_config
    from experiments.gbi_images import experiment

    config = images_config.get_config("smoke")
    config.datasets = ("mnist",)
    config.ood.pairs = ()
    config.recomposition.enabled = False
    config.data.max_train = 100
    config.data.data_dir = str(tmp_path / "tfds")
    wd = str(tmp_path / "wd")
    experiment.run(config, wd)
    assert_redraw_reproduces(wd)
