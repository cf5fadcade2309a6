"""Evaluation of trained networks: OOD / ID r^2, decoder angles, accuracy, attractor.

Everything here works on a *group* of M networks that share a static task and
model (stacked params and task instances) and is vmapped over them.

The OOD protocol (spec 4.1): hidden state at the decision step (last step) of
trials whose latent is restricted to allowed orthants; a linear decoder
``Linear(H -> D)`` trained with Adam (lr 3e-3, batch 16, N-dependent steps) on the
orthants other than the held-out one, tested on fresh trials of the held-out one,
``r^2 = 1 - MSE / (1/12)`` (full-prior variance); ``fits`` re-initialisations per
fold. ID control: decoder trained on all orthants, tested on each held-out test set.
Angles: between the decoder weight vectors of every pair of latent coordinates.

The decoder fit, r^2 and angles are local until the shared analysis library
(``gbi_jax.analysis.decoding``) provides them; see ``_decoding_backend``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gbi_jax.tasks import EvidenceTask, TaskInstance, orthant_signs

UNIFORM_VAR = 1.0 / 12.0


# ---------------------------------------------------------------------------
# Decoders (local reference implementation).
# ---------------------------------------------------------------------------
def fit_decoder_adam(key, h_pool, x_pool, *, steps, max_steps: int, lr: float, batch: int):
    """Adam fit of ``x ~ h W + b`` on batches drawn from a pool.

    Args:
      key: PRNG key (init and batch draws).
      h_pool: ``[P, H]`` hidden states; x_pool: ``[P, D]`` true latents.
      steps: traced number of updates (steps beyond it are no-ops) so networks with
        different N share one compiled loop of ``max_steps``.
    Returns:
      ``(W [H, D], b [D])``.
    """
    import optax

    p, hdim = h_pool.shape
    dim = x_pool.shape[1]
    k_w, k_b, k_d = jax.random.split(key, 3)
    bound = 1.0 / np.sqrt(hdim)  # torch nn.Linear init
    params = (jax.random.uniform(k_w, (hdim, dim), minval=-bound, maxval=bound),
              jax.random.uniform(k_b, (dim,), minval=-bound, maxval=bound))
    tx = optax.adam(lr)
    opt = tx.init(params)

    def loss(prm, h, x):
        return jnp.mean(jnp.square(h @ prm[0] + prm[1] - x))

    def body(i, carry):
        prm, o = carry
        idx = jax.random.randint(jax.random.fold_in(k_d, i), (batch,), 0, p)
        g = jax.grad(loss)(prm, h_pool[idx], x_pool[idx])
        upd, o2 = tx.update(g, o, prm)
        prm2 = jax.tree_util.tree_map(lambda a, u: a + u, prm, upd)
        keep = i < steps
        return jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), (prm2, o2), (prm, o))

    params, _ = jax.lax.fori_loop(0, max_steps, body, (params, opt))
    return params


def fit_decoder_ridge(h_pool, x_pool, ridge: float):
    """Closed-form ridge regression (bias unpenalised). Returns ``(W, b)``."""
    hm, xm = h_pool.mean(0), x_pool.mean(0)
    hc, xc = h_pool - hm, x_pool - xm
    a = hc.T @ hc + ridge * hc.shape[0] * jnp.eye(hc.shape[1])
    w = jnp.linalg.solve(a, hc.T @ xc)
    return w, xm - hm @ w


def r2_score(pred, x, var: float = UNIFORM_VAR):
    """``1 - mean squared error / var`` (the spec's full-prior normaliser)."""
    return 1.0 - jnp.mean(jnp.square(pred - x)) / var


def pair_angles(w):
    """Angles (degrees) between the columns of ``w [H, D]``, upper-triangle pairs."""
    u = w / jnp.linalg.norm(w, axis=0, keepdims=True)
    cos = jnp.clip(u.T @ u, -1.0, 1.0)
    i, j = np.triu_indices(w.shape[1], 1)
    return jnp.degrees(jnp.arccos(cos[i, j]))


# ---------------------------------------------------------------------------
# Data: decision-step hidden states of orthant-restricted trials.
# ---------------------------------------------------------------------------
def fold_orthants(dim: int, max_folds: int, seed: int) -> np.ndarray:
    """Indices (into ``orthant_signs(dim)``) of the held-out orthants, one per fold."""
    n = 2 ** dim
    if n <= max_folds:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_folds, replace=False))


def decision_states(task: EvidenceTask, apply_fn: Callable, params, inst: TaskInstance, key,
                    trials: int, orthants, stim_steps: int, chunk: int = 512):
    """``(h [trials, H], x [trials, D], out [trials, N])`` at the last step, one network."""
    n_chunks = -(-trials // chunk)
    size = min(chunk, trials)

    def one(k):
        b = task.sample(inst, k, size, orthants=orthants, stim_steps=stim_steps)
        out, hidden = apply_fn(params, b.inputs)
        return hidden[:, -1], b.latent, out[:, -1], b.labels

    h, x, out, y = jax.lax.map(one, jax.random.split(key, n_chunks))
    flat = lambda a: a.reshape((-1,) + a.shape[2:])[:trials]
    return flat(h), flat(x), flat(out), flat(y)


def decoder_steps_for(n_tasks, table) -> np.ndarray:
    n = np.asarray(n_tasks)
    return np.where(n <= 3, table[0], np.where(n <= 6, table[1], table[2])).astype(np.int32)


def evaluate_group(task: EvidenceTask, apply_fn: Callable, params, insts: TaskInstance,
                   n_tasks: np.ndarray, ecfg, *, free_rt: bool) -> dict:
    """OOD / ID r^2, angles and decision accuracy for M stacked networks.

    Data per network: F + 1 decoder pools of ``pool_trials`` (one per held-out orthant,
    drawn from the other orthants, plus one ID pool from all orthants) and F + 1 test
    sets of ``test_trials`` (one per held-out orthant, plus one from all orthants for
    the decision accuracy). All ``(F + 1) x fits`` decoders train in one loop.

    Returns numpy arrays: ``ood_r2 [M, F, fits]``, ``id_r2 [M, F, fits]``,
    ``angles [M, F, fits, pairs]``, ``accuracy [M]`` (decision outputs vs labels,
    real outputs only), ``folds`` (held-out orthant indices).
    """
    dim = task.dim
    stim = task.stim_steps + 1 if free_rt else task.stim_steps
    folds = fold_orthants(dim, ecfg.max_folds, ecfg.seed)
    nf = len(folds)
    n_orth = 2 ** dim
    train_sets = np.ones((nf + 1, n_orth), bool)
    train_sets[np.arange(nf), folds] = False
    test_sets = np.zeros((nf + 1, n_orth), bool)
    test_sets[np.arange(nf), folds] = True
    test_sets[nf] = True
    key = jax.random.PRNGKey(ecfg.seed)
    steps = jnp.asarray(decoder_steps_for(n_tasks, ecfg.decoder_steps))
    max_steps = int(max(ecfg.decoder_steps))
    fits = int(ecfg.fits)
    test_trials = max(int(ecfg.test_trials), int(ecfg.accuracy_trials))

    def per_network(args):
        prm, inst, k, n_steps = args
        k_pool, k_test, k_fit = jax.random.split(k, 3)
        states = lambda kk, n, o: decision_states(task, apply_fn, prm, inst, kk, n, o, stim)
        h_pool, x_pool, _, _ = jax.vmap(lambda kk, o: states(kk, ecfg.pool_trials, o))(
            jax.random.split(k_pool, nf + 1), jnp.asarray(train_sets))
        h_test, x_test, out, labels = jax.vmap(lambda kk, o: states(kk, test_trials, o))(
            jax.random.split(k_test, nf + 1), jnp.asarray(test_sets))
        correct = (out[nf] > 0) == (labels[nf] > 0.5)
        accuracy = jnp.sum(correct * inst.mask) / (out.shape[1] * jnp.sum(inst.mask))
        h_test, x_test = h_test[:nf, :ecfg.test_trials], x_test[:nf, :ecfg.test_trials]

        def fit(kk, h, x):
            if ecfg.decoder == "ridge":
                return fit_decoder_ridge(h, x, ecfg.ridge)
            return fit_decoder_adam(kk, h, x, steps=n_steps, max_steps=max_steps,
                                    lr=ecfg.decoder_lr, batch=ecfg.decoder_batch)

        fit_keys = jax.random.split(k_fit, (nf + 1) * fits).reshape(nf + 1, fits, -1)
        w, b = jax.vmap(lambda kf, h, x: jax.vmap(lambda kk: fit(kk, h, x))(kf))(
            fit_keys, h_pool, x_pool)  # [F + 1, fits, H, D], [F + 1, fits, D]
        score = lambda ww, bb, h, x: r2_score(h @ ww + bb, x)
        per_fit = jax.vmap(score, in_axes=(0, 0, None, None))
        ood = jax.vmap(per_fit)(w[:nf], b[:nf], h_test, x_test)  # [F, fits]
        idr = jax.vmap(per_fit, in_axes=(None, None, 0, 0))(w[nf], b[nf], h_test, x_test)
        angles = jax.vmap(jax.vmap(pair_angles))(w[:nf])
        return ood, idr, angles, accuracy

    keys = jax.random.split(key, jax.tree_util.tree_leaves(params)[0].shape[0])
    run = jax.jit(lambda p, i, k, s: jax.lax.map(per_network, (p, i, k, s)))
    ood, idr, angles, acc = jax.device_get(run(params, insts, keys, steps))
    return {"ood_r2": np.asarray(ood), "id_r2": np.asarray(idr), "angles": np.asarray(angles),
            "accuracy": np.asarray(acc), "folds": folds}


# ---------------------------------------------------------------------------
# Attractor analysis (Fig. 4) for one RNN.
# ---------------------------------------------------------------------------
def pca(states: np.ndarray, components: int):
    """``(explained_variance_ratio [k], components [k, H], mean [H])`` by SVD."""
    x = np.asarray(states, np.float64)
    mean = x.mean(0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s ** 2
    return var[:components] / var.sum(), vt[:components], mean


def find_fixed_points(step_fn: Callable, inits: jax.Array, *, iterations: int, lr: float):
    """Minimise ``q(h) = mean((F(h) - h)^2)`` from each initial state with Adam.

    Returns ``(h [K, H], q [K])``.
    """
    import optax

    tx = optax.adam(lr)
    q = lambda h: jnp.mean(jnp.square(step_fn(h) - h))

    def solve(h0):
        def body(_, carry):
            h, o = carry
            g = jax.grad(q)(h)
            u, o = tx.update(g, o, h)
            return h + u, o

        h, _ = jax.lax.fori_loop(0, iterations, body, (h0, tx.init(h0)))
        return h, q(h)

    return jax.jit(jax.vmap(solve))(inits)


def dedup(points: np.ndarray, eps: float) -> np.ndarray:
    """Greedy single-linkage clustering at distance ``eps``; returns one point per cluster
    (DBSCAN with ``min_samples=1`` gives the same clusters)."""
    pts = np.asarray(points)
    labels = -np.ones(len(pts), int)
    c = 0
    for i in range(len(pts)):
        if labels[i] >= 0:
            continue
        frontier = [i]
        labels[i] = c
        while frontier:
            j = frontier.pop()
            near = np.flatnonzero((labels < 0) & (np.linalg.norm(pts - pts[j], axis=1) < eps))
            labels[near] = c
            frontier.extend(near.tolist())
        c += 1
    return np.stack([pts[labels == k].mean(0) for k in range(c)]) if c else pts[:0]


def jacobian_eigenvalues(step_fn: Callable, points: np.ndarray) -> np.ndarray:
    """Eigenvalues of the Jacobian of ``F(h) - h`` at each point, sorted by real part
    (descending): ``[K, H]`` complex."""
    jac = jax.jit(jax.vmap(jax.jacfwd(lambda h: step_fn(h) - h)))(jnp.asarray(points))
    ev = np.linalg.eigvals(np.asarray(jac, np.float64))
    order = np.argsort(-ev.real, axis=1)
    return np.take_along_axis(ev, order, axis=1)
