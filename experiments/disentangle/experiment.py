"""Disentangling through multi-task learning: train, evaluate, tabulate, plot.

``run(config, workdir)``:

1. expands ``config.grid`` x ``config.seeds`` into networks and groups them by their
   static setting (model, D, T, free-RT, boundary);
2. trains each group as one vmapped program with ``gbi_jax.training.fit`` (data made
   on device inside the compiled loop; readout padded to the group's max N and
   masked; checkpoints in ``checkpoints/<group>``, resumed on rerun);
3. evaluates every network (:func:`evaluation.evaluate_group`: OOD / ID r^2 over
   held-out quadrants, decoder angles, decision accuracy) and caches it in
   ``eval_<group>.json``;
4. writes ``results.json`` (one row per network), ``table.csv`` / ``table.md`` (per
   condition: median and IQR of OOD r^2, ID r^2, angles; accuracy vs Bayes-optimal;
   the Eq. 7 ceiling) and the figure of ``config.figure`` in ``figures/``;
5. ``fig4`` additionally runs the attractor analysis of the first N = 24 RNN.
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from experiments.common import run_experiment
from experiments.disentangle import config as config_lib
from experiments.disentangle import evaluation
from experiments.disentangle.config import FIGURES
from experiments.disentangle.grid import (DYNAMIC, STATIC, Member, Program,  # noqa: F401
                                          group_name, groups_of, members_of, programs_of)
from experiments.disentangle.networks import Network
from gbi_jax import losses, training
from gbi_jax.analysis import dynamics, theory
from gbi_jax.tasks import EvidenceTask, stack_instances
from gbi_jax.validation import renamed
from gbi_jax.workdir import Workdir


# ---------------------------------------------------------------------------
# Config checks.
# ---------------------------------------------------------------------------
# Fields of the library classes -> the config fields that set them (for error messages).
_CLASS_FIELDS = {
    "EvidenceTask.dim": "grid.dims", "EvidenceTask.stim_steps": "grid.stim_steps",
    "EvidenceTask.max_tasks": "grid.n_tasks", "EvidenceTask.free_rt": "grid.free_rt",
    "EvidenceTask.boundary": "grid.boundaries", "EvidenceTask.encoders": "grid.encoders",
    "EvidenceTask.encoder_hidden": "task.encoder_hidden",
    "EvidenceTask.encoder_out": "task.encoder_out", "EvidenceTask.bound": "task.bound",
    "TaskInstance.num_tasks": "grid.n_tasks", "TaskInstance.sigma": "grid.sigmas",
    "TaskInstance.rho": "grid.rhos", "TaskInstance.encoder": "grid.encoders",
    "Network.core": "grid.cores", "Network.rnn_input_init": "model.rnn_input_init",
    "FastRNN.hidden": "model.hidden", "FastRNN.alpha": "model.alpha",
    "CausalTransformer.width": "model.hidden", "CausalTransformer.heads": "model.transformer_heads",
    "CausalTransformer.layers": "model.transformer_layers",
    "CausalTransformer.mlp": "model.transformer_mlp",
    "CausalTransformer.dropout": "model.transformer_dropout",
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the first bad field and what to use instead.

    Checks the experiment's own rules here; the task's fields are checked by
    ``EvidenceTask`` and ``EvidenceTask.check_instance`` for every grid combination,
    with the error renamed to the config field that set the value. A packed run
    (``config.parts``) checks every part's grid.
    """

    def need(cond, field, msg):
        if not cond:
            raise ValueError(f"config.{field}: {msg}")

    parts = tuple(config.parts)
    if parts:
        known = tuple(config_lib.PANEL_RUNS)
        for part in parts:
            need(part in known, "parts", f"unknown part {part!r}; choose from {known}")
        need(len(set(parts)) == len(parts), "parts", f"must not repeat a part, got {parts!r}")
        base = config_lib.get_config("fig1")
        need(config.grid.to_dict() == base.grid.to_dict(), "grid",
             "is not used by a packed run (config.parts is set): leave it at its default "
             "and choose the networks with config.parts")
        need(tuple(config.seeds) == tuple(base.seeds), "seeds",
             "is not used by a packed run (config.parts is set): the seeds of each part are "
             "its run's")
        if config.pack:
            from experiments.disentangle.grid import program_names

            names = program_names(config)
            need(config.pack in names, "pack",
                 f"{config.pack!r} is not a program of these parts; choose from {names}")
        for part in parts:
            validate(config_lib.part_config(config, part))
        return
    need(not config.pack, "pack", "needs config.parts (the runs whose program it names)")

    g = config.grid
    need(config.figure in FIGURES, "figure", f"must be one of {FIGURES}, got {config.figure!r}")
    seeds = tuple(config.seeds)
    need(len(seeds) >= 1 and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds),
         "seeds", f"must be a non-empty tuple of integers, e.g. (0, 1), got {seeds!r}")
    need(len(set(seeds)) == len(seeds), "seeds",
         f"must not repeat a seed (it would train the same network twice), got {seeds!r}")
    for axis in ("cores", "n_tasks", "sigmas", "rhos", "encoders", "dims", "stim_steps",
                 "free_rt", "boundaries"):
        need(len(g[axis]) >= 1, f"grid.{axis}", "needs at least one value")
    # The protocol's own rules (the task class itself allows sigma = 0 and D = 1).
    need(all(s > 0 for s in g.sigmas), "grid.sigmas",
         f"values must be > 0 (the task needs noise), got {tuple(g.sigmas)}")
    need(all(int(d) == d and d >= 2 for d in g.dims), "grid.dims",
         f"values must be integers >= 2 (decoder angles need two latents), got {tuple(g.dims)}")
    tr = config.train
    need(tr.steps >= 1 and tr.transformer_steps >= 1, "train.steps", "must be >= 1")
    need(tr.batch_size >= 1, "train.batch_size", f"must be >= 1, got {tr.batch_size}")
    need(tr.lr > 0, "train.lr", f"must be > 0, got {tr.lr}")
    need(tr.chunk_size >= 1, "train.chunk_size", "must be >= 1")
    need(tr.log_every >= 1, "train.log_every", "must be >= 1")
    for bound in ("max_loss", "max_grad_norm"):
        value = config.train[bound]
        need(value is None or 0 < value < float("inf"), f"train.{bound}",
             f"must be a positive finite number (or unset), got {value!r}")
    need(tr.checkpoint_every >= 1, "train.checkpoint_every", "must be >= 1")
    try:
        training.member_blocks(1, config.runtime.member_block)
    except ValueError as err:
        need(False, "runtime.member_block", str(err))
    e = config.eval
    need(e.decoder in ("adam", "ridge"), "eval.decoder",
         f"must be 'adam' or 'ridge', got {e.decoder!r}")
    need(len(e.decoder_steps) == 3 and all(s >= 1 for s in e.decoder_steps),
         "eval.decoder_steps", "needs 3 positive step counts (N <= 3, N <= 6, N > 6)")
    need(e.fits >= 1, "eval.fits", "must be >= 1")
    need(e.pool_trials >= e.decoder_batch >= 1, "eval.pool_trials",
         "must be >= eval.decoder_batch >= 1")
    need(e.test_trials >= 1 and e.accuracy_trials >= 1, "eval.test_trials", "must be >= 1")
    need(e.max_folds >= 1, "eval.max_folds", "must be >= 1")
    need(e.decoder_lr > 0 and e.ridge >= 0, "eval.decoder_lr", "must be > 0 (ridge >= 0)")
    if config.figure == "fig4":
        need("rnn" in g.cores or "noleak" in g.cores, "grid.cores",
             "fig4 (attractor) needs an RNN core")
    # The networks, the task and every network's task instance check their own fields.
    with renamed(_CLASS_FIELDS, prefix="config."):
        for core in g.cores:
            network_from(config, core, input_size=1, out_features=max(g.n_tasks))
        encoders = tuple(sorted(set(g.encoders)))
        for dim, t, free, bnd in itertools.product(g.dims, g.stim_steps, g.free_rt,
                                                   g.boundaries):
            task = task_from(config, dim=dim, stim_steps=t, free_rt=free, boundary=bnd,
                             max_tasks=max(g.n_tasks), encoders=encoders)
            for n, sigma, rho, enc in itertools.product(g.n_tasks, g.sigmas, g.rhos,
                                                        g.encoders):
                task.check_instance(n, sigma=sigma, rho=rho, encoder=enc)


# ---------------------------------------------------------------------------
# Networks and programs (experiments/disentangle/grid.py).
# ---------------------------------------------------------------------------
def task_from(config, *, dim, stim_steps, free_rt, boundary, max_tasks, encoders):
    """The static task of a group (``config.task`` holds the encoder and the bound)."""
    return EvidenceTask(dim=dim, stim_steps=stim_steps, max_tasks=max_tasks,
                        encoder_hidden=tuple(config.task.encoder_hidden),
                        encoder_out=config.task.encoder_out, free_rt=free_rt,
                        boundary=boundary, bound=config.task.bound, encoders=encoders)


def network_from(config, core: str, *, input_size: int, out_features: int) -> Network:
    """The network of architecture ``core`` that ``config.model`` describes."""
    mc = config.model
    return Network(core=core, input_size=input_size, out_features=out_features,
                   hidden=mc.hidden, alpha=mc.alpha, rnn_input_init=mc.rnn_input_init,
                   custom_grad=mc.custom_grad,
                   transformer=(("layers", mc.transformer_layers), ("heads", mc.transformer_heads),
                                ("mlp", mc.transformer_mlp), ("dropout", mc.transformer_dropout)))


def build(config, program: Program):
    """Task, network and stacked task instances of one program."""
    members = program.members
    m0 = members[0]
    task = task_from(config, dim=m0.dim, stim_steps=m0.stim_steps, free_rt=m0.free_rt,
                     boundary=m0.boundary, max_tasks=program.readout,
                     encoders=program.encoders)
    net = network_from(config, m0.core, input_size=task.input_size,
                       out_features=task.max_tasks)
    # The encoder (and D > 2 normals) of a network depend only on its seed and
    # condition, not on the model: paired comparisons across architectures.
    insts = [task.instance((m.seed, 1000 + m.n_tasks),
                           m.n_tasks, sigma=m.sigma, rho=m.rho, encoder=m.encoder)
             for m in members]
    return task, net, stack_instances(insts)


def make_loss_fn(task: EvidenceTask, net: Network, batch_size: int):
    """``loss_fn(params, inst, key, step)`` for ``training.fit``; the batch is made here."""

    def loss_fn(params, inst, key, step):
        del step
        k_data, k_drop = jax.random.split(key)
        b = task.sample(inst, k_data, batch_size)
        out, _ = net.apply(params, b.inputs, key=k_drop, train=True)
        n_real = jnp.sum(inst.mask)
        denom = out.shape[0] * out.shape[1] * n_real
        if task.free_rt:
            pred = task.bound * jnp.tanh(out)
            loss = jnp.sum(jnp.square(pred - b.targets) * inst.mask) / denom
        else:
            bce = losses.sigmoid_bce(out, b.targets)
            loss = jnp.sum(bce * inst.mask) / denom
        correct = ((out[:, -1] > 0) == (b.labels > 0.5)) * inst.mask
        return loss, {"accuracy": jnp.sum(correct) / (out.shape[0] * n_real)}

    return loss_fn


def fit_args(config, program: Program) -> tuple[dict, tuple]:
    """``(kwargs, (task, net, insts))``: the arguments ``training.fit`` trains ``program``
    with (all but the workdir and the logging cadence), and the program's task, network
    and stacked instances. ``training.chunk_program`` builds the same program from the
    same arguments (``benchmarks/sweep_projection.py`` times the packed sweep so)."""
    members = program.members
    task, net, insts = build(config, program)
    steps = config.train.transformer_steps if members[0].core == "transformer" else \
        config.train.steps
    return dict(init_fn=lambda key, inst: net.init(key),
                loss_fn=make_loss_fn(task, net, config.train.batch_size),
                tx=optax.adam(config.train.lr), num_steps=int(steps),
                seeds=[m.seed * 1000 + m.n_tasks for m in members], member_data=insts,
                chunk_size=config.train.chunk_size,
                member_block=training.resolve_member_block(config.runtime.member_block),
                name=program.name, max_loss=config.train.max_loss,
                max_grad_norm=config.train.max_grad_norm), (task, net, insts)


def train_group(config, program: Program, wd):
    args, (task, net, insts) = fit_args(config, program)
    fit = training.fit(**args, workdir=wd, log_every=config.train.log_every,
                       checkpoint_every=config.train.checkpoint_every)
    return task, net, insts, fit


# ---------------------------------------------------------------------------
# Theory references.
# ---------------------------------------------------------------------------
def ceiling(member: Member) -> float:
    """Eq. 7 for this network (free-RT networks see ``T + 1`` samples)."""
    t = member.stim_steps + (1 if member.free_rt else 0)
    return float(theory.r2_ceiling(member.sigma, t))


_BAYES_CACHE: dict = {}


def bayes_accuracy(task: EvidenceTask, inst_weights: np.ndarray, member: Member) -> float:
    """Bayes-optimal decision accuracy of a fixed-RT linear-boundary network (else NaN)."""
    if member.free_rt or member.boundary != "linear":
        return float("nan")
    key = (member.dim, member.n_tasks, member.sigma, member.stim_steps,
           inst_weights.tobytes() if member.dim > 2 else b"")
    if key not in _BAYES_CACHE:
        normals = inst_weights[:member.n_tasks]
        if member.dim == 2:
            val = theory.bayes_accuracy_2d(member.sigma, member.stim_steps, normals=normals)
        else:
            val = theory.bayes_accuracy_mc(jax.random.PRNGKey(0), member.sigma,
                                           member.stim_steps, normals=normals,
                                           num_trials=50_000, num_posterior=128)
        _BAYES_CACHE[key] = float(val)
    return _BAYES_CACHE[key]


# ---------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------
def _q(values, q):
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(np.percentile(v, q)) if v.size else float("nan")


def summarise(rows: list[dict]) -> list[dict]:
    """One row per condition (all fields but ``seed``): medians and IQRs over networks,
    folds and fits (the paper's 5 nets x 4 quadrants x 5 fits = 100 values)."""
    keyf = lambda r: tuple(r[k] for k in STATIC + DYNAMIC)
    out = []
    for key, group in itertools.groupby(sorted(rows, key=keyf), key=keyf):
        group = list(group)
        ood = [v for r in group for v in np.ravel(r["ood_r2"])]
        idr = [v for r in group for v in np.ravel(r["id_r2"])]
        ang = [v for r in group for v in np.ravel(r["angles"])]
        acc = [r["accuracy"] for r in group]
        row = dict(zip(STATIC + DYNAMIC, key))
        row.update(
            networks=len(group),
            ood_r2_median=_q(ood, 50), ood_r2_q25=_q(ood, 25), ood_r2_q75=_q(ood, 75),
            id_r2_median=_q(idr, 50), id_r2_q25=_q(idr, 25), id_r2_q75=_q(idr, 75),
            angle_median=_q(ang, 50), angle_q25=_q(ang, 25), angle_q75=_q(ang, 75),
            accuracy_mean=float(np.mean(acc)), bayes_accuracy=group[0]["bayes_accuracy"],
            r2_ceiling=group[0]["r2_ceiling"],
            final_loss_mean=float(np.mean([r["final_loss"] for r in group])))
        out.append(row)
    return out


def write_tables(wd: Workdir, table: list[dict]) -> str:
    """Write ``table.csv`` and ``table.md`` (atomically); return the Markdown table."""
    if not table:
        return ""
    fields = list(table[0])
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(table)
    wd.write_text("table.csv", buf.getvalue())
    show = [k for k in fields if k not in ("ood_r2_q25", "ood_r2_q75", "id_r2_q25", "id_r2_q75",
                                           "angle_q25", "angle_q75")]
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(show) + " |", "|" + "---|" * len(show)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in show) + " |" for r in table]
    text = "\n".join(lines) + "\n"
    wd.write_text("table.md", text)
    return text


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str, *,
        override_ok: Sequence[str] = ()) -> dict[str, Any]:
    """Train every group, evaluate, write results/tables/figure and the completion marker;
    return the results.

    ``override_ok``: fields that may differ from the workdir's config
    (:func:`experiments.common.run_experiment`)."""
    return run_experiment(config, workdir, config_lib, _run_claimed, validate=validate,
                          override_ok=override_ok)


def _run_claimed(config: ml_collections.ConfigDict, wd: Workdir) -> dict[str, Any]:
    t_start = time.time()
    programs = programs_of(config)
    packed = bool(config.parts)
    logging.info("%d networks (%d rows) in %d program(s): %s",
                 sum(len(p.members) for p in programs.values()),
                 sum(len(p.entries) for p in programs.values()), len(programs),
                 {k: len(p.members) for k, p in programs.items()})
    rows, timing, attractor = [], {}, None
    for name, program in programs.items():
        group = program.members
        t0 = time.time()
        task, net, insts, fit = train_group(config, program, wd)
        params = fit.state.params  # single-device arrays (training.fit gathers them)
        t_train = time.time() - t0
        position = {m: i for i, m in enumerate(group)}
        at = np.asarray([position[e.member] for e in program.entries])
        cached = wd.read_results(name=f"eval_{name}.json")
        if cached is not None:
            ev = {k: np.asarray(v) for k, v in cached.items()}
        else:
            apply_fn = lambda p, x: net.apply(p, x)
            take = ((lambda tree: tree) if np.array_equal(at, np.arange(len(group))) else
                    (lambda tree: jax.tree_util.tree_map(lambda a: np.asarray(a)[at], tree)))
            ev = evaluation.evaluate_group(
                task, apply_fn, take(params), take(insts),
                np.asarray([e.member.n_tasks for e in program.entries]), config.eval,
                free_rt=group[0].free_rt,
                key_index=[(e.index, e.of) for e in program.entries])
            wd.write_results({k: np.asarray(v).tolist() for k, v in ev.items()},
                             name=f"eval_{name}.json")
        t_eval = time.time() - t0 - t_train
        timing[name] = {"train_s": t_train, "eval_s": t_eval, "networks": len(group),
                        "steps": int(fit.state.step[0]), "resumed_from": fit.resumed_from}
        loss = np.asarray(fit.history["loss"])  # [rows, M]
        tail = max(1, len(loss) // 10)
        weights = np.asarray(insts.weights)
        for r, e in enumerate(program.entries):
            m, i = e.member, at[r]
            bayes = bayes_accuracy(task, weights[i], m) if config.eval.bayes else float("nan")
            row = {**m.row(), "group": name}
            if packed:
                row["part"] = e.part
            rows.append({**row, "ood_r2": ev["ood_r2"][r].tolist(),
                         "id_r2": ev["id_r2"][r].tolist(), "angles": ev["angles"][r].tolist(),
                         "accuracy": float(ev["accuracy"][r]), "bayes_accuracy": bayes,
                         "r2_ceiling": ceiling(m), "final_loss": float(loss[-tail:, i].mean())})
        if config.figure == "fig4" and not packed and attractor is None and net.is_rnn:
            attractor = attractor_analysis(config, task, net, insts, params, list(group))
        logging.info("[%s] train %.0fs, eval %.0fs", name, t_train, t_eval)

    # A packed run's table: each network once (a network two parts share has two rows).
    unique = {tuple(r[k] for k in STATIC + DYNAMIC + ("seed",)): r for r in reversed(rows)}
    table = summarise(list(unique.values()) if packed else rows)
    results = {"experiment": "disentangle", "figure": "panels" if packed else config.figure,
               "rows": rows,
               "table": table, "timing": timing, "wall_time_s": time.time() - t_start,
               "devices": jax.device_count()}
    if attractor is not None:
        results["attractor"] = attractor
    from experiments.disentangle import figures

    report = write_tables(wd, table)
    wd.finish(results, f"# {results['figure']}\n\n{report}",
              figures.draw if config.figures and not packed else None)
    logging.info("results in %s (wall %.0fs)", wd.path, results["wall_time_s"])
    return results


# ---------------------------------------------------------------------------
# Fig. 4: attractor of one N = 24 RNN.
# ---------------------------------------------------------------------------
def attractor_analysis(config, task, net, insts, params, group) -> dict:
    """PCA of noise-free trajectories, fixed points and Jacobian spectra (Vafidis et al.
    2025, Fig. 3)."""
    ac = config.attractor
    i = int(np.argmax([m.n_tasks for m in group]))
    prm = jax.tree_util.tree_map(lambda a: np.asarray(a)[i], params)
    inst = jax.tree_util.tree_map(lambda a: np.asarray(a)[i], insts)
    key = jax.random.PRNGKey(config.eval.seed)

    @jax.jit
    def noise_free(prm, inst, key):
        b = task.sample(inst, key, ac.trials, sigma=0.0)
        u0 = task.encode(inst, jnp.zeros(task.dim))
        if not task.free_rt:  # the stimulus-free input [fix = 1, f(0)]
            u0 = jnp.concatenate([jnp.ones(1), u0])
        return b, net.apply(prm, b.inputs)[1], u0

    b, hidden, u0 = noise_free(prm, inst, key)
    hidden = np.asarray(hidden)  # [trials, S, H]
    flat = hidden.reshape(-1, hidden.shape[-1])
    comps, ratio = dynamics.pca(flat, min(ac.components, flat.shape[-1]))
    comps, ratio = np.asarray(comps), np.asarray(ratio)
    mean = flat.mean(0)
    proj = (hidden - mean) @ comps[:3].T  # [trials, S, 3]
    # Fixed points of the map at the stimulus-free input u0 (params traced: one program
    # for every network of this shape).
    rng = np.random.default_rng(config.eval.seed)
    starts = flat[rng.integers(0, len(flat), ac.inits)] + rng.uniform(0, ac.init_noise,
                                                                       (ac.inits, flat.shape[-1]))
    fp = dynamics.find_fixed_points(net.rnn_step, prm, jnp.asarray(starts, jnp.float32),
                                    input=u0, lr=ac.lr, steps=ac.iterations, tol=ac.speed_tol)
    pts, q, ok = np.asarray(fp.points), np.asarray(fp.q), np.asarray(fp.converged)
    unique, _ = dynamics.unique_points(pts[ok], ac.dedup_eps, q=q[ok])
    unique = np.asarray(unique)
    eig = (dynamics.jacobian_eigenvalues(net.rnn_step, prm, unique, u0) if len(unique)
           else np.zeros((0, flat.shape[-1]), complex))
    sig = dynamics.continuous_attractor_signature(eig, k=task.dim) if len(unique) else None
    fp_proj = (unique - mean) @ comps[:3].T if len(unique) else np.zeros((0, 3))
    good = pts[ok]
    return {"n_tasks": group[i].n_tasks, "seed": group[i].seed,
            "explained_variance": ratio.tolist(), "trajectories": proj.tolist(),
            "quadrant": np.asarray(b.orthant).tolist(), "latent": np.asarray(b.latent).tolist(),
            "fixed_points_pc": fp_proj.tolist(), "num_candidates": int(len(pts)),
            "num_slow": int(len(good)), "num_fixed_points": int(len(unique)),
            "speed": q.tolist(),
            "eigenvalues_real": eig.real.tolist(), "eigenvalues_imag": eig.imag.tolist(),
            "attractor_fraction": float(np.mean(sig.is_attractor)) if sig is not None else 0.0,
            "amplification": (np.asarray(dynamics.timescale_amplification(eig[:, :task.dim]))
                              .tolist() if len(unique) else [])}
