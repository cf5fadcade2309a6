"""The CIFAR-100 path of the image experiment end to end on TFDS mock data."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.gbi_images import config as images_config
from experiments.gbi_images import experiment


def test_cifar100_data_and_one_step_on_mock_data(tmp_path):
    """Fast path check: mock CIFAR-100 through the loader and one-step GBI at K = 100."""
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = images_config.get_config("cifar100_smoke")
    cfg.data.max_test = 20
    with tfds.testing.mock_data(num_examples=40):
        test = experiment.load_split(cfg, "cifar100", "test")
    assert test.images.shape == (20, 32, 32, 3) and test.num_classes == 100
    ae = experiment.autoencoder_from(cfg, test.images.shape[1:])
    params = jax.jit(ae.init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)),
                              jnp.zeros((1, 100)))
    fns = experiment.gbi_fns(cfg, ae, 100)
    out = experiment.run_batched(fns["one_step"], params, test.images, 8)
    assert out["scores"].shape == (20, 100) and np.all(np.isfinite(out["scores"]))


@pytest.mark.slow
def test_cifar100_smoke_on_mock_data(tmp_path):
    """The whole cifar100_smoke config end to end (about 1-3 min on 2 CPU cores)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    cfg = images_config.get_config("cifar100_smoke")
    cfg.data.data_dir = str(tmp_path / "tfds")  # mock_data ignores it; never read
    cfg.data.max_train = 128
    cfg.data.max_test = 50
    cfg.eval.iterative_steps = (1, 2)
    with tfds.testing.mock_data(num_examples=128):
        res = experiment.run(cfg, str(tmp_path / "wd"))
    r = res["datasets"]["cifar100"]
    assert r["data"]["num_classes"] == 100 and r["data"]["num_train"] == 128
    assert r["throughput"]["num_classes"] == 100
    for key in ("one_step", "exhaustive", "ce_classifier", "ensemble"):
        assert 0.0 <= r["accuracy"][key] <= 1.0
    assert r["paper"]["one_step"] == 0.1852
    assert os.path.getsize(tmp_path / "wd" / "figures" / "summary.png") > 1000
    assert np.isfinite(r["calibration"]["fitted"]["ece"])


def test_cifar100_missing_is_skipped_with_instructions_in_default_config(tmp_path):
    cfg = images_config.get_config()
    assert "cifar100" in cfg.datasets and "cifar100" in cfg.skip_missing
    cfg = images_config.get_config("smoke")
    cfg.datasets = ("cifar100",)
    cfg.skip_missing = ("cifar100",)
    cfg.ood.pairs = ()
    cfg.recomposition.enabled = False
    cfg.data.data_dir = str(tmp_path / "empty_tfds")
    res = experiment.run(cfg, str(tmp_path / "wd"))
    assert "tfds build cifar100" in res["skipped"]["cifar100"]
    with open(tmp_path / "wd" / "results.md") as f:
        assert "CIFAR-100 skipped" in f.read()
