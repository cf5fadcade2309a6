"""Evaluation of trained networks: OOD / ID r^2, decoder angles, accuracy, attractor.

Everything here works on a *group* of M networks that share a static task and
model (stacked params and task instances), vmapped over them on GPU/TPU.

The OOD protocol (Vafidis et al. 2025, Fig. 1): hidden state at the decision step
(last step) of trials whose latent is restricted to allowed orthants; a linear decoder
``Linear(H -> D)`` trained with Adam (lr 3e-3, batch 16, N-dependent steps) on the
orthants other than the held-out one, tested on fresh trials of the held-out one,
``r^2 = 1 - MSE / (1/12)`` (full-prior variance ``theory.UNIFORM_VAR``); ``fits``
re-initialisations per fold. ID control: decoder trained on all orthants, tested on
each held-out test set. Angles: between the decoder weight vectors of every pair of
latent coordinates.

Decoder fits, r^2, angles and the step schedule come from
``gbi_jax.analysis.decoding``; orthant numbering from ``gbi_jax.tasks``.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gbi_jax import training
from gbi_jax.analysis import decoding
from gbi_jax.tasks import EvidenceTask, TaskInstance


# ---------------------------------------------------------------------------
# Data: decision-step hidden states of orthant-restricted trials.
# ---------------------------------------------------------------------------
def fold_orthants(dim: int, max_folds: int, seed: int) -> np.ndarray:
    """Indices (into ``gbi_jax.tasks.orthant_signs(dim)``) of the held-out orthants, one per
    fold."""
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


def on_local_devices(tree):
    """``tree`` (leading axis: networks) split over this process's devices, the last
    network repeated to fill the last device; unchanged on one device. The vmapped
    evaluation then runs each device's networks on that device."""
    devices = jax.local_devices()
    if len(devices) == 1:
        return tree
    mesh = jax.sharding.Mesh(np.array(devices), ("networks",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("networks"))

    return jax.device_put(training.pad_members(tree, len(devices)), sharding)


def evaluate_group(task: EvidenceTask, apply_fn: Callable, params, insts: TaskInstance,
                   n_tasks: np.ndarray, ecfg, *, free_rt: bool,
                   vmap: bool | None = None, key_index=None) -> dict:
    """OOD / ID r^2, angles and decision accuracy for M stacked networks.

    Data per network: one decoder training pool of ``pool_trials`` full-prior trials
    (its decision outputs also give the decision accuracy) and, per fold, ``test_trials``
    fresh trials of the held-out orthant. The decoders are
    ``gbi_jax.analysis.decoding.cross_validate`` in its *separate* layout: OOD fold k
    trains on the pool rows outside orthant k, ID trains on the whole pool, and both
    are scored on the fold's test trials (r^2 with the full-prior variance 1/12).
    Adam steps follow the N-dependent schedule ``ecfg.decoder_steps``
    (``decoding.decoder_steps``) through ``active_steps`` so every N shares one compiled
    loop.

    ``vmap`` (default: on GPU/TPU, not on CPU): the M networks are one ``vmap``, split
    over the local devices (:func:`on_local_devices`; each device evaluates its own
    networks, nothing is gathered onto one device). Otherwise one network after another
    (``lax.map``) on one device: on a 2-core CPU host this compiled about 1.3x and ran
    about 1.2-1.8x faster than the vmap over 2 host devices (25 Fig. 1 networks, reduced
    decoder budget, a loaded machine). Both give the same numbers up to float rounding.

    Network ``i`` draws its data and decoder inits from ``split(PRNGKey(ecfg.seed), M)[i]``;
    ``key_index`` (one ``(index, of)`` pair per network) gives it
    ``split(PRNGKey(ecfg.seed), of)[index]`` instead: its key in another group of ``of``
    networks (a packed run evaluates each network as its own run does).

    Returns numpy arrays: ``ood_r2 [M, F, fits]``, ``id_r2 [M, F, fits]``,
    ``angles [M, F, fits, pairs]``, ``accuracy [M]`` (decision outputs vs labels,
    real outputs only), ``folds`` (held-out orthant indices).
    """
    dim = task.dim
    stim = task.stim_steps + 1 if free_rt else task.stim_steps
    folds = fold_orthants(dim, ecfg.max_folds, ecfg.seed)
    nf = len(folds)
    test_sets = np.zeros((nf, 2 ** dim), bool)
    test_sets[np.arange(nf), folds] = True
    key = jax.random.PRNGKey(ecfg.seed)
    steps = jnp.asarray(decoding.decoder_steps(np.asarray(n_tasks), tuple(ecfg.decoder_steps)))
    max_steps = int(max(ecfg.decoder_steps))
    fits = int(ecfg.fits)
    decoder = dict(method=ecfg.decoder, l2=ecfg.ridge, steps=max_steps, lr=ecfg.decoder_lr,
                   batch_size=ecfg.decoder_batch, folds=folds, num_fits=fits)

    def per_network(args):
        prm, inst, k, n_steps = args
        k_pool, k_test, k_ood, k_id = jax.random.split(k, 4)
        h, x, out, labels = decision_states(task, apply_fn, prm, inst, k_pool,
                                            ecfg.pool_trials, None, stim)
        correct = (out > 0) == (labels > 0.5)
        accuracy = jnp.sum(correct * inst.mask) / (out.shape[0] * jnp.sum(inst.mask))
        h_test, x_test, _, _ = jax.vmap(
            lambda kk, o: decision_states(task, apply_fn, prm, inst, kk, ecfg.test_trials, o,
                                          stim))(jax.random.split(k_test, nf),
                                                 jnp.asarray(test_sets))
        h_test = h_test.reshape(-1, h_test.shape[-1])
        x_test = x_test.reshape(-1, dim)
        ood = decoding.cross_validate(h, x, key=k_ood, mode="ood", h_test=h_test,
                                      x_test=x_test, active_steps=n_steps, **decoder)
        idr = decoding.cross_validate(h, x, key=k_id, mode="id", h_test=h_test,
                                      x_test=x_test, active_steps=n_steps, **decoder)
        return ood.r2, idr.r2, decoding.decoder_angles(ood.weights), accuracy

    m = jax.tree_util.tree_leaves(params)[0].shape[0]
    if key_index is None:
        keys = jax.random.split(key, m)
    else:
        if len(key_index) != m:
            raise ValueError(f"key_index has {len(key_index)} entries for {m} networks")
        splits = {of: np.asarray(jax.random.split(key, of)) for of in {of for _, of in key_index}}
        keys = np.stack([splits[of][index] for index, of in key_index])
    args = (params, insts, keys, steps)
    if (jax.default_backend() != "cpu") if vmap is None else vmap:
        run = jax.jit(jax.vmap(lambda p, i, k, s: per_network((p, i, k, s))))
        args = on_local_devices(args)
    else:
        run = jax.jit(lambda *a: jax.lax.map(per_network, a))
    ood, idr, angles, acc = jax.tree_util.tree_map(lambda a: a[:m],
                                                   jax.device_get(run(*args)))
    return {"ood_r2": np.asarray(ood), "id_r2": np.asarray(idr), "angles": np.asarray(angles),
            "accuracy": np.asarray(acc), "folds": folds}
