"""The latent vocabulary (gbi_jax.models.latent), checked on every model that takes z."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gbi_jax.models import (MLP, Z_INJECTIONS, CausalTransformer, ConditionalAutoencoder, FastRNN,
                            FiLM, RecurrentNetwork, parse_z_injection, transform_latent)

K = 3


def test_vocabulary_and_parser():
    assert Z_INJECTIONS[:3] == ("concat", "gate", "film")
    assert set(Z_INJECTIONS) == {"concat", "gate", "film", "concat+gate", "concat+film",
                                 "gate+film", "concat+gate+film"}
    assert parse_z_injection("concat+film") == (True, False, True)
    assert parse_z_injection("gate") == (False, True, False)
    for bad in ("both", "film+concat", "concat+concat", "", "concat+", "add", None):
        with pytest.raises(ValueError, match="z_injection"):
            parse_z_injection(bad)


def test_softmax_latent_activation():
    z = jnp.array([[0.0, 0.1, -0.2]])
    np.testing.assert_allclose(transform_latent(z, "softmax", 0.1),
                               jax.nn.softmax(z / 0.1, axis=-1), rtol=1e-6)
    assert transform_latent(z) is z


def test_film_is_identity_at_zero_latent_and_at_init_and_broadcasts_over_space():
    h = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 3))
    film = FiLM()
    p = film.init(jax.random.PRNGKey(1), h, jnp.ones((2, 5)))
    z = jax.random.normal(jax.random.PRNGKey(2), (2, 5))
    np.testing.assert_allclose(film.apply(p, h, z), h, atol=1e-6)  # zero-initialised
    kernel = jax.random.normal(jax.random.PRNGKey(3), (5, 6))
    q = {"params": {"Dense_0": {"kernel": kernel}}}
    np.testing.assert_allclose(film.apply(q, h, jnp.zeros((2, 5))), h, atol=1e-6)
    gamma, beta = np.split(np.asarray(z @ kernel), 2, -1)
    expected = np.asarray(h) * (1 + gamma[:, None, None]) + beta[:, None, None]
    np.testing.assert_allclose(film.apply(q, h, z), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Every model: (build(z_injection), inputs, latent shape); apply(params, z) -> outputs.
# ---------------------------------------------------------------------------
def _flax(module, x):
    init = jax.jit(lambda z: module.init(jax.random.PRNGKey(0), x, z)["params"])
    return init, jax.jit(lambda params, z: module.apply({"params": params}, x, z))


def _model(name, injection):
    x2 = jax.random.normal(jax.random.PRNGKey(10), (2, 4))
    x3 = jax.random.normal(jax.random.PRNGKey(11), (2, 5, 4))
    img = jax.random.normal(jax.random.PRNGKey(12), (2, 8, 8, 1))
    if name == "mlp":
        return _flax(MLP(hidden=(6,), out_features=3, z_injection=injection), x2)
    if name == "recurrent":
        return _flax(RecurrentNetwork(core="gru", hidden=6, out_features=3,
                                      z_injection=injection), x3)
    if name == "transformer":
        return _flax(CausalTransformer(out_features=3, width=8, heads=2, mlp=16, dropout=0.0,
                                       z_injection=injection), x3)
    if name == "autoencoder":
        return _flax(ConditionalAutoencoder(image_shape=(8, 8, 1), features=(2, 4), bottleneck=2,
                                            z_injection=injection), img)
    fast = FastRNN(4, 3, hidden=6, latent_size=K, z_injection=injection)
    fast_plain = FastRNN(4, 3, hidden=6)
    return (lambda z: fast.init(jax.random.PRNGKey(0)),
            jax.jit(lambda p, z: (fast if z is not None else fast_plain).apply(p, x3, z)))


MODELS = ("mlp", "recurrent", "fastrnn", "transformer", "autoencoder")


def _perturbed(params, scale=0.3):
    """Every parameter moved off its init (so a zero-initialised FiLM acts)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(99), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("injection", ["concat", "gate", "film", "concat+gate+film"])
def test_every_injection_makes_the_output_depend_on_z(model, injection):
    init, apply = _model(model, injection)
    z1 = jax.nn.one_hot(jnp.array([0, 1]), K)
    z2 = jax.nn.one_hot(jnp.array([2, 0]), K)
    params = _perturbed(init(z1))
    expected = {p for p in ("gate", "film") if p in injection.split("+")}
    names = {k.split("_")[0] for k in params} & {"gate", "film"}
    assert names == expected
    assert not np.allclose(apply(params, z1), apply(params, z2), atol=1e-4)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("injection", ["gate", "film"])
def test_gate_and_film_are_the_identity_at_zero_latent(model, injection):
    init, apply = _model(model, injection)
    params = _perturbed(init(jnp.ones((2, K))))
    plain = {k: v for k, v in params.items() if k.split("_")[0] not in ("gate", "film")}
    np.testing.assert_allclose(apply(params, jnp.zeros((2, K))), apply(plain, None),
                               rtol=1e-5, atol=1e-5)
    if injection == "film":  # zero-initialised: also the identity at init, for any z
        fresh = init(jnp.ones((2, K)))
        plain = {k: v for k, v in fresh.items() if not k.startswith("film")}
        np.testing.assert_allclose(apply(fresh, jnp.ones((2, K))), apply(plain, None),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model", MODELS)
def test_bad_injection_names_raise(model):
    with pytest.raises(ValueError, match="z_injection"):
        _model(model, "both")
