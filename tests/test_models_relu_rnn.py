"""The fast ReLU RNN (gbi_jax.models.relu_rnn): hand-written gradients, the functional
model FastRNN and its parameter tree shared with RecurrentNetwork."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gbi_jax.models import FastRNN, RecurrentNetwork
from gbi_jax.models.relu_rnn import linear, relu_rnn, relu_rnn_autodiff

F, T, B, H, N = 5, 6, 3, 8, 4


def _data(seed=0, k=None):
    ks = jax.random.split(jax.random.PRNGKey(seed), 2)
    x = jax.random.normal(ks[0], (B, T, F))
    z = None if k is None else jax.nn.one_hot(jnp.arange(B) % k, k)
    return x, z


# ---------------------------------------------------------------------------
# Gradients.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("alpha, leaky", [(1.0, True), (0.3, True), (1.0, False), (0.3, False)])
def test_handwritten_backward_matches_autodiff(alpha, leaky):
    fast = FastRNN(F, N, hidden=H, alpha=alpha, leaky=leaky)
    plain = FastRNN(F, N, hidden=H, alpha=alpha, leaky=leaky, custom_grad=False)
    params = fast.init(jax.random.PRNGKey(0))
    x, _ = _data(1)

    # Through the readout and the hidden states, so both cotangent paths are exercised.
    def grads(model):
        def loss(p, x):
            out, hid = model.apply(p, x, return_hidden=True)
            return jnp.sum(jnp.sin(out)) + jnp.sum(hid ** 2)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)

    new, ref = jax.tree_util.tree_leaves(grads(fast)), jax.tree_util.tree_leaves(grads(plain))
    assert len(new) == len(ref) == 7  # 4 core + 2 readout leaves, and the inputs
    for a, c in zip(new, ref):
        assert a.shape == c.shape and float(jnp.max(jnp.abs(c))) > 0
        np.testing.assert_allclose(a, c, rtol=2e-4, atol=1e-5)


def test_primitive_gradient_matches_autodiff_for_a_general_decay():
    ks = jax.random.split(jax.random.PRNGKey(2), 5)
    u = jax.random.normal(ks[0], (T, B, F))
    w_in = jax.random.normal(ks[1], (F, H)) / np.sqrt(F)
    b = 0.1 * jax.random.normal(ks[2], (H,))
    w_rec = jax.random.normal(ks[3], (H, H)) / np.sqrt(H)
    probe = jax.random.normal(ks[4], (T, B, H))
    for decay, alpha in ((0.0, 1.0), (0.5, 0.5), (1.0, 0.2)):
        f = lambda run: lambda *a: jnp.sum(run(*a, decay, alpha) * probe)  # noqa: E731
        g_new = jax.jit(jax.grad(f(relu_rnn), argnums=(0, 1, 2, 3)))(u, w_in, b, w_rec)
        g_ref = jax.jit(jax.grad(f(relu_rnn_autodiff), argnums=(0, 1, 2, 3)))(u, w_in, b, w_rec)
        for a, c in zip(g_new, g_ref):
            np.testing.assert_allclose(a, c, rtol=2e-4, atol=1e-5)
        np.testing.assert_allclose(relu_rnn(u, w_in, b, w_rec, decay, alpha),
                                   relu_rnn_autodiff(u, w_in, b, w_rec, decay, alpha))


def test_readout_linear_matches_autodiff_also_vmapped():
    ks = jax.random.split(jax.random.PRNGKey(3), 4)
    x = jax.random.normal(ks[0], (3, 5, 7, 16))  # [members, B, S, K]
    w = jax.random.normal(ks[1], (3, 16, 6))
    b = jax.random.normal(ks[2], (3, 6))
    probe = jax.random.normal(ks[3], (3, 5, 7, 6))

    def loss(f):
        return lambda x, w, b, p: jnp.sum(jnp.sin(f(x, w, b)) * p)

    plain = lambda x, w, b: x @ w + b  # noqa: E731
    for lin in (jax.vmap(linear), linear):  # vmapped over members, and plain batch axes
        args = (x, w, b, probe) if lin is not linear else (x[0], w[0], b[0], probe[0])
        ref = plain if lin is linear else jax.vmap(plain)
        np.testing.assert_allclose(lin(*args[:3]), ref(*args[:3]), rtol=1e-6, atol=1e-6)
        g_new = jax.jit(jax.grad(loss(lin), argnums=(0, 1, 2)))(*args)
        g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1, 2)))(*args)
        for a, c in zip(g_new, g_ref):
            assert a.shape == c.shape
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# One parameter tree with RecurrentNetwork.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [
    dict(alpha=1.0), dict(alpha=0.3), dict(alpha=0.3, leaky=False),
    dict(weight_init="fan_in"), dict(weight_init="flax"),
    dict(latent_size=3, z_injection="concat"), dict(latent_size=3, z_injection="gate+film"),
    dict(core="lstm", latent_size=3), dict(core="gru", weight_init="flax"),
])
def test_fast_path_equals_the_flax_cell_scan_on_the_same_parameters(kw):
    fast = FastRNN(F, N, hidden=H, **kw)
    module = fast.as_flax()
    x, z = _data(4, kw.get("latent_size") or None)
    p_fast = fast.init(jax.random.PRNGKey(0))
    p_flax = module.init(jax.random.PRNGKey(1), x, z)["params"]
    shapes = lambda t: jax.tree_util.tree_map(jnp.shape, t)  # noqa: E731
    assert shapes(p_fast) == shapes(p_flax)
    if "film" in p_fast:  # FiLM starts as the identity: make it act
        p_fast["film"] = jax.tree_util.tree_map(lambda a: a + 0.3, p_fast["film"])
    for p in (p_fast, p_flax):  # trained by either, run by the other
        out, hid = fast.apply(p, x, z, return_hidden=True)
        ref_out, ref_hid = module.apply({"params": p}, x, z, return_hidden=True)
        np.testing.assert_allclose(hid, ref_hid, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("leaky", [True, False])
def test_step_function_reproduces_the_sequence(leaky):
    fast = FastRNN(F, N, hidden=H, alpha=0.5, leaky=leaky, weight_init="fan_in")
    p = fast.init(jax.random.PRNGKey(0))
    x, _ = _data(5)
    h = jnp.zeros((B, H))
    for t in range(T):
        h = fast.step(p, h, x[:, t])
    np.testing.assert_allclose(fast.apply(p, x, return_hidden=True)[1][:, -1], h,
                               rtol=1e-5, atol=1e-5)


def test_any_leading_batch_shape():
    fast = FastRNN(F, N, hidden=H, latent_size=2)
    p = fast.init(jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, T, F))
    z = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 2))
    out = fast.apply(p, x, z)
    assert out.shape == (2, 3, T, N)
    np.testing.assert_allclose(fast.apply(p, x[1, 2], z[1, 2]), out[1, 2], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Initialisation.
# ---------------------------------------------------------------------------
def test_init_follows_the_documented_draw_order():
    fast = FastRNN(F, N, hidden=H, weight_init="fan_in")
    key = jax.random.PRNGKey(7)
    p = fast.init(key)
    k_core, k_w, k_b = jax.random.split(key, 3)
    ks = jax.random.split(k_core, 4)
    u = lambda k, shape, bound: jax.random.uniform(k, shape, jnp.float32, -bound, bound)  # noqa
    c = p["core"]
    np.testing.assert_array_equal(c["input"]["Dense_0"]["kernel"], u(ks[0], (F, H), F ** -0.5))
    np.testing.assert_array_equal(c["input"]["Dense_0"]["bias"], u(ks[1], (H,), F ** -0.5))
    np.testing.assert_array_equal(c["recurrent"]["Dense_0"]["kernel"], u(ks[2], (H, H), H ** -.5))
    np.testing.assert_array_equal(c["recurrent"]["Dense_0"]["bias"], u(ks[3], (H,), H ** -0.5))
    np.testing.assert_array_equal(p["readout"]["kernel"], u(k_w, (H, N), H ** -0.5))
    np.testing.assert_array_equal(p["readout"]["bias"], u(k_b, (N,), H ** -0.5))


def test_init_conventions_bounds_and_statistics():
    f, h = 400, 100  # F > H, so the fan-in and hidden bounds differ
    core = lambda init: FastRNN(f, 2, hidden=h, weight_init=init).init(  # noqa: E731
        jax.random.PRNGKey(0))["core"]
    for init, bound_in in (("torch", h ** -0.5), ("fan_in", f ** -0.5)):
        c = core(init)
        for layer, bound in (("input", bound_in), ("recurrent", h ** -0.5)):
            for leaf in ("kernel", "bias"):
                w = np.asarray(c[layer]["Dense_0"][leaf])
                assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
            # U(-b, b) has standard deviation b / sqrt(3).
            w = np.asarray(c[layer]["Dense_0"]["kernel"])
            assert abs(w.std() - bound / np.sqrt(3)) < 0.03 * bound
    c = core("flax")
    w_rec = np.asarray(c["recurrent"]["Dense_0"]["kernel"])
    np.testing.assert_allclose(w_rec.T @ w_rec, np.eye(h), atol=1e-4)  # orthogonal
    assert abs(np.asarray(c["input"]["Dense_0"]["kernel"]).std() - f ** -0.5) < 0.05 * f ** -0.5
    assert not np.any(c["input"]["Dense_0"]["bias"])
    assert not np.any(c["recurrent"]["Dense_0"]["bias"])


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw, field", [
    (dict(core="transformer"), "core"), (dict(hidden=0), "hidden"), (dict(alpha=0.0), "alpha"),
    (dict(weight_init="xavier"), "weight_init"), (dict(z_injection="both"), "z_injection"),
    (dict(latent_size=-1), "latent_size"), (dict(input_size=0), "input_size"),
    (dict(temperature=0.0), "temperature"), (dict(latent_activation="tanh"), "latent_activation"),
])
def test_fields_are_validated(kw, field):
    args = dict(input_size=F, out_features=N)
    args.update(kw)
    with pytest.raises(ValueError, match=field):
        FastRNN(**args)


def test_latent_must_match_latent_size():
    x, z = _data(0, 2)
    with pytest.raises(ValueError, match="latent_size"):
        FastRNN(F, N, hidden=H).apply(FastRNN(F, N, hidden=H).init(jax.random.PRNGKey(0)), x, z)
    with_z = FastRNN(F, N, hidden=H, latent_size=2)
    with pytest.raises(ValueError, match="latent_size"):
        with_z.apply(with_z.init(jax.random.PRNGKey(0)), x)
    assert isinstance(with_z.as_flax(), RecurrentNetwork)
