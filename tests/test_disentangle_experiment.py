"""Disentangling experiment: networks, config checks, smoke runs of every figure."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.disentangle import config as dis_config
from experiments.disentangle import evaluation, experiment
from experiments.disentangle.networks import Network
from gbi_jax.tasks import EvidenceTask, stack_instances

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------
# Networks.
# ---------------------------------------------------------------------------
def test_rnn_training_does_not_depend_on_member_blocking():
    """The Fig. 1 training program in cache blocks of 2 + 1 networks = one vmap of 3."""
    import optax

    from experiments.disentangle.experiment import make_loss_fn
    from gbi_jax import training

    task = EvidenceTask(max_tasks=6, encoders=("relu",))
    net = Network("rnn", task.input_size, 6, hidden=16)
    insts = stack_instances([task.instance(s, n) for s, n in ((0, 2), (1, 3), (2, 6))])
    tx = optax.adam(1e-3)
    keys = training.member_keys(range(3))
    init = jax.jit(jax.vmap(lambda k: training.init_state(net.init(k), tx)))
    out = {}
    for block in (None, 2):
        chunk = training.make_chunk_fn(make_loss_fn(task, net, 8), tx, 20, member_block=block)
        state, metrics = chunk(init(keys), insts, keys, jnp.asarray(20, jnp.int32))
        assert metrics["loss"].shape == (3, 20)
        out[block] = jax.tree_util.tree_leaves(state.params)
    start = jax.tree_util.tree_leaves(init(keys).params)
    assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(out[None], start)) > 1e-3
    for a, b in zip(out[None], out[2]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("core", ["lstm", "gru", "transformer", "noleak"])
def test_one_training_step_of_every_core(core):
    task = EvidenceTask(max_tasks=4)
    net = Network(core, task.input_size, 4, hidden=16,
                  transformer=(("heads", 4), ("mlp", 32)))
    inst = task.instance(0, 3)
    loss_fn = experiment.make_loss_fn(task, net, 4)
    params = net.init(jax.random.PRNGKey(0))
    (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
        params, inst, jax.random.PRNGKey(1), 0)
    assert np.isfinite(float(loss)) and 0 <= float(metrics["accuracy"]) <= 1
    g = jax.tree_util.tree_leaves(grads)
    assert all(np.all(np.isfinite(x)) for x in g)
    # The padded 4th readout unit gets no gradient (masked).
    readout = grads["readout"]["kernel"]
    assert float(jnp.max(jnp.abs(readout[:, 3]))) == 0.0


def test_masked_loss_equals_unpadded_loss():
    """Padding the readout to max N and masking gives the loss of the unpadded net."""
    small, big = EvidenceTask(max_tasks=3), EvidenceTask(max_tasks=24)
    n_small = Network("rnn", 41, 3, hidden=16)
    n_big = Network("rnn", 41, 24, hidden=16)
    p_big = n_big.init(jax.random.PRNGKey(0))
    p_small = dict(p_big, readout={"kernel": p_big["readout"]["kernel"][:, :3],
                                   "bias": p_big["readout"]["bias"][:3]})
    key = jax.random.PRNGKey(3)
    l_small = jax.jit(experiment.make_loss_fn(small, n_small, 8))(
        p_small, small.instance(0, 3), key, 0)
    l_big = jax.jit(experiment.make_loss_fn(big, n_big, 8))(p_big, big.instance(0, 3), key, 0)
    np.testing.assert_allclose(l_small[0], l_big[0], rtol=1e-5)


# Small reference decoders (test-only): the library's protocol is checked against them.
def _reference_adam_decoder(key, h_pool, x_pool, *, steps, lr, batch):
    """Adam fit of ``x ~ h W + b`` on batches of ``batch`` rows drawn from the pool,
    torch ``nn.Linear`` init, MSE loss."""
    import optax

    p, hdim = h_pool.shape
    k_w, k_b, k_d = jax.random.split(key, 3)
    bound = 1.0 / np.sqrt(hdim)
    params = (jax.random.uniform(k_w, (hdim, x_pool.shape[1]), minval=-bound, maxval=bound),
              jax.random.uniform(k_b, (x_pool.shape[1],), minval=-bound, maxval=bound))
    tx = optax.adam(lr)

    def body(i, carry):
        prm, o = carry
        idx = jax.random.randint(jax.random.fold_in(k_d, i), (batch,), 0, p)
        g = jax.grad(lambda q: jnp.mean(jnp.square(h_pool[idx] @ q[0] + q[1] - x_pool[idx])))(prm)
        upd, o = tx.update(g, o, prm)
        return optax.apply_updates(prm, upd), o

    return jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))[0]


def _reference_ridge_decoder(h_pool, x_pool, ridge):
    """Closed-form ridge regression with an absolute ridge, bias unpenalised."""
    hm, xm = h_pool.mean(0), x_pool.mean(0)
    hc, xc = h_pool - hm, x_pool - xm
    w = np.linalg.solve(hc.T @ hc + ridge * len(hc) * np.eye(hc.shape[1]), hc.T @ xc)
    return w, xm - hm @ w


def _reference_pair_angles(w):
    """Angles (degrees) between the columns of ``w [H, D]``, upper-triangle pairs."""
    u = w / np.linalg.norm(w, axis=0, keepdims=True)
    i, j = np.triu_indices(w.shape[1], 1)
    return np.degrees(np.arccos(np.clip(u.T @ u, -1.0, 1.0)[i, j]))


def test_library_decoders_match_references_on_a_linear_code():
    from gbi_jax.analysis import decoding

    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, (2048, 2)).astype(np.float32)
    mix = rng.normal(size=(2, 16)).astype(np.float32)
    h = x @ mix + 0.3 + 0.01 * rng.normal(size=(2048, 16)).astype(np.float32)
    r2 = lambda w, b: 1 - np.mean((h @ np.asarray(w) + np.asarray(b) - x) ** 2) * 12  # noqa
    w_ref, b_ref = _reference_ridge_decoder(h.astype(np.float64), x.astype(np.float64), 1e-8)
    w_lib, b_lib = decoding.fit_linear_decoder(h, x, method="ridge", l2=1e-8)
    np.testing.assert_allclose(h @ np.asarray(w_lib) + np.asarray(b_lib), h @ w_ref + b_ref,
                               atol=2e-3)
    w_a, b_a = jax.jit(lambda k, hh, xx: _reference_adam_decoder(
        k, hh, xx, steps=3000, lr=3e-3, batch=16))(jax.random.PRNGKey(0), h, x)
    w_l, b_l = decoding.fit_linear_decoder(h, x, method="adam", steps=3000, lr=3e-3,
                                           batch_size=16, key=jax.random.PRNGKey(0))
    assert r2(w_a, b_a) > 0.99 and r2(w_l, b_l) > 0.99
    weights = rng.normal(size=(3, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(decoding.decoder_angles(weights),
                               [_reference_pair_angles(w) for w in weights], atol=1e-3)
    np.testing.assert_allclose(decoding.decoder_angles(np.eye(3, 2, dtype=np.float32)), [90.0],
                               atol=1e-4)


# ---------------------------------------------------------------------------
# Configs.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", dis_config.FIGURES)
def test_every_variant_validates(name):
    for arg in (name, name + "_smoke"):
        c = dis_config.get_config(arg)
        experiment.validate(c)
        assert c.figure == name
    paper = dis_config.get_config(name)
    assert paper.train.batch_size == 16 and paper.train.lr == 1e-3
    assert paper.train.steps == 100_000 and paper.train.transformer_steps == 20_000


def test_paper_decoder_schedule_is_the_library_default():
    from gbi_jax.analysis import decoding

    assert tuple(dis_config.get_config("fig1").eval.decoder_steps) == decoding.DECODER_STEPS


def test_unknown_variant_rejected():
    with pytest.raises(ValueError, match="Unknown config variant"):
        dis_config.get_config("fig9")


@pytest.mark.parametrize("field, value, match", [
    ("grid.cores", ("rnn", "mamba"), "grid.cores"),
    ("grid.n_tasks", (0, 2), "grid.n_tasks"),
    ("grid.sigmas", (0.0,), "needs noise"),
    ("grid.rhos", (1.0,), "grid.rhos"),
    ("grid.dims", (1,), "grid.dims"),
    ("grid.encoders", ("tanh",), "grid.encoders"),
    ("grid.boundaries", ("hyperbolic",), "divisible by 4"),
    ("model.alpha", 0.0, "model.alpha"),
    ("train.lr", -1.0, "train.lr"),
    ("eval.decoder", "lasso", "eval.decoder"),
    ("eval.decoder_steps", (10, 10), "eval.decoder_steps"),
    ("seeds", (0, 0), "seeds"),
    ("runtime.member_block", 0, "runtime.member_block"),
])
def test_bad_config_values_rejected(field, value, match):
    c = dis_config.get_config("smoke")
    node, _, leaf = field.rpartition(".")
    (c[node] if node else c)[leaf] = value
    with pytest.raises(ValueError, match=match):
        experiment.validate(c)


def test_groups_split_static_settings():
    c = dis_config.get_config("fig8_rt")
    groups = experiment.groups_of(experiment.members_of(c))
    assert sorted(groups) == ["rnn_D2_T20_fixed_linear", "rnn_D2_T20_free_linear"]
    assert all(len(g) == 25 for g in groups.values())
    c = dis_config.get_config("fig1")
    groups = experiment.groups_of(experiment.members_of(c))
    assert list(groups) == ["rnn_D2_T20_fixed_linear"]  # 5 N x 5 seeds, one program


# ---------------------------------------------------------------------------
# Smoke runs end to end.
# ---------------------------------------------------------------------------
def _check_outputs(workdir, results, name):
    assert os.path.exists(os.path.join(workdir, "table.csv"))
    assert os.path.exists(os.path.join(workdir, "table.md"))
    assert os.path.exists(os.path.join(workdir, "figures", f"{name}.png"))
    with open(os.path.join(workdir, "results.json")) as f:
        saved = json.load(f)
    assert saved["figure"] == name and len(saved["rows"]) == len(results["rows"])
    for row in results["table"]:
        assert 0.7 < row["r2_ceiling"] < 1.0
        assert np.isfinite(row["ood_r2_median"]) and np.isfinite(row["angle_median"])


def test_fig1_smoke_end_to_end_and_resume(tmp_path):
    config = dis_config.get_config("fig1_smoke")
    results = experiment.run(config, str(tmp_path))
    _check_outputs(str(tmp_path), results, "fig1")
    assert len(results["rows"]) == 4 and len(results["table"]) == 2
    row = results["rows"][0]
    assert np.asarray(row["ood_r2"]).shape == (4, config.eval.fits)
    assert np.asarray(row["angles"]).shape == (4, config.eval.fits, 1)
    again = experiment.run(config, str(tmp_path))  # resumes: nothing retrained
    assert all(t["resumed_from"] == config.train.steps for t in again["timing"].values())
    assert again["rows"][0]["ood_r2"] == row["ood_r2"]


def test_fig4_smoke_attractor(tmp_path):
    results = experiment.run(dis_config.get_config("fig4_smoke"), str(tmp_path))
    _check_outputs(str(tmp_path), results, "fig4")
    a = results["attractor"]
    assert len(a["explained_variance"]) >= 3 and a["num_candidates"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("name", [f for f in dis_config.FIGURES if f not in ("fig1", "fig4")])
def test_other_figure_smokes(tmp_path, name):
    results = experiment.run(dis_config.get_config(name + "_smoke"), str(tmp_path))
    _check_outputs(str(tmp_path), results, name)


@pytest.mark.slow
def test_cli_smoke(tmp_path):
    env = dict(os.environ, DISENTANGLE_HOST_DEVICES="2")
    out = subprocess.run(
        [sys.executable, "-m", "experiments.disentangle.main",
         "--config=experiments/disentangle/config.py:fig8_curved_smoke",
         f"--workdir={tmp_path}", "--config.train.steps=20"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(os.path.join(tmp_path, "results.json")) as f:
        assert json.load(f)["devices"] == 2


def test_evaluation_vmapped_over_networks_equals_one_after_another():
    """The accelerator path (one vmap over the networks, split over the devices) gives
    the CPU path's numbers (lax.map over the networks)."""
    cfg = dis_config.get_config("fig1_smoke")
    program = next(iter(experiment.programs_of(cfg).values()))
    group = program.members
    task, net, insts = experiment.build(cfg, program)
    params = jax.vmap(net.init)(jax.random.split(jax.random.PRNGKey(0), len(group)))
    n_tasks = np.asarray([m.n_tasks for m in group])
    apply_fn = lambda p, x: net.apply(p, x)  # noqa: E731
    mapped, vmapped = (evaluation.evaluate_group(task, apply_fn, params, insts, n_tasks,
                                                 cfg.eval, free_rt=False, vmap=v)
                       for v in (False, True))
    assert mapped["ood_r2"].shape == (len(group), 4, cfg.eval.fits)
    for k in ("ood_r2", "id_r2", "angles", "accuracy"):
        np.testing.assert_allclose(vmapped[k], mapped[k], rtol=1e-4, atol=1e-4, err_msg=k)


# ---------------------------------------------------------------------------
# Packed runs: the networks of several figure runs, trained by program.
# ---------------------------------------------------------------------------
def _small(c):
    """Smoke training and evaluation, the grids untouched."""
    c.update_from_flattened_dict(dis_config.SMOKE_OVERRIDES)
    c.figures = False
    c.runtime.member_block = 64  # one vmap (no probe; blocking never changes results)
    return c


def test_packed_programs_merge_twins_and_train_shared_networks_once():
    c = dis_config.get_config("panels")
    programs = experiment.programs_of(c)
    per_run = sum(len(experiment.programs_of(dis_config.part_config(c, p))) for p in c.parts)
    entries = sum(len(p.entries) for p in programs.values())
    members = sum(len(p.members) for p in programs.values())
    assert per_run == 49 and len(programs) == 27
    assert entries == sum(len(experiment.members_of(dis_config.part_config(c, p)))
                          for p in c.parts) == 405
    # fig7's sigma = 0.2, N = 2, 24 networks and fig8_rt's N = 24 free-RT networks are
    # fig1's and fig5's: the same condition, seed and program shapes.
    assert members == 390
    fig1 = programs["rnn_D2_T20_fixed_linear_R24_relu"]
    assert {e.part for e in fig1.entries} == {"fig1", "fig7_n2_24", "fig7_n2_24_s234",
                                              "fig8_corr", "fig8_corr_s234"}
    # Twins share a program; N = 6 networks keep their own readout width.
    fig7_n6 = programs["rnn_D2_T20_fixed_linear_R6_relu"]
    assert {e.part for e in fig7_n6.entries} == {"fig7_n6", "fig7_n6_s234"}
    assert len(fig7_n6.members) == 25 and fig7_n6.readout == 6


def test_packed_rows_equal_the_per_figure_runs(tmp_path):
    """Every row of a packed run (shared networks trained once, twins in one program)
    equals the row of the network's own run: same initialisation, data and evaluation
    (up to float rounding where XLA's kernels round another batch of networks differently;
    a short smoke training keeps that far below the tolerance)."""
    parts = ("fig1", "fig7_n2_24")
    packed = _small(dis_config.get_config("panels"))
    packed.parts = parts
    got = experiment.run(packed, str(tmp_path / "packed"))
    assert len(got["timing"]) == 1  # one program
    (timing,) = got["timing"].values()
    assert timing["networks"] == 25 + 20 - 4  # sigma = 0.2 at N = 2, 24, seeds 0, 1: shared
    keys = ("ood_r2", "id_r2", "angles", "accuracy", "final_loss")
    for part in parts:
        alone = experiment.run(_small(dis_config.part_config(packed, part)),
                               str(tmp_path / part))
        mine = [r for r in got["rows"] if r["part"] == part]
        assert len(mine) == len(alone["rows"])
        for a, b in zip(alone["rows"], mine):
            assert all(a[k] == b[k] for k in experiment.STATIC + experiment.DYNAMIC + ("seed",))
            for k in keys:
                np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-4, err_msg=k)


def test_packed_config_errors():
    c = dis_config.get_config("panels")
    for field, value, match in (("parts", ("fig1", "fig9"), "unknown part 'fig9'"),
                                ("pack", "rnn_D3", "not a program of these parts"),
                                ("seeds", (0,), "seeds of each part")):
        bad = dis_config.get_config("panels")
        bad[field] = value
        with pytest.raises(ValueError, match=match):
            experiment.validate(bad)
    c.grid.n_tasks = (2,)
    with pytest.raises(ValueError, match="config.grid: is not used by a packed run"):
        experiment.validate(c)
    plain = dis_config.get_config("fig1")
    plain.pack = "rnn_D2_T20_fixed_linear"
    with pytest.raises(ValueError, match="config.pack: needs config.parts"):
        experiment.validate(plain)
