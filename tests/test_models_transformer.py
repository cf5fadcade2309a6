"""GPT-style causal transformer (gbi_jax.models.transformer), with and without a latent."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gbi_jax.models import CausalTransformer

F, S = 41, 22


@pytest.fixture(scope="module")
def model_and_params():
    model = CausalTransformer(out_features=24)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, S, F)))
    return model, params


def test_shapes_and_parameter_count(model_and_params):
    model, params = model_and_params
    count = sum(a.size for a in jax.tree_util.tree_leaves(params))
    # The authors' GPT-2 core has ~54.3k parameters including the input projection and the
    # frozen 22 x 64 positional table (1,408), which we leave out; readout 64 x 24 + 24.
    assert count - (64 * 24 + 24) + 22 * 64 == pytest.approx(54_300, abs=150)
    out, hidden = jax.jit(lambda p, x: model.apply(p, x, return_hidden=True))(
        params, jnp.ones((3, S, F)))
    assert out.shape == (3, S, 24) and hidden.shape == (3, S, 64)
    # hidden is the final LayerNorm output: zero mean, unit variance per position.
    np.testing.assert_allclose(np.asarray(hidden).mean(-1), 0.0, atol=1e-5)


def test_init_statistics(model_and_params):
    _, params = model_and_params
    p = params["params"]
    assert abs(float(jnp.std(p["h_0"]["c_fc"]["kernel"])) - 0.02) < 0.002
    assert abs(float(jnp.std(p["h_0"]["attn"]["c_attn"]["kernel"])) - 0.02) < 0.002
    assert abs(float(jnp.std(p["h_0"]["c_proj"]["kernel"])) - 0.02 / np.sqrt(2)) < 0.002
    assert float(jnp.max(jnp.abs(p["readout"]["kernel"]))) <= 1 / 8  # torch U(+-1/sqrt(64))
    assert float(jnp.max(jnp.abs(p["h_0"]["c_fc"]["bias"]))) == 0.0


def test_causal_and_order_blind(model_and_params):
    model, params = model_and_params
    apply = jax.jit(lambda p, x: model.apply(p, x))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, S, F))
    y = x.at[:, 10].add(1.0)
    a, b = np.asarray(apply(params, x)), np.asarray(apply(params, y))
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)  # the past ignores the future
    assert not np.allclose(a[:, 10:], b[:, 10:])
    # No positional embedding: permuting the first k inputs leaves output k-1 unchanged.
    perm = x.at[:, :5].set(x[:, [3, 2, 0, 1, 4]])
    np.testing.assert_allclose(apply(params, perm)[:, 4], a[:, 4], rtol=1e-4, atol=1e-5)


def test_dropout_only_in_training(model_and_params):
    model, params = model_and_params
    x = jnp.ones((2, S, F))
    train = jax.jit(lambda p, x, k: model.apply(p, x, deterministic=False, rngs={"dropout": k}))
    a = train(params, x, jax.random.PRNGKey(0))
    b = train(params, x, jax.random.PRNGKey(1))
    assert not np.allclose(a, b)
    evaluate = jax.jit(lambda p, x: model.apply(p, x))
    np.testing.assert_allclose(evaluate(params, x), evaluate(params, x))


@pytest.mark.parametrize("kw, match", [
    (dict(width=60, heads=8), "divisible"), (dict(dropout=1.0), "dropout"),
    (dict(layers=0), "layers"), (dict(z_injection="both"), "z_injection"),
    (dict(out_features=0), "out_features"),
])
def test_rejects_bad_config(kw, match):
    with pytest.raises(ValueError, match=match):
        CausalTransformer(**{"out_features": 2, **kw})


def test_latent_is_optional_and_enters_as_asked():
    small = dict(out_features=3, width=16, heads=4, mlp=32)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 5))
    z = jax.nn.one_hot(jnp.array([0, 2]), 4)
    key = jax.random.PRNGKey(0)
    plain = CausalTransformer(**small).init(key, x)["params"]
    for injection, extra in (("concat", set()), ("gate", {"gate"}), ("film", {"film"}),
                             ("concat+film", {"film"})):
        model = CausalTransformer(**small, z_injection=injection)
        np.testing.assert_array_equal(model.init(key, x)["params"]["input_projection"]["kernel"],
                                      plain["input_projection"]["kernel"])  # z=None: unchanged
        params = model.init(key, x, z)["params"]
        assert set(params) - set(plain) == extra
        rows = params["input_projection"]["kernel"].shape[0]
        assert rows == 5 + 4 * ("concat" in injection)
        # A per-sequence latent keeps the network causal.
        out = model.apply({"params": params}, x, z)
        y = x.at[:, 3].add(1.0)
        np.testing.assert_allclose(model.apply({"params": params}, y, z)[:, :3], out[:, :3],
                                   atol=1e-6)
    # A time-varying latent [B, S, K] is accepted as is.
    model = CausalTransformer(**small)
    zt = jnp.broadcast_to(z[:, None], (2, 6, 4))
    params = model.init(key, x, zt)
    np.testing.assert_allclose(model.apply(params, x, zt), model.apply(params, x, z), atol=1e-6)
