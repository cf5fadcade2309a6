"""GBI toy experiment: switching-Gaussian stream, LSTM with a task latent.

``run(config, workdir)`` trains three arms on the same streams (all arms and
seeds in one vmapped program) and measures, with weights frozen:

1. learning curves (training loss vs step);
2. forgetting: next-step MSE on the context of the second-to-last training
   block (paper Table 1: GBI-LSTM 0.24 vs LSTM 0.30);
3. one-step inference vs the Bayesian ideal observer (correlation of the
   centred one-step scores with the centred Gaussian log-likelihoods of the
   same window; context-identification accuracy vs the ideal observers');
4. online inference: latent trajectory vs the exact HMM forward-filter
   posterior (correlation, accuracy);
5. recomposition: a compositional (mean x std) code trained on 3 combinations,
   the 4th inferred by iterative optimisation of the latent (loss vs steps), GBI
   vs a baseline whose input of the same size is optimised;
6. modularity: the shared-unit ratio (see :func:`shared_unit_ratio`).

Arms: ``gbi`` (one-hot of the true context), ``baseline`` (the uniform vector,
i.e. no information), ``shuffled`` (a one-hot per block drawn independently of
the context: same size and statistics, no information).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from gbi_jax import inference, training
from gbi_jax.analysis import ideal_observer as io
from gbi_jax.analysis import metrics as M
from gbi_jax.models import RecurrentNetwork
from gbi_jax.tasks import SwitchingGaussianTask, compositional_code
from gbi_jax.workdir import Workdir

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

    need(len(config.seeds) >= 1, "seeds", "needs at least one seed")
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
    need(config.model.hidden >= 1, "model.hidden", f"must be >= 1, got {config.model.hidden}")
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
        need(r.heldout_context not in tuple(r.train_contexts), "recomposition.train_contexts",
             "must not contain the held-out context")
        need(r.blocks >= 3, "recomposition.blocks", "must be >= 3")
        need(r.test_length > config.train.window, "recomposition.test_length",
             "must exceed train.window")
    need(0 < config.modularity.threshold < 1, "modularity.threshold", "must be in (0, 1)")
    # Let the task class check its own fields (it names them).
    task_from(config.task)


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
    stream_keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 7) for s in seeds])
    streams = jax.jit(jax.vmap(lambda k: task.sample(k, length)))(stream_keys)
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
                       log_every=config.train.log_every, name=name)
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
# The run.
# ---------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Train, evaluate, write ``results.json`` and figures; return the results."""
    validate(config)
    wd = Workdir(workdir)
    wd.claim(config, ignore=("figures",))
    t_start = time.time()
    task = task_from(config.task)
    k = task.num_contexts
    arms = tuple(config.arms)
    window = config.train.window
    seeds = [config.seed + int(s) for s in config.seeds]
    n_seeds = len(seeds)
    code = jnp.eye(k)

    fit, streams, members, model = train_arms(
        config, task, code, arms, blocks=config.train.blocks, loss_kind="mse", workdir=wd,
        name="train")
    params = fit.state.params
    m_total = len(members)
    arm_index = {a: i for i, a in enumerate(arms)}

    def by_arm(values):  # [M, ...] -> {arm: [S, ...]}
        v = np.asarray(values)
        return {a: v[arm_index[a] * n_seeds:(arm_index[a] + 1) * n_seeds] for a in arms}

    results: dict[str, Any] = {"arms": list(arms), "seeds": seeds, "num_contexts": k}

    # 1. Learning curves -------------------------------------------------------
    curves = by_arm(np.asarray(fit.history["loss"]).T)  # {arm: [S, rows]}
    results["learning"] = {
        a: {"mean_train_loss": summarise(c.mean(1)),
            "final_train_loss": summarise(c[:, -max(1, c.shape[1] // 10):].mean(1))}
        for a, c in curves.items()}
    results["learning"]["steps"] = np.asarray(fit.steps).tolist()

    # Shared test material (same for all arms of a seed) -----------------------
    test_len = stream_length(task, config.eval.test_blocks)
    test_keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 99) for s in seeds])
    test = jax.jit(jax.vmap(lambda kk: task.sample(kk, test_len)))(test_keys)
    member_seed_idx = jnp.asarray([i for _ in arms for i in range(n_seeds)])

    # 2. Forgetting ------------------------------------------------------------
    last_block = streams.block[:, -1]  # [S]
    ctx_of_block = jax.vmap(lambda c, b, lb: c[jnp.argmax(b == lb)])
    second_to_last = ctx_of_block(streams.context, streams.block, last_block - 1)
    last_ctx = ctx_of_block(streams.context, streams.block, last_block)
    fsteps = config.eval.forgetting_steps

    def block_mse(p, arm_z, x):
        inputs, targets = make_windows(x, window)
        pred = jax.vmap(lambda i, z: model.apply(p, i[:, None], z))(inputs, arm_z[:inputs.shape[0]])
        return jnp.mean(jnp.square(pred[..., 0] - targets))

    def forgetting_for(ctx_per_seed, salt):
        """MSE of every member on a fresh block of its seed's context ``ctx_per_seed``."""
        xs, zs = [], []
        for m, (arm, s) in enumerate(members):
            kx = jax.random.fold_in(jax.random.PRNGKey(s), salt)
            blk = task.sample_block(kx, int(ctx_per_seed[m % n_seeds]), fsteps + window)
            xs.append(blk.x)
            zs.append(arm_latents(arm, blk.context, blk.block, code, jax.random.fold_in(kx, 1)))
        return jax.jit(jax.vmap(block_mse))(params, jnp.stack(zs), jnp.stack(xs))

    mse_stl = forgetting_for(np.asarray(second_to_last), 21)
    mse_last = forgetting_for(np.asarray(last_ctx), 22)
    results["forgetting"] = {
        a: {"mse_second_to_last": summarise(by_arm(mse_stl)[a]),
            "mse_last": summarise(by_arm(mse_last)[a])} for a in arms}
    results["forgetting"]["noise_floor"] = float(np.mean(np.square(task.stds)))
    results["forgetting"]["paper"] = PAPER["forgetting_mse"]

    # 3. One-step inference vs the ideal observer -------------------------------
    inputs_s, targets_s = jax.jit(jax.vmap(lambda x: make_windows(x, window)))(test.x)
    labels_s = test.context[:, window:]  # context of each window's last target
    sds = jnp.asarray(task.stds)
    means = jnp.asarray(task.means)
    scale = 0.5 / float(np.mean(np.square(task.stds)))  # MSE -> Gaussian NLL units
    z0 = inference.max_entropy_latent(k)

    def one_step_member(p, inputs, targets):
        ex_loss = lambda z, ex: window_loss_fn(model, p, ex[0], ex[1], "mse", scale)(z)
        return inference.one_step_batch(ex_loss, z0, (inputs, targets),
                                        temperature=config.eval.temperature)

    os_res = jax.jit(jax.vmap(one_step_member))(
        params, inputs_s[member_seed_idx], targets_s[member_seed_idx])
    trans = io.switching_transition_matrix(k, task.hazard)

    @jax.jit
    @jax.vmap
    def observer(x):  # per seed: windowed log-lik [T, K], per-step log-lik, HMM filter
        ll = io.gaussian_log_likelihoods(x, means, sds)
        return (io.window_log_likelihood(x, means, sds, window), ll,
                io.forward_filter(ll, trans, None))

    win_ll, loglik_t, hmm = observer(test.x)
    win_ll = win_ll[:, window:]  # windows ending at t = H .. T-1: [S, N, K]
    hmm_post = np.asarray(hmm.posterior)  # [S, T, K]
    test_ctx = np.asarray(test.context)
    hmm_acc = float(np.mean(np.argmax(hmm_post[:, window:], -1) == test_ctx[:, window:]))
    window_acc = float(np.mean(np.argmax(np.asarray(win_ll), -1) == np.asarray(labels_s)))
    scores = np.asarray(os_res.scores)  # [M, N, K]
    corr, acc = [], []
    for m in range(m_total):
        i = m % n_seeds
        corr.append(float(M.pearson(M.centered(scores[m]).ravel(),
                                    M.centered(np.asarray(win_ll[i])).ravel())))
        acc.append(float(np.mean(np.argmax(scores[m], -1) == np.asarray(labels_s[i]))))
    results["one_step"] = {a: {"corr_window_loglik": summarise(by_arm(corr)[a]),
                               "accuracy": summarise(by_arm(acc)[a])} for a in arms}
    results["one_step"]["ideal_window_accuracy"] = window_acc
    results["one_step"]["hmm_filter_accuracy"] = hmm_acc

    # 4. Online inference --------------------------------------------------------
    oc = config.online
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

    tr = jax.jit(jax.vmap(online_member))(params, test.x[member_seed_idx])
    probs = np.asarray(jax.nn.softmax(tr.z / oc.temperature))  # [M, T, K]
    grads = np.asarray(tr.grad)
    preds = np.asarray(tr.aux)
    loglik_np = np.asarray(loglik_t)
    on_corr, on_acc, on_mse, g_corr = [], [], [], []
    sl = slice(window, None)
    for m in range(m_total):
        i = m % n_seeds
        on_corr.append(float(M.pearson(M.centered(probs[m, sl]).ravel(),
                                       M.centered(hmm_post[i, sl]).ravel())))
        on_acc.append(float(np.mean(np.argmax(probs[m, sl], -1) == test_ctx[i, sl])))
        on_mse.append(float(np.mean(np.square(preds[m, sl] - np.asarray(test.x[i, sl])))))
        g_corr.append(float(M.pearson(M.centered(-grads[m, sl]).ravel(),
                                      M.centered(loglik_np[i, sl]).ravel())))
    results["online"] = {a: {"corr_hmm_posterior": summarise(by_arm(on_corr)[a]),
                             "accuracy": summarise(by_arm(on_acc)[a]),
                             "prediction_mse": summarise(by_arm(on_mse)[a]),
                             "corr_grad_loglik": summarise(by_arm(g_corr)[a])} for a in arms}
    results["online"]["hmm_filter_accuracy"] = hmm_acc
    # The ideal observer's own next-step prediction: E[x_t | x_<t] under the HMM.
    hmm_pred = np.sum(np.asarray(hmm.predictive) * np.asarray(means), -1)
    results["online"]["hmm_prediction_mse"] = float(
        np.mean(np.square(hmm_pred[:, sl] - np.asarray(test.x)[:, sl])))

    # 6. Modularity ----------------------------------------------------------------
    zs = []
    for m, (arm, s) in enumerate(members):
        i = m % n_seeds
        z = arm_latents(arm, test.context[i], test.block[i], code,
                        jax.random.fold_in(jax.random.PRNGKey(s), 31))
        zs.append(z[window - 1:-1])  # latent of each window's last input step

    def ratio_member(p, inputs, zw, labels):
        _, h = jax.vmap(lambda inp, zz: model.apply(p, inp[:, None], zz, return_hidden=True))(
            inputs, zw)
        return shared_unit_ratio(h[:, -1], labels, k, config.modularity.threshold)

    hid_ratio = jax.jit(jax.vmap(ratio_member))(
        params, inputs_s[member_seed_idx], jnp.stack(zs), labels_s[member_seed_idx])
    results["modularity"] = {a: {"shared_unit_ratio": summarise(by_arm(hid_ratio)[a])}
                             for a in arms}

    # 5. Recomposition ----------------------------------------------------------------
    if config.recomposition.enabled:
        results["recomposition"] = recomposition(config, wd)

    results["wall_time_s"] = time.time() - t_start
    results["per_seed"] = per_seed_view(results, seeds)
    wd.write_results(results)
    if config.figures:
        from experiments.gbi_toy import figures
        figures.make_all(results, fit, test, probs, hmm_post, scores, win_ll, members,
                         window, wd.figures_dir)
    table = format_table(results)
    with open(wd.file("results.md"), "w") as f:
        f.write(table.strip() + "\n")
    print(table)
    return results


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
                  "", "| arm | loss at start | after optimisation | true code | best trained code |",
                  "|---|---|---|---|---|"]
        for a in ("gbi", "baseline"):
            d = r[a]
            lines.append(f"| {a} | {cell(d['loss_initial'])} | {cell(d['loss_final'])} | "
                         f"{cell(d['loss_true_code'])} | {cell(d['loss_best_trained_code'])} |")
    lines.append(f"\nwall time {results['wall_time_s']:.1f} s")
    return "\n".join(lines)
