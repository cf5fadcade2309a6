"""GBI toy experiment: switching-Gaussian stream, LSTM with a task latent
(Hummos et al. 2024, Sec. 3.1, Figs. 2-3, Table 1).

``run(config, workdir)`` trains three arms on the same streams (all arms and
seeds in one vmapped program, :func:`train_main_task`) and runs, with weights
frozen, one function per analysis:

1. :func:`learning_curves`: training loss vs step;
2. :func:`forgetting`: next-step MSE on the context of the second-to-last training
   block (paper Table 1: GBI-LSTM 0.24 vs LSTM 0.30);
3. :func:`one_step_inference` vs the Bayesian ideal observer (:func:`ideal_observer`):
   correlation of the centred one-step scores with the centred Gaussian
   log-likelihoods of the same window; context-identification accuracy vs the ideal
   observers';
4. :func:`online_inference`: latent trajectory vs the exact HMM forward-filter
   posterior (correlation, accuracy);
5. :func:`recomposition`: a compositional (mean x std) code trained on 3
   combinations, the 4th inferred by iterative optimisation of the latent (loss vs
   steps), GBI vs a baseline whose input of the same size is optimised;
6. :func:`modularity`: the shared-unit ratio (see :func:`shared_unit_ratio`).

It writes ``results.json`` / ``results.md``, ``arrays.npz`` (what the figures draw
beyond ``results.json``, :func:`figure_arrays`) and ``figures/`` (``figures.draw``;
redraw with ``python -m experiments.figures --workdir=DIR``).

Arms: ``gbi`` (one-hot of the true context), ``baseline`` (the uniform vector,
i.e. no information), ``shuffled`` (a one-hot per block drawn independently of
the context: same size and statistics, no information).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from experiments.common import run_experiment
from gbi_jax import inference, training
from gbi_jax.analysis import ideal_observer as io
from gbi_jax.analysis import metrics as M
from gbi_jax.models import RecurrentNetwork
from gbi_jax.tasks import SwitchingGaussianTask, compositional_code
from gbi_jax.validation import renamed
from gbi_jax.workdir import Workdir

from experiments.gbi_toy import config as config_lib

EXPERIMENT = "gbi_toy"  # results.json["experiment"]: experiments.figures finds the drawer
ARMS = ("gbi", "baseline", "shuffled")
PAPER = {"forgetting_mse": {"gbi": 0.24, "baseline": 0.30}}


# ---------------------------------------------------------------------------
# Config checks and builders.
# ---------------------------------------------------------------------------
def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the first bad field."""

    def need(cond, field, msg):
        if not cond:
            raise ValueError(f"config.{field}: {msg}")

    seeds = tuple(config.seeds)
    need(len(seeds) >= 1 and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
         "seeds", f"must be a non-empty tuple of integers, e.g. (0, 1), got {seeds!r}")
    need(len(set(seeds)) == len(seeds), "seeds",
         f"must not repeat a seed (it would train the same network twice), got {seeds!r}")
    need(isinstance(config.seed, int), "seed", f"must be an integer, got {config.seed!r}")
    need(len(config.arms) >= 1 and all(a in ARMS for a in config.arms), "arms",
         f"must be a non-empty subset of {ARMS}, got {tuple(config.arms)}")
    need(len(config.task.means) >= 2, "task.means", "needs K >= 2 contexts")
    need(config.train.blocks >= 3, "train.blocks", "must be >= 3 (forgetting needs a "
         f"second-to-last block), got {config.train.blocks}")
    need(config.train.window >= 1, "train.window", f"must be >= 1, got {config.train.window}")
    need(config.train.lr > 0, "train.lr", f"must be > 0, got {config.train.lr}")
    need(config.train.passes >= 1, "train.passes", f"must be >= 1, got {config.train.passes}")
    need(config.train.chunk_size >= 1, "train.chunk_size", "must be >= 1")
    need(config.train.log_every >= 1, "train.log_every", "must be >= 1")
    for bound in ("max_loss", "max_grad_norm"):
        value = config.train[bound]
        need(value is None or 0 < value < float("inf"), f"train.{bound}",
             f"must be a positive finite number (or unset), got {value!r}")
    need(config.eval.test_blocks >= 1, "eval.test_blocks", "must be >= 1")
    need(config.eval.forgetting_steps >= 1, "eval.forgetting_steps", "must be >= 1")
    need(config.latent.steps >= 0, "latent.steps", f"must be >= 0, got {config.latent.steps}")
    need(config.latent.lr > 0, "latent.lr", "must be > 0")
    need(config.online.lr > 0, "online.lr", "must be > 0")
    need(config.online.steps_per_obs >= 1, "online.steps_per_obs", "must be >= 1")
    need(config.online.temperature > 0, "online.temperature", "must be > 0")
    for name in ("online", "latent"):
        need(config[name].penalty >= 0, f"{name}.penalty", "must be >= 0")
        need(config[name].penalty_kind in ("norm", "squared"), f"{name}.penalty_kind",
             f"must be 'norm' or 'squared', got {config[name].penalty_kind!r}")
        need(config[name].optimizer in ("sgd", "adam"), f"{name}.optimizer",
             f"must be 'sgd' or 'adam', got {config[name].optimizer!r}")
    r = config.recomposition
    need(r.loss in ("mse", "nll"), "recomposition.loss", f"must be 'mse' or 'nll', got {r.loss!r}")
    if r.enabled:
        need(len(r.means) == len(r.stds) >= 3, "recomposition.means",
             "means and stds need the same length >= 3")
        need(0 <= r.heldout_context < len(r.means), "recomposition.heldout_context",
             "must index recomposition.means")
        need(len(r.train_contexts) >= 1, "recomposition.train_contexts",
             "needs at least one context")
        need(r.heldout_context not in tuple(r.train_contexts), "recomposition.train_contexts",
             "must not contain the held-out context")
        need(r.blocks >= 3, "recomposition.blocks", "must be >= 3")
        need(r.test_length > config.train.window, "recomposition.test_length",
             "must exceed train.window")
    need(0 < config.modularity.threshold < 1, "modularity.threshold", "must be in (0, 1)")
    # The task and the model check their own fields (renamed to the config's).
    with renamed({"SwitchingGaussianTask.": "task.", "RecurrentNetwork.": "model."},
                 prefix="config."):
        task_from(config.task)
        model_from(config, out_features=1)


def task_from(tc, **overrides) -> SwitchingGaussianTask:
    kw = dict(means=tuple(tc.means), stds=tuple(tc.stds), block_p=tc.block_p,
              min_block=tc.min_block, max_block=tc.max_block)
    kw.update(overrides)
    return SwitchingGaussianTask(**kw)


def model_from(config, out_features: int) -> RecurrentNetwork:
    mc = config.model
    return RecurrentNetwork(core=mc.core, hidden=mc.hidden, out_features=out_features,
                            input_projection=mc.input_projection, z_injection=mc.z_injection)


def latent_optimizer(oc) -> optax.GradientTransformation:
    if oc.optimizer == "sgd":
        return optax.sgd(oc.lr, momentum=oc.momentum or None)
    return optax.adam(oc.lr)


# ---------------------------------------------------------------------------
# Losses on windows.
# ---------------------------------------------------------------------------
def gaussian_nll(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Per-target NLL of ``N(target; pred[..., 0], exp(pred[..., 1])^2)`` (+const dropped)."""
    mean, log_sd = pred[..., 0], jnp.clip(pred[..., 1], -5.0, 3.0)
    return 0.5 * jnp.square((target - mean) * jnp.exp(-log_sd)) + log_sd


def pointwise_loss(kind: str, pred: jax.Array, target: jax.Array) -> jax.Array:
    if kind == "mse":
        return jnp.square(pred[..., 0] - target)
    return gaussian_nll(pred, target)


def make_windows(x: jax.Array, window: int) -> tuple[jax.Array, jax.Array]:
    """All sliding windows: inputs ``x[t-H:t]`` and targets ``x[t-H+1:t+1]``.

    Returns ``(inputs [N, H], targets [N, H])`` for ``t = H .. T-1`` (N = T - H);
    window ``n`` predicts observation ``n + H`` last.
    """
    idx = jnp.arange(x.shape[0] - window)[:, None] + jnp.arange(window)[None, :]
    return x[idx], x[idx + 1]


# ---------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------
def stream_length(task: SwitchingGaussianTask, blocks: int) -> int:
    """Steps in a stream of about ``blocks`` blocks (fixed, so seeds vmap)."""
    return int(round(blocks * task.mean_block_length))


def arm_latents(arm: str, context: jax.Array, block: jax.Array, code: jax.Array,
                key: jax.Array) -> jax.Array:
    """The latent stream ``[T, Z]`` an arm sees for a context stream.

    ``code`` is ``[K, Z]`` (the one-hot identity for the main task).
    """
    if arm == "gbi":
        return code[context]
    if arm == "baseline":
        return jnp.broadcast_to(jnp.mean(code, 0), (context.shape[0], code.shape[1]))
    if arm == "shuffled":
        fake = jax.random.randint(key, (int(block.shape[0]) + 1,), 0, code.shape[0])
        return code[fake[block]]
    raise ValueError(f"unknown arm {arm!r}")


def train_arms(config, task: SwitchingGaussianTask, code: jax.Array, arms, *, blocks: int,
               loss_kind: str, workdir: Workdir | None, name: str):
    """Train every (arm, seed) network on its stream. Returns (fit, streams, members).

    ``streams`` is a :class:`Stream` with a leading seed axis (shared by arms);
    ``members`` lists ``(arm, seed)`` in member order (arm-major).
    """
    seeds = [config.seed + int(s) for s in config.seeds]
    length = stream_length(task, blocks)
    window = config.train.window
    streams = seed_streams(task, seeds, length, salt=7)
    zs, xs, members = [], [], []
    for arm in arms:
        for i, s in enumerate(seeds):
            zkey = jax.random.fold_in(jax.random.PRNGKey(s), 11)
            zs.append(arm_latents(arm, streams.context[i], streams.block[i], code, zkey))
            xs.append(streams.x[i])
            members.append((arm, s))
    data = {"x": jnp.stack(xs), "z": jnp.stack(zs)}
    out_features = 1 if loss_kind == "mse" else 2
    model = model_from(config, out_features)
    positions = length - window

    def init_fn(key, d):
        return model.init(key, d["x"][:window, None], d["z"][:window])

    def loss_fn(params, d, key, step):
        p = step % positions
        inputs = jax.lax.dynamic_slice_in_dim(d["x"], p, window)
        targets = jax.lax.dynamic_slice_in_dim(d["x"], p + 1, window)
        z = jax.lax.dynamic_slice_in_dim(d["z"], p, window)
        pred = model.apply(params, inputs[:, None], z)
        return jnp.mean(pointwise_loss(loss_kind, pred, targets)), {}

    fit = training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(config.train.lr),
                       num_steps=positions * config.train.passes,
                       seeds=[s for _, s in members], member_data=data,
                       chunk_size=config.train.chunk_size, workdir=workdir,
                       log_every=config.train.log_every, name=name,
                       max_loss=config.train.max_loss,
                       max_grad_norm=config.train.max_grad_norm)
    return fit, streams, members, model


# ---------------------------------------------------------------------------
# Evaluation pieces (each for ONE network; vmapped over members by the caller).
# ---------------------------------------------------------------------------
def window_loss_fn(model, params, inputs, targets, loss_kind, scale=1.0):
    """``z -> sum over the window of the pointwise loss`` for one window."""

    def loss(z):
        pred = model.apply(params, inputs[:, None], z)
        return jnp.sum(pointwise_loss(loss_kind, pred, targets)) * scale

    return loss


def shared_unit_ratio(hidden: jax.Array, context: jax.Array, num_contexts: int,
                      threshold: float) -> jax.Array:
    """Fraction of engaged units that are engaged in every context.

    ``a[u, c]`` = mean ``|h_u|`` over the steps of context ``c``; unit ``u`` is
    *engaged* in ``c`` if ``a[u, c] > threshold * max_{u', c'} a[u', c']``. The
    ratio is ``#units engaged in all contexts / #units engaged in any`` (1 = every
    unit shared, a fully distributed code; lower = more modular). Our reading of
    the paper's "shared unit ratio" (Fig. 2E), whose definition is not given.

    Args:
      hidden: ``[N, H]`` hidden states; context: ``int[N]``.
    """
    onehot = jax.nn.one_hot(context, num_contexts)  # [N, K]
    counts = jnp.maximum(onehot.sum(0), 1.0)
    a = (jnp.abs(hidden).T @ onehot) / counts  # [H, K]
    present = onehot.sum(0) > 0
    engaged = (a > threshold * jnp.max(a)) | ~present[None, :]
    any_ = jnp.any(engaged & present[None, :], axis=1)
    all_ = jnp.all(engaged, axis=1) & any_
    return jnp.sum(all_) / jnp.maximum(jnp.sum(any_), 1)


def summarise(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(np.mean(v)), "std": float(np.std(v)), "per_seed": v.tolist()}


# ---------------------------------------------------------------------------
# The analyses (weights frozen). Each takes the trained networks and returns its
# section of ``results.json`` (plus the arrays its figure draws, where it has one).
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class Trained:
    """The main-task networks of every (arm, seed) and what the analyses share.

    Members are arm-major: member ``m`` is arm ``members[m][0]`` with seed index
    ``m % len(seeds)``; ``params`` is stacked on the member axis.
    """

    config: ml_collections.ConfigDict
    task: SwitchingGaussianTask
    code: jax.Array  # [K, Z] latent of each context
    model: RecurrentNetwork
    fit: training.FitResult
    streams: Any  # training streams, leading seed axis
    members: list  # [(arm, seed)] in member order
    arms: tuple
    seeds: list

    @property
    def params(self):
        return self.fit.state.params

    @property
    def window(self) -> int:
        return self.config.train.window

    @property
    def seed_index(self) -> jax.Array:
        """``int[M]``: the seed index of every member (to gather per-seed material)."""
        return jnp.asarray([m % len(self.seeds) for m in range(len(self.members))])

    def by_arm(self, values) -> dict:
        """``[M, ...] -> {arm: [S, ...]}``."""
        v, n = np.asarray(values), len(self.seeds)
        return {a: v[i * n:(i + 1) * n] for i, a in enumerate(self.arms)}

    def summary(self, values) -> dict:
        """``{arm: summarise(values of its seeds)}`` for per-member ``values``."""
        return {a: summarise(v) for a, v in self.by_arm(values).items()}


def train_main_task(config, wd: Workdir) -> Trained:
    """Train every arm and seed on the main task (one-hot code of the K contexts)."""
    task = task_from(config.task)
    code = jnp.eye(task.num_contexts)
    arms = tuple(config.arms)
    fit, streams, members, model = train_arms(config, task, code, arms,
                                              blocks=config.train.blocks, loss_kind="mse",
                                              workdir=wd, name="train")
    return Trained(config, task, code, model, fit, streams, members, arms,
                   [config.seed + int(s) for s in config.seeds])


def learning_curves(tr: Trained) -> dict:
    """Mean and final (last tenth) training loss per arm, and the logged steps."""
    curves = tr.by_arm(np.asarray(tr.fit.history["loss"]).T)  # {arm: [S, rows]}
    out: dict[str, Any] = {
        a: {"mean_train_loss": summarise(c.mean(1)),
            "final_train_loss": summarise(c[:, -max(1, c.shape[1] // 10):].mean(1))}
        for a, c in curves.items()}
    out["steps"] = np.asarray(tr.fit.steps).tolist()
    return out


def seed_streams(task: SwitchingGaussianTask, seeds, length: int, *, salt: int):
    """One stream of ``length`` steps per seed (leading seed axis), drawn with the key
    ``fold_in(PRNGKey(seed), salt)``."""
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), salt) for s in seeds])
    return jax.jit(jax.vmap(lambda k: task.sample(k, length)))(keys)


def evaluation_streams(tr: Trained):
    """A fresh test stream of ``eval.test_blocks`` blocks per seed (shared by the arms)."""
    return seed_streams(tr.task, tr.seeds, stream_length(tr.task, tr.config.eval.test_blocks),
                        salt=99)


def forgetting(tr: Trained) -> dict:
    """Next-step MSE on fresh data of the second-to-last and last training contexts."""
    streams, window = tr.streams, tr.window
    last_block = streams.block[:, -1]  # [S]
    ctx_of_block = jax.vmap(lambda c, b, lb: c[jnp.argmax(b == lb)])
    second_to_last = ctx_of_block(streams.context, streams.block, last_block - 1)
    last_ctx = ctx_of_block(streams.context, streams.block, last_block)
    fsteps = tr.config.eval.forgetting_steps
    model, n_seeds = tr.model, len(tr.seeds)

    def block_mse(p, arm_z, x):
        inputs, targets = make_windows(x, window)
        pred = jax.vmap(lambda i, z: model.apply(p, i[:, None], z))(inputs, arm_z[:inputs.shape[0]])
        return jnp.mean(jnp.square(pred[..., 0] - targets))

    block_mse_all = jax.jit(jax.vmap(block_mse))  # one compile for both contexts

    def forgetting_for(ctx_per_seed, salt):
        """MSE of every member on a fresh block of its seed's context ``ctx_per_seed``."""
        xs, zs = [], []
        for m, (arm, s) in enumerate(tr.members):
            kx = jax.random.fold_in(jax.random.PRNGKey(s), salt)
            blk = tr.task.sample_block(kx, int(ctx_per_seed[m % n_seeds]), fsteps + window)
            xs.append(blk.x)
            zs.append(arm_latents(arm, blk.context, blk.block, tr.code,
                                  jax.random.fold_in(kx, 1)))
        return block_mse_all(tr.params, jnp.stack(zs), jnp.stack(xs))

    mse_stl = tr.by_arm(forgetting_for(np.asarray(second_to_last), 21))
    mse_last = tr.by_arm(forgetting_for(np.asarray(last_ctx), 22))
    out: dict[str, Any] = {
        a: {"mse_second_to_last": summarise(mse_stl[a]), "mse_last": summarise(mse_last[a])}
        for a in tr.arms}
    out["noise_floor"] = float(np.mean(np.square(tr.task.stds)))
    out["paper"] = PAPER["forgetting_mse"]
    return out


def ideal_observer(tr: Trained, test) -> dict:
    """The Bayesian observer on the test streams (per seed, numpy).

    ``window_loglik [S, N, K]`` (Gaussian log-likelihood of each window ending at
    ``t = H .. T-1``), ``loglik [S, T, K]`` (per step), ``posterior [S, T, K]`` and
    next-step ``prediction [S, T]`` of the exact HMM forward filter, and its accuracies.
    """
    window, k = tr.window, tr.task.num_contexts
    sds, means = jnp.asarray(tr.task.stds), jnp.asarray(tr.task.means)
    trans = io.switching_transition_matrix(k, tr.task.hazard)

    @jax.jit
    @jax.vmap
    def observer(x):  # per seed: windowed log-lik [T, K], per-step log-lik, HMM filter
        ll = io.gaussian_log_likelihoods(x, means, sds)
        return (io.window_log_likelihood(x, means, sds, window), ll,
                io.forward_filter(ll, trans, None))

    win_ll, loglik_t, hmm = observer(test.x)
    win_ll = np.asarray(win_ll[:, window:])  # windows ending at t = H .. T-1: [S, N, K]
    post = np.asarray(hmm.posterior)  # [S, T, K]
    ctx = np.asarray(test.context)
    # The observer's own next-step prediction: E[x_t | x_<t] under the HMM, [S, T].
    prediction = np.sum(np.asarray(hmm.predictive) * np.asarray(means), -1)
    return {"window_loglik": win_ll, "loglik": np.asarray(loglik_t), "posterior": post,
            "prediction": prediction,
            "filter_accuracy": float(np.mean(np.argmax(post[:, window:], -1) == ctx[:, window:])),
            "window_accuracy": float(np.mean(np.argmax(win_ll, -1) == ctx[:, window:]))}


def evaluation_windows(tr: Trained, test):
    """Sliding windows of the test streams: ``inputs, targets [S, N, H]``."""
    return jax.jit(jax.vmap(lambda x: make_windows(x, tr.window)))(test.x)


def one_step_inference(tr: Trained, test, observer: dict) -> tuple[dict, np.ndarray]:
    """One-step scores of every test window vs the ideal observer's window log-likelihoods.

    Returns the results section and the scores ``[M, N, K]``.
    """
    window, k = tr.window, tr.task.num_contexts
    inputs_s, targets_s = evaluation_windows(tr, test)
    labels = np.asarray(test.context[:, window:])  # context of each window's last target
    scale = 0.5 / float(np.mean(np.square(tr.task.stds)))  # MSE -> Gaussian NLL units
    z0 = inference.max_entropy_latent(k)
    model = tr.model

    def one_step_member(p, inputs, targets):
        ex_loss = lambda z, ex: window_loss_fn(model, p, ex[0], ex[1], "mse", scale)(z)
        return inference.one_step_batch(ex_loss, z0, (inputs, targets),
                                        temperature=tr.config.eval.temperature,
                                        outputs=("scores",))

    idx = tr.seed_index
    res = jax.jit(jax.vmap(one_step_member))(tr.params, inputs_s[idx], targets_s[idx])
    scores = np.asarray(res.scores)  # [M, N, K]
    win_ll = observer["window_loglik"]
    corr, acc = [], []
    for m in range(len(tr.members)):
        i = m % len(tr.seeds)
        corr.append(float(M.pearson(M.centered(scores[m]).ravel(),
                                    M.centered(win_ll[i]).ravel())))
        acc.append(float(np.mean(np.argmax(scores[m], -1) == labels[i])))
    corr, acc = tr.by_arm(corr), tr.by_arm(acc)
    out: dict[str, Any] = {a: {"corr_window_loglik": summarise(corr[a]),
                               "accuracy": summarise(acc[a])} for a in tr.arms}
    out["ideal_window_accuracy"] = observer["window_accuracy"]
    out["hmm_filter_accuracy"] = observer["filter_accuracy"]
    return out, scores


def online_inference(tr: Trained, test, observer: dict) -> tuple[dict, np.ndarray]:
    """The latent inferred online along each test stream vs the HMM filter.

    Returns the results section and the latent ``softmax(z / T)`` of every step
    ``[M, T, K]``.
    """
    oc, window, k, model = tr.config.online, tr.window, tr.task.num_contexts, tr.model
    opt = latent_optimizer(oc)

    def online_member(p, x):
        def loss_fn(logits, obs, mask):
            z = jax.nn.softmax(logits / oc.temperature)
            pred = model.apply(p, obs[:-1, None], z)[..., 0]
            valid = mask[:-1] & mask[1:]
            err = jnp.where(valid, jnp.square(pred - obs[1:]), 0.0)
            return jnp.sum(err), pred[-1]  # summed squared error, as in the authors' code

        _, trace = inference.online(loss_fn, jnp.zeros(k), x, opt, window=window + 1,
                                    num_steps=oc.steps_per_obs, penalty=oc.penalty,
                                    penalty_kind=oc.penalty_kind)
        return trace

    trace = jax.jit(jax.vmap(online_member))(tr.params, test.x[tr.seed_index])
    probs = np.asarray(jax.nn.softmax(trace.z / oc.temperature))  # [M, T, K]
    grads, preds = np.asarray(trace.grad), np.asarray(trace.aux)
    hmm_post, loglik = observer["posterior"], observer["loglik"]
    test_x, test_ctx = np.asarray(test.x), np.asarray(test.context)
    on_corr, on_acc, on_mse, g_corr = [], [], [], []
    sl = slice(window, None)
    for m in range(len(tr.members)):
        i = m % len(tr.seeds)
        on_corr.append(float(M.pearson(M.centered(probs[m, sl]).ravel(),
                                       M.centered(hmm_post[i, sl]).ravel())))
        on_acc.append(float(np.mean(np.argmax(probs[m, sl], -1) == test_ctx[i, sl])))
        on_mse.append(float(np.mean(np.square(preds[m, sl] - test_x[i, sl]))))
        g_corr.append(float(M.pearson(M.centered(-grads[m, sl]).ravel(),
                                      M.centered(loglik[i, sl]).ravel())))
    on_corr, on_acc, on_mse, g_corr = map(tr.by_arm, (on_corr, on_acc, on_mse, g_corr))
    out: dict[str, Any] = {a: {"corr_hmm_posterior": summarise(on_corr[a]),
                               "accuracy": summarise(on_acc[a]),
                               "prediction_mse": summarise(on_mse[a]),
                               "corr_grad_loglik": summarise(g_corr[a])} for a in tr.arms}
    out["hmm_filter_accuracy"] = observer["filter_accuracy"]
    out["hmm_prediction_mse"] = float(
        np.mean(np.square(observer["prediction"][:, sl] - test_x[:, sl])))
    return out, probs


def modularity(tr: Trained, test) -> dict:
    """Shared-unit ratio of the last hidden state of every test window."""
    window, k, model = tr.window, tr.task.num_contexts, tr.model
    inputs_s, _ = evaluation_windows(tr, test)
    labels_s = test.context[:, window:]
    zs = []
    for m, (arm, s) in enumerate(tr.members):
        i = m % len(tr.seeds)
        z = arm_latents(arm, test.context[i], test.block[i], tr.code,
                        jax.random.fold_in(jax.random.PRNGKey(s), 31))
        zs.append(z[window - 1:-1])  # latent of each window's last input step

    def ratio_member(p, inputs, zw, labels):
        _, h = jax.vmap(lambda inp, zz: model.apply(p, inp[:, None], zz, return_hidden=True))(
            inputs, zw)
        return shared_unit_ratio(h[:, -1], labels, k, tr.config.modularity.threshold)

    idx = tr.seed_index
    ratio = jax.jit(jax.vmap(ratio_member))(tr.params, inputs_s[idx], jnp.stack(zs),
                                            labels_s[idx])
    return {a: {"shared_unit_ratio": v} for a, v in tr.summary(ratio).items()}


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str, *,
        override_ok: Sequence[str] = ()) -> dict[str, Any]:
    """Train, run every analysis, write ``results.json``, ``results.md``, ``arrays.npz``
    and (``config.figures``) ``figures/``, then the completion marker; return the results.

    ``override_ok``: fields that may differ from the workdir's config
    (:func:`experiments.common.run_experiment`)."""
    return run_experiment(config, workdir, config_lib, _run_claimed, validate=validate,
                          override_ok=override_ok)


def _run_claimed(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    """The run after the workdir is claimed: every analysis in the order of the module
    docstring; ``results["wall_time_s"]`` covers all of them."""
    t_start = time.time()
    tr = train_main_task(config, wd)
    test = evaluation_streams(tr)
    observer = ideal_observer(tr, test)
    results: dict[str, Any] = {"experiment": EXPERIMENT, "arms": list(tr.arms),
                               "seeds": tr.seeds, "num_contexts": tr.task.num_contexts}
    results["learning"] = learning_curves(tr)
    results["forgetting"] = forgetting(tr)
    results["one_step"], scores = one_step_inference(tr, test, observer)
    results["online"], probs = online_inference(tr, test, observer)
    results["modularity"] = modularity(tr, test)
    if config.recomposition.enabled:
        results["recomposition"] = recomposition(config, wd)
    results["wall_time_s"] = time.time() - t_start
    results["per_seed"] = per_seed_view(results, tr.seeds)
    from experiments.gbi_toy import figures

    wd.write_arrays(figure_arrays(tr, test, observer, scores, probs))
    table = format_table(results)
    wd.finish(results, table, figures.draw if config.figures else None)
    print(table)
    return results


def figure_arrays(tr: Trained, test, observer: dict, scores, probs) -> dict[str, np.ndarray]:
    """What the figures draw beyond ``results.json`` (saved as ``arrays.npz``).

    ``member_arm`` / ``member_seed [M]``; ``train_steps [R]`` and ``train_loss [R, M]``
    (the logged training curve); ``test_context [S, T]``; ``hmm_posterior [S, T, K]``;
    ``window_loglik [S, N, K]``; ``one_step_scores [M, N, K]``; ``online_latent [M, T, K]``.
    """
    return {"member_arm": np.asarray([a for a, _ in tr.members]),
            "member_seed": np.asarray([s for _, s in tr.members]),
            "train_steps": np.asarray(tr.fit.steps),
            "train_loss": np.asarray(tr.fit.history["loss"]),
            "test_context": np.asarray(test.context),
            "hmm_posterior": observer["posterior"],
            "window_loglik": observer["window_loglik"],
            "one_step_scores": scores,
            "online_latent": probs}


def recomposition(config, wd: Workdir) -> dict:
    """Compositional (mean x std) code: train on 3 combinations, infer the 4th."""
    rc = config.recomposition
    task = task_from(config.task, means=tuple(rc.means), stds=tuple(rc.stds),
                     contexts=tuple(rc.train_contexts))
    code = compositional_code(rc.means, rc.stds, rc.inactive)
    arms = ("gbi", "baseline")
    fit, _, members, model = train_arms(config, task, code, arms, blocks=rc.blocks,
                                        loss_kind=rc.loss, workdir=wd, name="recomposition")
    window = config.train.window
    held = rc.heldout_context
    seeds = [s for _, s in members]
    xs = jnp.stack([task.sample_block(jax.random.fold_in(jax.random.PRNGKey(s), 41), held,
                                      rc.test_length).x for s in seeds])
    z0 = jnp.full((code.shape[1],), 0.5)
    opt = latent_optimizer(config.latent)
    steps = config.latent.steps

    def block_loss(p, x, z):
        inputs, targets = make_windows(x, window)
        pred = jax.vmap(lambda i: model.apply(p, i[:, None], z))(inputs)
        return jnp.mean(pointwise_loss(rc.loss, pred, targets))

    def member(p, x):
        loss = functools.partial(block_loss, p, x)
        z_final, trace = inference.optimize(loss, z0, opt, steps, penalty=config.latent.penalty,
                                            penalty_kind=config.latent.penalty_kind)
        trained = jax.vmap(loss)(code[jnp.asarray(rc.train_contexts)])
        return (z_final, trace.loss, loss(z_final), loss(code[held]), trained)

    z_final, curve, final, oracle, trained = jax.jit(jax.vmap(member))(fit.state.params, xs)
    sd = float(rc.stds[held])
    ideal = (0.5 * np.log(2 * np.pi * np.e * sd ** 2) - 0.5 * np.log(2 * np.pi)
             if rc.loss == "nll" else sd ** 2)  # our NLL drops the 0.5 log(2 pi) constant
    n = len(members) // 2
    out = {"loss": rc.loss, "heldout": {"mean": rc.means[held], "std": rc.stds[held]},
           "ideal_loss": float(ideal), "train_contexts": list(rc.train_contexts)}
    for j, arm in enumerate(arms):
        sl = slice(j * n, (j + 1) * n)
        c = np.asarray(curve[sl])
        out[arm] = {
            "loss_initial": summarise(c[:, 0]) if steps else summarise(np.asarray(final[sl])),
            "loss_final": summarise(np.asarray(final[sl])),
            "loss_curve_mean": c.mean(0).tolist(),
            "z_final_mean": np.asarray(z_final[sl]).mean(0).tolist(),
            "loss_true_code": summarise(np.asarray(oracle[sl])),
            "loss_best_trained_code": summarise(np.asarray(trained[sl]).min(-1)),
        }
    return out


def per_seed_view(results: dict, seeds) -> list[dict]:
    """One flat dict per seed (``launch`` splits vmapped runs with it)."""
    rows = []
    for i, s in enumerate(seeds):
        row = {"seed": s}

        def walk(d, prefix):
            for key, v in d.items():
                if isinstance(v, dict) and "per_seed" in v:
                    ps = v["per_seed"]
                    if len(ps) == len(seeds):
                        row[f"{prefix}{key}"] = ps[i]
                elif isinstance(v, dict):
                    walk(v, f"{prefix}{key}.")

        walk({k: v for k, v in results.items() if k != "per_seed"}, "")
        rows.append(row)
    return rows


def format_table(results: dict) -> str:
    arms = results["arms"]

    def cell(d):
        return f"{d['mean']:.3f} ± {d['std']:.3f}"

    lines = ["", "GBI toy experiment (mean ± std over seeds)", ""]
    header = "| metric | " + " | ".join(arms) + " | reference |"
    lines += [header, "|" + "---|" * (len(arms) + 2)]

    def row(name, section, key, ref=""):
        vals = [cell(results[section][a][key]) if a in results[section] else "-" for a in arms]
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {ref} |")

    row("train loss (mean over run)", "learning", "mean_train_loss")
    paper = results["forgetting"]["paper"]
    row("forgetting: MSE 2nd-to-last ctx", "forgetting", "mse_second_to_last",
        f"paper GBI {paper['gbi']} / LSTM {paper['baseline']}; noise "
        f"{results['forgetting']['noise_floor']:.3f}")
    row("MSE last ctx", "forgetting", "mse_last")
    row("one-step corr w/ window log-lik", "one_step", "corr_window_loglik")
    row("one-step context accuracy", "one_step", "accuracy",
        f"ideal (same window) {results['one_step']['ideal_window_accuracy']:.3f}; "
        f"HMM {results['one_step']['hmm_filter_accuracy']:.3f}")
    row("online latent corr w/ HMM posterior", "online", "corr_hmm_posterior")
    row("online context accuracy", "online", "accuracy",
        f"HMM {results['online']['hmm_filter_accuracy']:.3f}")
    row("online prediction MSE", "online", "prediction_mse",
        f"HMM {results['online']['hmm_prediction_mse']:.3f}")
    row("online grad corr w/ log p(x_t|c)", "online", "corr_grad_loglik")
    row("shared-unit ratio", "modularity", "shared_unit_ratio")
    if "recomposition" in results:
        r = results["recomposition"]
        lines += ["", f"Recomposition (held-out mean {r['heldout']['mean']}, std "
                      f"{r['heldout']['std']}; loss = {r['loss']}; ideal {r['ideal_loss']:.3f})",
                  "", "| arm | loss at start | after optimisation | true code "
                      "| best trained code |", "|---|---|---|---|---|"]
        for a in ("gbi", "baseline"):
            d = r[a]
            lines.append(f"| {a} | {cell(d['loss_initial'])} | {cell(d['loss_final'])} | "
                         f"{cell(d['loss_true_code'])} | {cell(d['loss_best_trained_code'])} |")
    lines.append(f"\nwall time {results['wall_time_s']:.1f} s")
    return "\n".join(lines)
