"""GBI toy experiment: tasks, config checks, smoke run end to end, saved figure
arrays and redrawn figures, CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.gbi_toy import config as toy_config
from experiments.gbi_toy import experiment
from gbi_jax.tasks import SwitchingGaussianTask
from gbi_jax.workdir import Workdir
from test_figures import assert_redraw_reproduces  # tests/ is on sys.path under pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# Task generator.
# ---------------------------------------------------------------------------
def test_stream_statistics():
    task = SwitchingGaussianTask(means=(0.2, 0.8), stds=(0.2, 0.1))
    s = jax.jit(lambda k: task.sample(k, 20000))(jax.random.PRNGKey(0))
    x, ctx, blk = map(np.asarray, s)
    for c in (0, 1):
        assert abs(x[ctx == c].mean() - task.means[c]) < 0.01
        assert abs(x[ctx == c].std() - task.stds[c]) < 0.01
    lengths = np.bincount(blk)[:-1]  # the last block is cut by the stream end
    assert lengths.min() >= 20 and lengths.max() <= 50
    assert abs(lengths.mean() - task.mean_block_length) < 1.0
    starts = np.flatnonzero(np.diff(blk)) + 1
    assert np.all(ctx[starts] != ctx[starts - 1])  # a block never repeats its context


def test_held_out_context_never_appears():
    task = SwitchingGaussianTask(means=(0.2, 0.8, 0.2, 0.8), stds=(0.1, 0.1, 0.3, 0.3),
                                 contexts=(0, 1, 2))
    ctx = np.asarray(task.sample(jax.random.PRNGKey(3), 5000).context)
    assert set(np.unique(ctx)) == {0, 1, 2}


@pytest.mark.parametrize("kwargs, field", [
    (dict(means=(0.5,), stds=(0.2,)), "at least 2 contexts"),
    (dict(means=(0.2, 0.8), stds=(0.2,)), "same length"),
    (dict(stds=(0.2, -0.1)), "stds"),
    (dict(min_block=30, max_block=20), "min_block"),
    (dict(block_p=0.0), "block_p"),
])
def test_task_rejects_bad_fields(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SwitchingGaussianTask(**kwargs)


# ---------------------------------------------------------------------------
# Experiment.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("task.means", (0.5,), "task.means"),
    ("latent.steps", -1, "latent.steps"),
    ("train.window", 0, "train.window"),
    ("arms", ("gbi", "oracle"), "arms"),
    ("online.optimizer", "rmsprop", "online.optimizer"),
    ("recomposition.train_contexts", (0, 1, 3), "recomposition.train_contexts"),
])
def test_invalid_config_fields_are_named(field, value, message, tmp_path):
    cfg = toy_config.get_config("smoke")
    section, _, leaf = field.rpartition(".")
    (cfg[section] if section else cfg)[leaf] = value
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        experiment.run(cfg, str(tmp_path))
    assert not os.path.exists(tmp_path / "config.json")  # nothing written for bad input


def test_unknown_config_variant():
    with pytest.raises(ValueError, match="variant"):
        toy_config.get_config("huge")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("toy_smoke")
    cfg = toy_config.get_config("smoke")
    return cfg, str(wd), experiment.run(cfg, str(wd))


def _finite(d):
    for k, v in d.items():
        if isinstance(v, dict):
            _finite(v)
        elif isinstance(v, float):
            assert np.isfinite(v), k


def test_smoke_run_produces_every_result(smoke_run):
    cfg, wd, res = smoke_run
    for section in ("learning", "forgetting", "one_step", "online", "recomposition",
                    "modularity"):
        assert section in res
    _finite({k: v for k, v in res.items() if k != "per_seed"})
    for name in ("summary", "learning_curves", "forgetting", "one_step_vs_likelihood",
                 "online_vs_hmm", "recomposition", "modularity"):
        assert os.path.getsize(os.path.join(wd, "figures", f"{name}.png")) > 1000
    with open(os.path.join(wd, "results.json")) as f:
        assert json.load(f)["seeds"] == [0, 1]
    assert len(res["per_seed"]) == 2
    # Even a few hundred training steps make the one-hot latent informative: the
    # one-step gradient tracks the ideal observer's log-likelihoods and beats the
    # uninformed baseline at identifying the context.
    gbi, base = res["one_step"]["gbi"], res["one_step"]["baseline"]
    assert gbi["corr_window_loglik"]["mean"] > 0.9
    assert gbi["accuracy"]["mean"] > base["accuracy"]["mean"] + 0.1
    assert gbi["accuracy"]["mean"] <= res["one_step"]["hmm_filter_accuracy"] + 0.02
    # Recomposition: optimising the latent lowers the held-out loss.
    rc = res["recomposition"]["gbi"]
    assert rc["loss_final"]["mean"] < rc["loss_initial"]["mean"]


def test_figure_arrays_are_saved_and_redraw_gives_the_run_figures(smoke_run):
    cfg, wd, res = smoke_run
    assert res["experiment"] == "gbi_toy"
    arrays = Workdir(wd).read_arrays()
    members = [(a, cfg.seed + s) for a in cfg.arms for s in cfg.seeds]
    assert list(zip(arrays["member_arm"], arrays["member_seed"])) == members
    assert arrays["train_loss"].shape == (len(arrays["train_steps"]), len(members))
    np.testing.assert_array_equal(arrays["train_steps"], res["learning"]["steps"])
    s, t = arrays["test_context"].shape
    k = res["num_contexts"]
    assert arrays["online_latent"].shape == (len(members), t, k)
    np.testing.assert_allclose(arrays["online_latent"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(arrays["hmm_posterior"].sum(-1), 1.0, rtol=1e-5)
    n = t - cfg.train.window  # one window per target t = H .. T-1
    assert arrays["window_loglik"].shape == (s, n, k)
    assert arrays["one_step_scores"].shape == (len(members), n, k)
    assert_redraw_reproduces(wd)


def test_shared_unit_ratio_closed_form():
    # Units 0,1 active only in context 0; unit 2 in both; unit 3 silent.
    h = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    ctx = jnp.array([0, 0, 1])
    assert float(experiment.shared_unit_ratio(h, ctx, 2, 0.2)) == pytest.approx(1 / 3)


def _cli(workdir, *overrides, check=True):
    cmd = [sys.executable, "-m", "experiments.gbi_toy.main",
           "--config=experiments/gbi_toy/config.py:smoke", f"--workdir={workdir}",
           *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          check=check)


def test_cli_rerun_resumes_and_conflicting_config_is_refused(smoke_run, tmp_path):
    cfg, wd, res = smoke_run
    # Same workdir, same config: training resumes from the final checkpoint (no
    # new steps) and every result is reproduced exactly.
    out = _cli(wd)
    assert "resumed from checkpoint" in out.stderr
    with open(os.path.join(wd, "results.json")) as f:
        again = json.load(f)
    for section in ("forgetting", "one_step", "online", "modularity", "recomposition"):
        assert again[section] == json.loads(json.dumps(res[section])), section
    # A different config in the same workdir is refused, naming the field.
    bad = _cli(wd, "--config.train.lr=0.5", check=False)
    assert bad.returncode != 0
    assert "train.lr" in bad.stderr and "different config" in bad.stderr


def test_killed_cli_run_resumes_to_the_uninterrupted_result(tmp_path):
    """SIGKILL a run after its first checkpoint; the rerun ends identically."""
    overrides = ["--config.recomposition.enabled=False", "--config.figures=False",
                 "--config.train.blocks=6", "--config.train.chunk_size=25",
                 "--config.seeds=(0,)"]
    ref_dir, cut_dir = tmp_path / "ref", tmp_path / "cut"
    _cli(ref_dir, *overrides)
    cmd = [sys.executable, "-m", "experiments.gbi_toy.main",
           "--config=experiments/gbi_toy/config.py:smoke", f"--workdir={cut_dir}", *overrides]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = cut_dir / "checkpoints" / "train"
    import time
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and any(d.isdigit() for d in os.listdir(ckpt)):
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    out = _cli(cut_dir, *overrides)
    with open(ref_dir / "results.json") as f:
        ref = json.load(f)
    with open(cut_dir / "results.json") as f:
        cut = json.load(f)
    for section in ("learning", "forgetting", "one_step", "online", "modularity"):
        assert cut[section] == ref[section], section
