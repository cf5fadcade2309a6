"""Recurrent cores and RecurrentNetwork (gbi_jax.models.recurrent)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gbi_jax.models import CORES, WEIGHT_INITS, RecurrentNetwork, make_cell


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


@pytest.mark.parametrize("core, leaky", [("rnn", True), ("rnn", False), ("gru", True),
                                         ("lstm", True)])
def test_recurrent_cells_match_torch_equations(core, leaky):
    alpha = 1.0 if leaky else 0.5
    net = RecurrentNetwork(core=core, hidden=4, out_features=2, alpha=alpha, leaky=leaky)
    x = jax.random.normal(jax.random.PRNGKey(0), (6, 3))
    z = jnp.array([0.0, 1.0])
    params = net.init(jax.random.PRNGKey(1), x, z)
    out, hs = net.apply(params, x, z, return_hidden=True)
    p = jax.tree_util.tree_map(np.asarray, params["params"])
    wi, bi = p["core"]["input"]["Dense_0"]["kernel"], p["core"]["input"]["Dense_0"]["bias"]
    wh, bh = p["core"]["recurrent"]["Dense_0"]["kernel"], p["core"]["recurrent"]["Dense_0"]["bias"]
    u = np.concatenate([np.asarray(x), np.tile(np.asarray(z), (6, 1))], 1)
    h, c, ref = np.zeros(4), np.zeros(4), []
    for t in range(6):
        gi, gh = u[t] @ wi + bi, h @ wh + bh
        if core == "rnn":
            h = (1 - alpha) * h + alpha * np.maximum(gi + gh, 0) if leaky else \
                h + alpha * np.maximum(gi + gh, 0)
        elif core == "lstm":
            i, f, g, o = np.split(gi + gh, 4)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        else:
            r = _sigmoid(gi[:4] + gh[:4])
            zg = _sigmoid(gi[4:8] + gh[4:8])
            n = np.tanh(gi[8:] + r * gh[8:])
            h = (1 - zg) * n + zg * h
        ref.append(h)
    np.testing.assert_allclose(np.asarray(hs), np.stack(ref), atol=1e-5)
    ro = p["readout"]
    np.testing.assert_allclose(np.asarray(out), np.stack(ref) @ ro["kernel"] + ro["bias"],
                               atol=1e-5)
    # torch init: every weight within 1/sqrt(hidden)
    assert np.abs(wh).max() <= 0.5 + 1e-6 and np.abs(wi).max() <= 0.5 + 1e-6


def test_batched_equals_unbatched_and_gate_is_neutral_at_zero():
    net = RecurrentNetwork(core="lstm", hidden=8, out_features=1, input_projection=8,
                           z_injection="gate")
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 5, 1))
    z = jax.nn.one_hot(jnp.array([0, 1, 1]), 2)
    params = net.init(jax.random.PRNGKey(1), x, z)
    batched = net.apply(params, x, z)
    single = jnp.stack([net.apply(params, x[i], z[i]) for i in range(3)])
    np.testing.assert_allclose(batched, single, atol=1e-6)
    # A zero latent leaves the gated network equal to the ungated path.
    no_gate = dict(params["params"])
    no_gate.pop("gate")
    plain = RecurrentNetwork(core="lstm", hidden=8, out_features=1, input_projection=8)
    np.testing.assert_allclose(net.apply(params, x, jnp.zeros((3, 2))),
                               plain.apply({"params": no_gate}, x), atol=1e-6)


@pytest.mark.parametrize("core", CORES)
def test_weight_init_conventions_of_every_cell(core):
    f, h = 300, 50  # F > H, so the fan-in and hidden bounds differ
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[core]
    for init in WEIGHT_INITS:
        cell = make_cell(core, h, weight_init=init)
        p = cell.init(jax.random.PRNGKey(0), cell.initial_state((1,)), jnp.zeros((1, f)))
        p = jax.tree_util.tree_map(np.asarray, p["params"])
        w_in, w_rec = p["input"]["Dense_0"]["kernel"], p["recurrent"]["Dense_0"]["kernel"]
        assert w_in.shape == (f, gates * h) and w_rec.shape == (h, gates * h)
        if init == "flax":
            assert not np.any(p["input"]["Dense_0"]["bias"])
            assert not np.any(p["recurrent"]["Dense_0"]["bias"])
            np.testing.assert_allclose(w_rec @ w_rec.T, np.eye(h), atol=1e-4)  # orthogonal rows
            assert abs(w_in.std() - f ** -0.5) < 0.05 * f ** -0.5  # lecun normal
            continue
        bound_in = f ** -0.5 if init == "fan_in" else h ** -0.5
        for layer, bound in (("input", bound_in), ("recurrent", h ** -0.5)):
            for leaf in ("kernel", "bias"):
                w = p[layer]["Dense_0"][leaf]
                assert np.abs(w).max() <= bound * (1 + 1e-6)
                assert np.abs(w).max() > 0.9 * bound
            w = p[layer]["Dense_0"]["kernel"]
            assert abs(w.std() - bound / np.sqrt(3)) < 0.05 * bound  # U(-b, b)


@pytest.mark.parametrize("kw, field", [
    (dict(core="transformer"), "core"), (dict(z_injection="add"), "z_injection"),
    (dict(hidden=0), "hidden"), (dict(alpha=1.5), "alpha"), (dict(activation="sin"),
                                                              "activation"),
    (dict(weight_init="normal"), "weight_init"), (dict(out_features=0), "out_features"),
    (dict(input_projection=0), "input_projection"), (dict(temperature=-1.0), "temperature"),
])
def test_model_rejects_bad_options(kw, field):
    with pytest.raises(ValueError, match=field):
        RecurrentNetwork(**kw)


@pytest.mark.parametrize("kw, field", [
    (dict(core="rnn", alpha=0.0), "alpha"), (dict(core="lstm", weight_init="x"), "weight_init"),
    (dict(core="gru", hidden=0), "hidden"), (dict(core="elman"), "core"),
])
def test_cells_reject_bad_options(kw, field):
    core = kw.pop("core")
    with pytest.raises(ValueError, match=field):
        make_cell(core, kw.pop("hidden", 4), **kw)
