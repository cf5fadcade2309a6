"""GBI as an image classifier (Hummos et al. 2024, Sec. 3.2): accuracy, cost, OOD,
calibration.

``run(config, workdir)`` for every dataset in ``config.datasets``:

1. trains a class-conditioned convolutional autoencoder with the true one-hot
   class as ``z`` and a 5-member deep ensemble of same-backbone CE classifiers
   (all members in one ``vmap``ped program; member 0 is the CE baseline);
2. measures test accuracy of one-step GBI (``argmax -dL/dz`` at the uniform
   point), iterative GBI after k latent steps, exhaustive likelihood
   (``inference.exhaustive``: K forward passes, lowest loss), the CE classifier and
   the ensemble;
3. times one-step GBI against exhaustive scoring (images/s, same run);
4. calibration of the one-step posterior ``softmax(-g / alpha)``: reliability
   bins and ECE;

then OOD detection for each ``in:out`` pair (AUROC of every score of
``inference.ood_scores`` against max-softmax of the CE classifier and of the
ensemble), and the recomposition extension: ``z`` inferred for a digit class
held out from training.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from experiments.common import run_experiment
from experiments.gbi_images import config as config_lib
from experiments.gbi_images.config import DATASETS
from gbi_jax import data as gdata
from gbi_jax import inference, training
from gbi_jax.analysis import metrics as M
from gbi_jax.models import Classifier, ConditionalAutoencoder
from gbi_jax.validation import renamed
from gbi_jax.workdir import Workdir

PAPER = {
    "mnist": {"one_step": 0.8546, "ce": 0.9144, "ebi": 0.2737, "nbi": 0.7878},
    "cifar100": {"one_step": 0.1852},
    "ood_mnist_fashion": {"gbi": 0.89, "softmax": 0.73, "likelihood_regret": 0.80,
                          "ensemble": 0.809},
}
DATASET_TITLES = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "cifar100": "CIFAR-100"}
# Orientation of each OOD score: +1 if larger means "more out-of-distribution".
# grad_norm: in distribution one gradient coordinate is strongly negative, out of
# distribution the profile is flat and weak (Hummos et al. 2024, Sec. 3.2), i.e. a
# SMALLER norm means OOD.
OOD_ORIENTATION = {"loss": 1, "max_score": -1, "grad_norm": -1, "posterior_entropy": 1,
                   "loss_after_step": 1}


# ---------------------------------------------------------------------------
# Config checks.
# ---------------------------------------------------------------------------
# Model fields -> the config fields that set them (for error messages).
_CLASS_FIELDS = {"ConditionalAutoencoder.": "model.", "Classifier.features": "model.features",
                 "Classifier.hidden": "classifier.hidden"}


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the first bad field (cross-field rules here; the models
    check their own fields)."""

    def need(cond, field, msg):
        if not cond:
            raise ValueError(f"config.{field}: {msg}")

    need(len(config.datasets) >= 1 and all(d in DATASETS for d in config.datasets), "datasets",
         f"must be a non-empty subset of {DATASETS}, got {tuple(config.datasets)}")
    need(all(d in DATASETS for d in config.skip_missing), "skip_missing",
         f"must be a subset of {DATASETS}")
    need(config.data.normalization in gdata.NORMALIZATIONS, "data.normalization",
         f"must be one of {gdata.NORMALIZATIONS}, got {config.data.normalization!r}")
    need(config.data.max_train >= 0 and config.data.max_test >= 0, "data.max_train",
         "max_train / max_test must be >= 0 (0 = all)")
    # The models check their own fields (the image size is checked per dataset).
    with renamed(_CLASS_FIELDS, prefix="config."):
        side = 2 ** len(config.model.features)
        autoencoder_from(config, (side, side, 1))
        classifier_from(config, num_classes=2)
    need(config.classifier.members >= 1, "classifier.members", "must be >= 1")
    need(config.train.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(config.train.lr > 0, "train.lr", "must be > 0")
    for bound in ("max_loss", "max_grad_norm"):
        value = config.train[bound]
        need(value is None or 0 < value < float("inf"), f"train.{bound}",
             f"must be a positive finite number (or unset), got {value!r}")
    for d in config.datasets:
        need(d in config.train.epochs and config.train.epochs[d] > 0, f"train.epochs.{d}",
             "must be > 0")
        need(d in config.train.classifier_epochs and config.train.classifier_epochs[d] > 0,
             f"train.classifier_epochs.{d}", "must be > 0")
    need(len(config.eval.iterative_steps) >= 1 and all(k >= 1 for k in config.eval.iterative_steps),
         "eval.iterative_steps", "needs step counts >= 1")
    need(config.eval.latent_lr > 0, "eval.latent_lr", "must be > 0")
    need(config.eval.temperature > 0, "eval.temperature", "must be > 0")
    need(config.eval.batch_size >= 1, "eval.batch_size", "must be >= 1")
    need(config.eval.throughput_repeats >= 1, "eval.throughput_repeats", "must be >= 1")
    for pair in config.ood.pairs:
        parts = pair.split(":")
        need(len(parts) == 2 and parts[0] in config.datasets and parts[1] in DATASETS
             and parts[0] != parts[1], "ood.pairs",
             f"entries are 'in:out' with 'in' among config.datasets, got {pair!r}")
    rc = config.recomposition
    if rc.enabled:
        need(rc.dataset in config.datasets, "recomposition.dataset",
             f"must be one of config.datasets, got {rc.dataset!r}")
        need(rc.steps >= 1 and rc.epochs > 0, "recomposition.steps", "steps/epochs must be >= 1")
        need(rc.heldout_class >= 0, "recomposition.heldout_class", "must be >= 0")


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------
def load_split(config, dataset: str, split: str) -> gdata.ImageData:
    """One split of ``dataset`` ("mnist" | "fashion" | "cifar100") per the config."""
    dc = config.data
    name = {"mnist": dc.mnist, "fashion": dc.fashion, "cifar100": dc.cifar100}[dataset]
    idx_dir = {"mnist": dc.mnist_idx_dir, "fashion": dc.fashion_idx_dir}.get(dataset) or None
    d = gdata.load(name, split, data_dir=dc.data_dir or None, idx_dir=idx_dir)
    limit = dc.max_train if split == "train" else dc.max_test
    if limit and len(d) > limit:
        # A fixed, class-mixed subset (the stored order may be sorted by class).
        keep = np.sort(gdata.epoch_permutation(len(d), 12345, 0)[:limit])
        d = d.subset(keep)
    return d


Splits = dict  # (dataset, split) -> gdata.ImageData


def find_data(config) -> tuple[Splits, dict[str, str]]:
    """Load every split the run needs (before the workdir is claimed, so a missing dataset
    leaves the workdir untouched). Returns ``(splits, skipped)``: ``skipped`` maps each
    absent dataset of ``config.skip_missing`` to the message saying how to get it.

    Raises:
      gdata.DatasetNotFoundError: a needed dataset outside ``skip_missing`` is absent.
    """
    splits: Splits = {}
    skipped: dict[str, str] = {}

    def get(dataset: str, split: str) -> None:
        if dataset in skipped or (dataset, split) in splits:
            return
        try:
            splits[(dataset, split)] = load_split(config, dataset, split)
        except gdata.DatasetNotFoundError as e:
            if dataset not in config.skip_missing:
                raise
            logging.warning("skipping %s: %s", dataset, e)
            skipped[dataset] = str(e)

    for dataset in config.datasets:
        get(dataset, "train")
        get(dataset, "test")
    for pair in config.ood.pairs:
        d_in, d_out = pair.split(":")
        if d_in not in skipped:
            get(d_out, "test")
    return splits, skipped


def _split(config, splits: Optional[Splits], dataset: str, split: str) -> gdata.ImageData:
    if splits is not None and (dataset, split) in splits:
        return splits[(dataset, split)]
    return load_split(config, dataset, split)


def normalize(config, images):
    return gdata.normalize(images, config.data.normalization)


def run_batched(fn, params, images, batch_size: int, *extra):
    """``fn(params, batch, *extra)`` over fixed-size batches of ``images``.

    ``images`` (numpy or a device array: pass a device array to reuse one copy across
    calls) is put on the device once; batches are sliced there, outputs stay there and
    come to host once, at the end, as numpy (no host round trip per batch). Every batch
    has the same shape (the last one is padded by repeating the last image; the padding
    is dropped), so ``fn`` compiles once per batch size and is reused across splits,
    datasets with equal shapes, and OOD pairs.
    """
    images = jnp.asarray(images)
    n = len(images)
    pad = (-n) % batch_size
    if pad:
        images = jnp.concatenate([images, jnp.repeat(images[-1:], pad, 0)])
    outs = [fn(params, images[start:start + batch_size], *extra)
            for start in range(0, n, batch_size)]
    out = jax.tree_util.tree_map(lambda *o: jnp.concatenate(o)[:n], *outs)
    return jax.tree_util.tree_map(np.asarray, jax.device_get(out))


# ---------------------------------------------------------------------------
# Models and training.
# ---------------------------------------------------------------------------
def autoencoder_from(config, image_shape) -> ConditionalAutoencoder:
    mc = config.model
    return ConditionalAutoencoder(image_shape=tuple(image_shape), features=tuple(mc.features),
                                  bottleneck=mc.bottleneck, image_noise=mc.image_noise,
                                  z_injection=mc.z_injection)


def classifier_from(config, num_classes: int) -> Classifier:
    return Classifier(num_classes=num_classes, features=tuple(config.model.features),
                      hidden=config.classifier.hidden)


def _member_data(config, train: gdata.ImageData, seeds, epochs: int):
    """Per-member batch-index schedules (different shuffles per seed) and the training
    set they index, shared by all members (one copy per device, not one per member):
    ``(member_data, shared_data, steps)`` for :func:`gbi_jax.training.fit`."""
    bs = min(config.train.batch_size, len(train))
    steps = max(1, int(round(epochs * len(train) / bs)))
    sched = np.stack([gdata.batch_indices(len(train), bs, steps, seed=s) for s in seeds])
    shared = {"images": np.asarray(train.images), "labels": np.asarray(train.labels)}
    return {"schedule": sched}, shared, steps


def _batch(d, step):
    """The member's batch at ``step``: ``(images, labels)`` indexed from the shared set."""
    member, shared = d
    index = member["schedule"][step]
    return shared["images"][index], shared["labels"][index]


def train_autoencoder(config, train: gdata.ImageData, num_classes: int, wd: Workdir | None,
                      name: str, seed: int, epochs: float):
    model = autoencoder_from(config, train.images.shape[1:])
    data, shared, steps = _member_data(config, train, [seed], epochs)
    return _fit_autoencoder(config, model, data, shared, steps, num_classes, wd, name, seed)


def _fit_autoencoder(config, model, data, shared, steps, num_classes, wd, name, seed):
    image_shape = shared["images"].shape[1:]

    def init_fn(key, d):
        return model.init(key, jnp.zeros((1,) + image_shape), jnp.zeros((1, num_classes)))

    def loss_fn(params, d, key, step):
        images, labels = _batch(d, step)
        x = normalize(config, images)
        z = jax.nn.one_hot(labels, num_classes)
        recon = model.apply(params, x, z, noise_key=key)
        mse = jnp.mean(jnp.square(recon - x))
        return mse, {}

    fit = training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(config.train.lr),
                       num_steps=steps, seeds=[seed], member_data=data, shared_data=shared,
                       chunk_size=config.train.chunk_size, workdir=wd,
                       log_every=config.train.log_every, name=name,
                       max_loss=config.train.max_loss,
                       max_grad_norm=config.train.max_grad_norm)
    return model, training.unstack(fit.state.params, 0), fit


def train_classifiers(config, train: gdata.ImageData, num_classes: int, wd: Workdir | None,
                      name: str, seeds, epochs: int):
    model = classifier_from(config, num_classes)
    data, shared, steps = _member_data(config, train, seeds, epochs)
    image_shape = train.images.shape[1:]

    def init_fn(key, d):
        return model.init(key, jnp.zeros((1,) + tuple(image_shape)))

    def loss_fn(params, d, key, step):
        images, labels = _batch(d, step)
        x = normalize(config, images)
        logits = model.apply(params, x)
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        return ce, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == labels)}

    fit = training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(config.train.lr),
                       num_steps=steps, seeds=list(seeds), member_data=data,
                       shared_data=shared,
                       chunk_size=config.train.chunk_size, workdir=wd,
                       log_every=config.train.log_every, name=name,
                       max_loss=config.train.max_loss,
                       max_grad_norm=config.train.max_grad_norm)
    return model, fit.state.params, fit


# ---------------------------------------------------------------------------
# GBI evaluation (weights frozen; every example has its own latent).
# ---------------------------------------------------------------------------
def example_loss_fn(model, params):
    """``(z [K], image [H, W, C] normalised) -> 0.5 * SSE`` for ONE image."""

    def loss(z, x):
        recon = model.apply(params, x[None], z[None])[0]
        return 0.5 * jnp.sum(jnp.square(recon - x))

    return loss


def latent_optimizer(lr: float, momentum: float) -> optax.GradientTransformation:
    # Unit-normalised gradient: step 1 from the uniform point moves along -g/|g|,
    # i.e. reproduces the one-step label, and lr is a length in latent space.
    return inference.normalized_sgd(lr, momentum)


@functools.lru_cache(maxsize=None)
def gbi_batch_fns(model, num_classes: int, normalization: str, iterative_steps: tuple,
                  lr: float, momentum: float, penalty: float) -> dict:
    """Jitted per-batch GBI programs ``(params, images uint8 [B, ...], ...) -> ...``.

    Cached on their (hashable) settings, so datasets with equal shapes share the
    compiled programs.
    """
    z0 = inference.max_entropy_latent(num_classes)
    opt = latent_optimizer(lr, momentum)
    ks = jnp.asarray(iterative_steps) - 1
    prep = lambda xb: gdata.normalize(xb, normalization)

    @jax.jit
    def one_step(params, xb):  # one forward + one backward per image, whatever K
        res = inference.one_step_batch(example_loss_fn(model, params), z0, prep(xb),
                                       outputs=("scores", "loss"))
        return {"scores": res.scores, "loss": res.loss}

    @jax.jit
    def exhaustive(params, xb):  # K forward passes per image -> [B, K] one-hot losses
        res = inference.exhaustive_batch(example_loss_fn(model, params), num_classes, prep(xb),
                                         outputs=("grad",))
        return res.grad

    @jax.jit
    def iterative(params, xb):
        _, trace = inference.optimize_batch(example_loss_fn(model, params), z0, prep(xb), opt,
                                            int(max(iterative_steps)), penalty=penalty,
                                            penalty_kind="squared")
        return {"z": trace.z[:, ks], "loss": trace.loss}

    @jax.jit
    def ood(params, xb, temperature, step_size):
        loss = example_loss_fn(model, params)
        return jax.vmap(lambda x: inference.ood_scores(
            lambda z: loss(z, x), z0, temperature=temperature, step_size=step_size))(prep(xb))

    return {"one_step": one_step, "exhaustive": exhaustive, "iterative": iterative, "ood": ood}


def gbi_fns(config, model, num_classes: int) -> dict:
    ec = config.eval
    return gbi_batch_fns(model, num_classes, config.data.normalization,
                         tuple(int(k) for k in ec.iterative_steps), float(ec.latent_lr),
                         float(ec.latent_momentum), float(ec.latent_penalty))


@functools.lru_cache(maxsize=None)
def classifier_probs_fn(model, normalization: str):
    """Jitted ``(stacked params [M], images [B, ...]) -> softmax [B, M, K]``."""

    @jax.jit
    def probs(params_stacked, xb):
        x = gdata.normalize(xb, normalization)
        p = jax.vmap(lambda prm: jax.nn.softmax(model.apply(prm, x)))(params_stacked)
        return jnp.swapaxes(p, 0, 1)

    return probs


def classifier_probs(config, model, params, images) -> np.ndarray:
    """``[M, N, K]`` softmax of every ensemble member."""
    fn = classifier_probs_fn(model, config.data.normalization)
    return np.swapaxes(run_batched(fn, params, images, config.eval.batch_size), 0, 1)


def calibration(scores, labels, alpha: float, num_bins: int) -> dict:
    post = jax.nn.softmax(jnp.asarray(scores) / alpha, -1)
    conf = jnp.max(post, -1)
    correct = jnp.argmax(post, -1) == jnp.asarray(labels)
    bins = M.reliability_bins(conf, correct, num_bins)
    order = np.argsort(-np.asarray(conf))
    c_sorted = np.asarray(correct)[order]
    coverage = np.linspace(0.1, 1.0, 10)
    acc_at = [float(np.mean(c_sorted[:max(1, int(round(f * len(c_sorted))))])) for f in coverage]
    return {"alpha": float(alpha),
            "ece": float(M.expected_calibration_error(conf, correct, num_bins)),
            "mean_confidence": float(jnp.mean(conf)),
            "bins": {"edges": np.asarray(bins.edges).tolist(),
                     "count": np.asarray(bins.count).tolist(),
                     "mean_confidence": np.asarray(bins.mean_confidence).tolist(),
                     "accuracy": np.asarray(bins.accuracy).tolist()},
            "accuracy_at_coverage": {"coverage": coverage.tolist(), "accuracy": acc_at}}


def measure_throughput(config, model, params, images, num_classes: int) -> dict:
    """Images/s of one-step GBI (1 fwd + 1 bwd) vs exhaustive scoring (K fwd), same run.

    Uses the same compiled per-batch programs as the evaluation (batch
    ``eval.batch_size``); the best of ``eval.throughput_repeats`` timings.
    """
    fns = gbi_fns(config, model, num_classes)
    b = config.eval.batch_size
    xb = np.asarray(images[:b])
    if len(xb) < b:
        xb = np.concatenate([xb, np.repeat(xb[-1:], b - len(xb), 0)])
    xb = jnp.asarray(xb)
    out = {"batch": b, "num_classes": num_classes}
    for name in ("one_step", "exhaustive"):
        fn = fns[name]
        jax.block_until_ready(fn(params, xb))  # compile (normally cached) + warm up
        best = math.inf
        for _ in range(config.eval.throughput_repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, xb))
            best = min(best, time.perf_counter() - t0)
        out[f"{name}_images_per_s"] = b / best
    out["one_step_over_exhaustive"] = out["one_step_images_per_s"] / out["exhaustive_images_per_s"]
    out["winner"] = "one_step" if out["one_step_over_exhaustive"] > 1 else "exhaustive"
    return out


# ---------------------------------------------------------------------------
# One dataset.
# ---------------------------------------------------------------------------
def run_dataset(config, dataset: str, wd: Workdir,
                splits: Optional[Splits] = None) -> tuple[dict, dict]:
    """Train and evaluate on one dataset (its splits from ``splits``, :func:`find_data`,
    else loaded). Returns (results, artefacts for OOD/figures)."""
    t0 = time.time()
    train = _split(config, splits, dataset, "train")
    test = _split(config, splits, dataset, "test")
    k = train.num_classes
    logging.info("%s | %s", gdata.describe(train), gdata.describe(test))
    seed = int(config.seed)
    seeds = [seed + i for i in range(config.classifier.members)]
    ae, ae_params, ae_fit = train_autoencoder(config, train, k, wd, f"{dataset}_ae", seed,
                                              config.train.epochs[dataset])
    clf, clf_params, clf_fit = train_classifiers(
        config, train, k, wd, f"{dataset}_clf", seeds, config.train.classifier_epochs[dataset])
    t_train = time.time() - t0

    fns = gbi_fns(config, ae, k)
    bs = config.eval.batch_size
    labels = np.asarray(test.labels)
    test_images = jnp.asarray(test.images)  # on device once, for every evaluation below
    one = run_batched(fns["one_step"], ae_params, test_images, bs)
    exh = run_batched(fns["exhaustive"], ae_params, test_images, bs)
    scores = np.asarray(one["scores"])
    acc = lambda pred: float(np.mean(np.asarray(pred) == labels))
    res: dict[str, Any] = {
        "data": {"train": gdata.describe(train), "test": gdata.describe(test),
                 "num_train": len(train), "num_test": len(test), "num_classes": k},
        "accuracy": {"one_step": acc(scores.argmax(-1)), "exhaustive": acc(exh.argmin(-1)),
                     "chance": 1.0 / k},
    }
    # Iterative GBI on (a prefix of) the test set.
    n_it = len(test) if not config.eval.iterative_max_examples else min(
        len(test), config.eval.iterative_max_examples)
    it = run_batched(fns["iterative"], ae_params, test_images[:n_it], bs)
    res["accuracy"]["iterative"] = {
        str(s): float(np.mean(np.asarray(it["z"])[:, j].argmax(-1) == labels[:n_it]))
        for j, s in enumerate(config.eval.iterative_steps)}
    res["accuracy"]["iterative_num_examples"] = n_it
    res["accuracy"]["one_step_on_iterative_examples"] = float(
        np.mean(scores[:n_it].argmax(-1) == labels[:n_it]))
    res["iterative_loss_curve"] = np.asarray(it["loss"]).mean(0).tolist()
    # Classifiers.
    probs = classifier_probs(config, clf, clf_params, test_images)  # [M, N, K]
    member_acc = [acc(p.argmax(-1)) for p in probs]
    ens = probs.mean(0)
    res["accuracy"]["ce_classifier"] = member_acc[0]
    res["accuracy"]["ce_members"] = member_acc
    res["accuracy"]["ensemble"] = acc(ens.argmax(-1))
    res["accuracy"]["gbi_over_ce"] = res["accuracy"]["one_step"] / max(member_acc[0], 1e-9)
    res["paper"] = PAPER.get(dataset, {})

    # Calibration of the one-step posterior.
    n_cal = min(len(train), config.eval.calibration_examples)
    cal_images = train.images[gdata.epoch_permutation(len(train), seed + 777, 0)[:n_cal]]
    cal_labels = train.labels[gdata.epoch_permutation(len(train), seed + 777, 0)[:n_cal]]
    train_scores = run_batched(fns["one_step"], ae_params, cal_images, bs)["scores"]
    alpha_fit = M.fit_temperature(train_scores, cal_labels) if config.eval.fit_temperature \
        else config.eval.temperature
    res["calibration"] = {
        "fixed": calibration(scores, labels, config.eval.temperature, config.eval.num_bins),
        "fitted": calibration(scores, labels, alpha_fit, config.eval.num_bins),
        "fitted_on": f"{n_cal} training images (NLL of softmax(-g/alpha))",
        "ce_classifier_ece": float(M.expected_calibration_error(
            probs[0].max(-1), probs[0].argmax(-1) == labels, config.eval.num_bins)),
        "ensemble_ece": float(M.expected_calibration_error(
            ens.max(-1), ens.argmax(-1) == labels, config.eval.num_bins)),
    }
    # Cost.
    res["throughput"] = measure_throughput(config, ae, ae_params, test.images, k)
    res["train_curves"] = {"ae_steps": np.asarray(ae_fit.steps).tolist(),
                           "ae_loss": np.asarray(ae_fit.history["loss"])[:, 0].tolist(),
                           "clf_steps": np.asarray(clf_fit.steps).tolist(),
                           "clf_loss": np.asarray(clf_fit.history["loss"]).mean(1).tolist()}
    grad_norm = np.sqrt(np.sum(train_scores ** 2, -1))
    res["wall_time_s"] = {"train": t_train, "total": time.time() - t0}
    artefacts = {"ae": ae, "ae_params": ae_params, "clf": clf, "clf_params": clf_params,
                 "test": test, "test_images": test_images, "alpha": alpha_fit,
                 "median_grad_norm": float(np.median(grad_norm)),
                 "scores": scores}
    return res, artefacts


# ---------------------------------------------------------------------------
# OOD.
# ---------------------------------------------------------------------------
def ood_pair(config, models: dict, images_out: np.ndarray, k: int) -> dict:
    """AUROC (score up = OOD) of every GBI score and the classifier baselines."""
    ae, ae_params = models["ae"], models["ae_params"]
    fn = gbi_fns(config, ae, k)["ood"]
    step = jnp.float32(config.ood.step_length / max(models["median_grad_norm"], 1e-12))
    alpha = jnp.float32(models["alpha"])
    bs = config.eval.batch_size
    s_in = run_batched(fn, ae_params, models.get("test_images", models["test"].images), bs,
                       alpha, step)
    s_out = run_batched(fn, ae_params, images_out, bs, alpha, step)
    res = {"num_in": len(models["test"]), "num_out": len(images_out), "gbi": {}}
    for field, sign in OOD_ORIENTATION.items():
        a = np.asarray(getattr(s_in, field)) * sign
        b = np.asarray(getattr(s_out, field)) * sign
        res["gbi"][field] = float(M.auroc(a, b))
    p_in = classifier_probs(config, models["clf"], models["clf_params"], models["test"].images)
    p_out = classifier_probs(config, models["clf"], models["clf_params"], images_out)
    res["softmax"] = float(M.auroc(-p_in[0].max(-1), -p_out[0].max(-1)))
    res["ensemble"] = float(M.auroc(-p_in.mean(0).max(-1), -p_out.mean(0).max(-1)))
    ent = lambda p: -np.sum(p * np.log(np.clip(p, 1e-12, 1)), -1)
    res["ensemble_entropy"] = float(M.auroc(ent(p_in.mean(0)), ent(p_out.mean(0))))
    res["best_gbi_score"] = max(res["gbi"], key=res["gbi"].get)
    res["histograms"] = {f: {"in": np.asarray(getattr(s_in, f)).tolist(),
                             "out": np.asarray(getattr(s_out, f)).tolist()}
                         for f in ("loss", "max_score")}
    return res


# ---------------------------------------------------------------------------
# Recomposition (our extension).
# ---------------------------------------------------------------------------
def recomposition(config, wd: Workdir, splits: Optional[Splits] = None) -> dict:
    """Train on all classes but one (K-1 latent units); infer z for the held-out class."""
    rc = config.recomposition
    train = _split(config, splits, rc.dataset, "train")
    test = _split(config, splits, rc.dataset, "test")
    k_all = train.num_classes
    held = int(rc.heldout_class)
    if held >= k_all:
        raise ValueError(f"config.recomposition.heldout_class: {held} is not a class of "
                         f"{rc.dataset} (0..{k_all - 1}).")
    kept = [c for c in range(k_all) if c != held]
    remap = np.full(k_all, -1, np.int32)
    remap[kept] = np.arange(len(kept))
    tr = train.subset(train.labels != held)
    tr = dataclasses.replace(tr, labels=remap[tr.labels])
    k = len(kept)
    model = autoencoder_from(config, train.images.shape[1:])
    data, shared, steps = _member_data(config, tr, [int(config.seed)], rc.epochs)
    model, params, _ = _fit_autoencoder(config, model, data, shared, steps, k, wd,
                                        "recomposition_ae", int(config.seed))
    # Novel class: every image of the held-out class (train and test: never trained on).
    novel = np.concatenate([train.images[train.labels == held], test.images[test.labels == held]])
    seen = test.subset(test.labels != held)
    fns = gbi_batch_fns(model, k, config.data.normalization, (int(rc.steps),), float(rc.lr),
                        float(config.eval.latent_momentum), float(rc.penalty))
    bs = config.eval.batch_size
    it = run_batched(fns["iterative"], params, novel, bs)
    exh = run_batched(fns["exhaustive"], params, novel, bs)
    z_final = np.asarray(it["z"])[:, -1]
    loss = example_loss_fn(model, params)

    @jax.jit
    def losses_at(z, images):  # loss of each image at its own latent
        return jax.vmap(lambda zi, x: loss(zi, x))(z, gdata.normalize(images,
                                                                       config.data.normalization))

    final = np.asarray(losses_at(jnp.asarray(z_final), jnp.asarray(novel)))
    ref = np.asarray(losses_at(jax.nn.one_hot(jnp.asarray(remap[seen.labels]), k),
                               jnp.asarray(seen.images)))
    a = {"curve": it["loss"], "z": z_final, "exhaustive": exh, "final": final}
    z = np.asarray(a["z"])
    nearest_opt = np.bincount(z.argmax(-1), minlength=k)
    nearest_exh = np.bincount(np.asarray(a["exhaustive"]).argmin(-1), minlength=k)
    names = [train.class_names[c] for c in kept]
    curve = np.asarray(a["curve"])
    return {
        "label": "extension (not in the paper): latent inference for a class held out from "
                 "training",
        "dataset": rc.dataset, "heldout_class": train.class_names[held],
        "num_novel_images": int(len(novel)), "latent_classes": names,
        "loss_uniform": float(curve[:, 0].mean()),
        "loss_best_trained_class": float(np.asarray(a["exhaustive"]).min(-1).mean()),
        "loss_optimised": float(np.asarray(a["final"]).mean()),
        "loss_seen_classes_true_code": float(ref.mean()),
        "loss_curve": curve.mean(0).tolist(),
        "z_final_mean": z.mean(0).tolist(),
        "z_final_sum_mean": float(z.sum(-1).mean()),
        "nearest_classes_optimised": {names[i]: int(nearest_opt[i]) for i in
                                      np.argsort(-nearest_opt) if nearest_opt[i]},
        "nearest_classes_exhaustive": {names[i]: int(nearest_exh[i]) for i in
                                       np.argsort(-nearest_exh) if nearest_exh[i]},
        "steps": int(rc.steps),
    }


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str, *,
        override_ok: Sequence[str] = ()) -> dict[str, Any]:
    """Train, evaluate, write ``results.json``/``results.md``/figures, then the completion
    marker; return the results.

    The workdir is claimed once the config is valid and every dataset the run needs is
    found (:func:`find_data`); a run that fails before it trained anything leaves no claim
    behind. ``override_ok``: fields that may differ from the workdir's config (see the
    config module's docstring)."""
    return run_experiment(config, workdir, config_lib, _run_claimed, validate=validate,
                          prepare=find_data, override_ok=override_ok)


def _run_claimed(config: ml_collections.ConfigDict, wd: Workdir, splits: Splits,
                 skipped: dict[str, str]) -> dict[str, Any]:
    t_start = time.time()
    results: dict[str, Any] = {"experiment": "gbi_images", "datasets": {}, "skipped": {},
                               "ood": {}}
    artefacts = {}
    for dataset in config.datasets:
        if dataset in skipped:
            results["skipped"][dataset] = skipped[dataset]
            continue
        res, art = run_dataset(config, dataset, wd, splits)
        results["datasets"][dataset] = res
        artefacts[dataset] = art
    for pair in config.ood.pairs:
        d_in, d_out = pair.split(":")
        if d_in not in artefacts:  # its dataset was skipped (reported above)
            continue
        if d_out in skipped:
            logging.warning("skipping OOD pair %s: %s is absent", pair, d_out)
            results["skipped"].setdefault(d_out, skipped[d_out])
            continue
        out_test = splits[(d_out, "test")]
        models = artefacts[d_in]
        if out_test.images.shape[1:] != models["test"].images.shape[1:]:
            raise ValueError(f"config.ood.pairs: {pair!r} pairs images of different shapes.")
        results["ood"][pair] = ood_pair(config, models, out_test.images,
                                        models["test"].num_classes)
        results["ood"][pair]["paper"] = PAPER["ood_mnist_fashion"] if pair == "mnist:fashion" \
            else {}
    if config.recomposition.enabled and config.recomposition.dataset in artefacts:
        results["recomposition"] = recomposition(config, wd, splits)
    results["wall_time_s"] = time.time() - t_start
    results["devices"] = f"{jax.device_count()} x {jax.devices()[0].platform}"
    from experiments.gbi_images import figures

    table = format_table(results)
    wd.finish(results, table, figures.draw if config.figures else None)
    print(table)
    return results


# ---------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------
def _pct(v):
    return "-" if v is None else f"{100 * v:.2f} %"


def format_table(results: dict) -> str:
    lines = ["", "## Accuracy (test set)", ""]
    ds = results["datasets"]
    names = list(ds)
    if names:
        lines.append("| method | " + " | ".join(
            f"{DATASET_TITLES[d]} ({ds[d]['data']['num_train']} train / "
            f"{ds[d]['data']['num_test']} test)" for d in names) + " | paper (full MNIST) |")
        lines.append("|---" * (len(names) + 2) + "|")

        def row(label, get, paper=""):
            lines.append(f"| {label} | " + " | ".join(get(ds[d]) for d in names) + f" | {paper} |")

        row("one-step GBI (argmax -dL/dz at uniform z)", lambda r: _pct(r["accuracy"]["one_step"]),
            "85.46 % (CIFAR-100: 18.52 %)")
        steps = sorted({int(s) for d in names for s in ds[d]["accuracy"]["iterative"]})
        for s in steps:
            row(f"iterative GBI, {s} step{'s' if s > 1 else ''}",
                lambda r, s=s: _pct(r["accuracy"]["iterative"].get(str(s))), "not reported")
        row("exhaustive likelihood (K forward passes)", lambda r: _pct(r["accuracy"]["exhaustive"]),
            "not reported")
        row("CE classifier (same encoder)", lambda r: _pct(r["accuracy"]["ce_classifier"]),
            "91.44 %")
        row("deep ensemble (5 CE classifiers)", lambda r: _pct(r["accuracy"]["ensemble"]), "-")
        row("one-step GBI / CE", lambda r: f"{r['accuracy']['gbi_over_ce']:.3f}", "0.935")
        row("chance", lambda r: _pct(r["accuracy"]["chance"]), "10 %")
        def per_dataset(title, header, cells):  # one row per dataset
            lines.extend(["", f"## {title}", "", "| dataset | " + " | ".join(header) + " |",
                          "|---" * (len(header) + 1) + "|"])
            lines.extend(f"| {DATASET_TITLES[d]} | " + " | ".join(cells(ds[d])) + " |"
                         for d in names)

        per_dataset("Cost per image (K = number of classes, same run)",
                    ["K", "one-step GBI (img/s)", "exhaustive (img/s)", "one-step / exhaustive",
                     "faster"],
                    lambda r: [str(r["throughput"]["num_classes"]),
                               f"{r['throughput']['one_step_images_per_s']:.0f}",
                               f"{r['throughput']['exhaustive_images_per_s']:.0f}",
                               f"{r['throughput']['one_step_over_exhaustive']:.2f}",
                               str(r["throughput"]["winner"])])
        per_dataset("Calibration of the one-step posterior softmax(-g/alpha)",
                    ["alpha", "ECE", "mean confidence", "alpha fitted on train", "ECE",
                     "CE classifier ECE", "ensemble ECE"],
                    lambda r: [f"{r['calibration']['fixed']['alpha']:.3g}",
                               f"{r['calibration']['fixed']['ece']:.3f}",
                               f"{r['calibration']['fixed']['mean_confidence']:.3f}",
                               f"{r['calibration']['fitted']['alpha']:.3g}",
                               f"{r['calibration']['fitted']['ece']:.3f}",
                               f"{r['calibration']['ce_classifier_ece']:.3f}",
                               f"{r['calibration']['ensemble_ece']:.3f}"])
    if results["ood"]:
        pairs = list(results["ood"])
        titles = [[DATASET_TITLES[d] for d in p.split(":")] for p in pairs]
        lines += ["", "## OOD detection (AUROC; per-image normalised images)", "",
                  "| score | " + " | ".join(f"in {a} / out {b}" for a, b in titles)
                  + " | paper (MNIST / Fashion) |",
                  "|---" * (len(pairs) + 2) + "|"]
        paper = PAPER["ood_mnist_fashion"]
        labels = {"loss": "GBI: loss at uniform z",
                  "max_score": "GBI: max_k -dL/dz_k (low = OOD)",
                  "grad_norm": "GBI: ||dL/dz|| (low = OOD)",
                  "posterior_entropy": "GBI: entropy of posterior",
                  "loss_after_step": "GBI: loss after one step"}
        for f, label in labels.items():
            lines.append(f"| {label} | " + " | ".join(
                f"{results['ood'][p]['gbi'][f]:.3f}" for p in pairs) + f" | GBI {paper['gbi']} |")
        for key, label, ref in (("softmax", "CE max-softmax", paper["softmax"]),
                                ("ensemble", "deep ensemble max-prob", paper["ensemble"]),
                                ("ensemble_entropy", "deep ensemble entropy", "-")):
            lines.append(f"| {label} | " + " | ".join(
                f"{results['ood'][p][key]:.3f}" for p in pairs) + f" | {ref} |")
        lines.append("| Likelihood Regret | " + " | ".join("not run" for _ in pairs)
                     + f" | {paper['likelihood_regret']} |")
    if "recomposition" in results:
        r = results["recomposition"]
        top3 = lambda d: ", ".join(f"{k} ({v})" for k, v in list(d.items())[:3])  # noqa: E731
        near = top3(r["nearest_classes_optimised"])
        near_e = top3(r["nearest_classes_exhaustive"])
        lines += ["", f"## Recomposition on images — our extension, not in the paper", "",
                  f"Class {r['heldout_class']} held out of training ({r['dataset']}, "
                  f"{r['num_novel_images']} images); z ({len(r['latent_classes'])} units) "
                  f"optimised for {r['steps']} steps from uniform.", "",
                  "| latent | mean loss (0.5 SSE) |", "|---|---|",
                  f"| uniform (start) | {r['loss_uniform']:.1f} |",
                  f"| best trained one-hot (exhaustive) | {r['loss_best_trained_class']:.1f} |",
                  f"| optimised z | {r['loss_optimised']:.1f} |",
                  f"| reference: seen classes, true one-hot | "
                  f"{r['loss_seen_classes_true_code']:.1f} |", "",
                  f"Nearest classes (argmax of optimised z): {near}; by exhaustive loss: {near_e}."]
    for d, msg in results["skipped"].items():
        lines += ["", f"**{DATASET_TITLES[d]} skipped:** " + msg.replace("\n", " ")]
    lines.append(f"\nwall time {results['wall_time_s']:.0f} s on {results['devices']}")
    return "\n".join(lines)
