"""Tests for gbi_jax.inference, the GBI primitives.

Checked against closed-form answers (linear-Gaussian decoders, convex
quadratics), finite differences, hand-written optax loops, and for agreement
between jit / no-jit / vmap / a Python loop over examples.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads
from scipy import stats

from gbi_jax import inference
from gbi_jax.analysis import metrics

# --------------------------------------------------------------------------
# Shared toy losses.
# --------------------------------------------------------------------------


def _decoder(seed, dim_x=6, num_tasks=4, dtype=np.float32):
    """A small nonlinear decoder ``x_hat = V tanh(W z + b)`` (weights frozen)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(dim_x, num_tasks)).astype(dtype)
    b = (0.1 * rng.normal(size=dim_x)).astype(dtype)
    v = (rng.normal(size=(dim_x, dim_x)) / np.sqrt(dim_x)).astype(dtype)
    return w, b, v


def _decoder_loss(params, z, x):
    """Reconstruction loss of ONE example: ``0.5 * ||x - V tanh(W z + b)||^2``."""
    w, b, v = params
    return 0.5 * jnp.sum((x - v @ jnp.tanh(w @ z + b)) ** 2)


def _data(seed, shape, dtype=np.float32):
    return np.random.default_rng(seed).normal(size=shape).astype(dtype)


def _linear_gaussian_loss(w, x, noise_sd):
    """Negative log-likelihood of ``x ~ N(W z, s^2 I)`` up to a constant."""
    return lambda z: 0.5 / noise_sd**2 * jnp.sum((x - w @ z) ** 2)


def _equicorrelated_columns(rng, dim_x, num_tasks, sq_norm, inner):
    """``W [D, K]`` with ``||W e_k||^2 = sq_norm`` and ``<W e_j, W e_k> = inner`` (j != k)."""
    gram = (sq_norm - inner) * np.eye(num_tasks) + inner * np.ones((num_tasks, num_tasks))
    q, _ = np.linalg.qr(rng.normal(size=(dim_x, num_tasks)))
    w = q @ np.linalg.cholesky(gram).T
    np.testing.assert_allclose(w.T @ w, gram, atol=1e-10)
    return w


# --------------------------------------------------------------------------
# One-step GBI against exact Bayes.
# --------------------------------------------------------------------------
@pytest.mark.parametrize("num_tasks,dim_x,sq_norm,inner", [
    (2, 4, 1.0, 0.0),      # orthonormal columns
    (3, 6, 2.0, 0.5),      # equal norms, equal positive overlaps
    (5, 8, 1.5, -0.2),     # equal negative overlaps
    (8, 8, 4.0, 1.0),      # K = D
])
def test_one_step_equals_exact_bayes_for_linear_gaussian(num_tasks, dim_x, sq_norm, inner):
    """For x = W z + noise the loss is quadratic in z, so

        log p(x|e_k) - log p(x|u) = s·(e_k - u) - 0.5/s^2 ||W (e_k - u)||^2

    with ``s = -dL/dz(u)``. With equal column norms and equal pairwise inner
    products the quadratic term is the same for all k, so the one-step scores
    are the exact log-likelihoods plus a per-example constant.
    """
    rng = np.random.default_rng(num_tasks)
    noise_sd = 0.7
    w = _equicorrelated_columns(rng, dim_x, num_tasks, sq_norm, inner)
    num_examples = 300
    context = rng.integers(num_tasks, size=num_examples)
    x = w[:, context].T + noise_sd * rng.normal(size=(num_examples, dim_x))
    x[:30] *= 4.0  # some far-away points too
    x = x.astype(np.float32)
    z0 = inference.max_entropy_latent(num_tasks)

    res = jax.jit(lambda xs: inference.one_step_batch(
        lambda z, xi: _linear_gaussian_loss(w.astype(np.float32), xi, noise_sd)(z), z0, xs))(x)
    log_lik = stats.norm.logpdf(x[:, None, :].astype(np.float64), w.T[None], noise_sd).sum(-1)

    # Affine relation: centred scores == slope * centred log-likelihoods, slope 1.
    cs = np.asarray(metrics.centered(res.scores), np.float64)
    cl = np.asarray(metrics.centered(log_lik), np.float64)
    slope = np.sum(cs * cl) / np.sum(cl * cl)
    residual = cs - slope * cl
    np.testing.assert_allclose(slope, 1.0, rtol=1e-5)
    assert np.max(np.abs(residual)) <= 1e-5 * np.max(np.abs(cl)) + 1e-4

    # Bayes argmax (uniform prior) == one-step prediction, except float32 near-ties.
    bayes = np.argmax(log_lik, axis=1)
    top2 = np.sort(log_lik, axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-3
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(np.asarray(res.prediction)[clear], bayes[clear])


@pytest.mark.float64
def test_one_step_first_order_identity_for_any_linear_decoder():
    """Without the equal-geometry construction the quadratic term differs per k,
    but the exact second-order identity still holds for a quadratic loss."""
    rng = np.random.default_rng(0)
    num_tasks, dim_x, noise_sd = 4, 5, 0.5
    w = rng.normal(size=(dim_x, num_tasks))
    x = rng.normal(size=dim_x)
    with jax.enable_x64(True):
        u = inference.max_entropy_latent(num_tasks, dtype=jnp.float64)
        res = inference.one_step(_linear_gaussian_loss(jnp.asarray(w), jnp.asarray(x), noise_sd), u)
        eye = np.eye(num_tasks)
        log_lik = stats.norm.logpdf(x[None], (w @ eye).T, noise_sd).sum(-1)
        log_lik_u = stats.norm.logpdf(x, w @ np.asarray(u), noise_sd).sum()
        quad = 0.5 / noise_sd**2 * np.sum((w @ (eye - np.asarray(u)[:, None])) ** 2, axis=0)
        np.testing.assert_allclose(log_lik - log_lik_u,
                                   (eye - np.asarray(u)) @ np.asarray(res.scores) - quad,
                                   rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------
# Exhaustive scoring against exact Bayes.
# --------------------------------------------------------------------------
def test_exhaustive_is_exact_bayes_for_linear_gaussian():
    """For x ~ N(W e_k, s^2 I) the one-hot losses are -log N(x; W e_k, s^2 I) + const, so
    the exhaustive posterior at temperature 1 is the exact Bayes posterior (uniform prior)."""
    rng = np.random.default_rng(3)
    num_tasks, dim_x, noise_sd, n = 5, 7, 0.8, 64
    w = rng.normal(size=(dim_x, num_tasks)).astype(np.float32)
    context = rng.integers(num_tasks, size=n)
    x = (w[:, context].T + noise_sd * rng.normal(size=(n, dim_x))).astype(np.float32)
    loss = lambda z, xi: _linear_gaussian_loss(w, xi, noise_sd)(z)  # noqa: E731
    res = jax.jit(lambda xs: inference.exhaustive_batch(loss, num_tasks, xs))(x)

    log_lik = stats.norm.logpdf(x[:, None, :].astype(np.float64), w.T[None], noise_sd).sum(-1)
    bayes = np.exp(log_lik - log_lik.max(-1, keepdims=True))
    bayes /= bayes.sum(-1, keepdims=True)
    np.testing.assert_allclose(res.posterior, bayes, atol=2e-5)
    # grad holds the one-hot losses; they differ from -log_lik by one constant per example.
    const = np.asarray(res.grad, np.float64) + log_lik
    np.testing.assert_allclose(const, const[:, :1] * np.ones((1, num_tasks)), atol=1e-3)
    np.testing.assert_array_equal(res.scores, -res.grad)
    np.testing.assert_array_equal(res.prediction, np.argmin(np.asarray(res.grad), -1))
    np.testing.assert_array_equal(res.loss, np.min(np.asarray(res.grad), -1))
    assert res.prediction.dtype == np.int32 and res.loss.shape == (n,)
    # Temperature sharpens without changing the prediction.
    cold = inference.exhaustive_batch(loss, num_tasks, x, temperature=0.25)
    np.testing.assert_array_equal(cold.prediction, res.prediction)
    assert np.all(np.asarray(cold.posterior).max(-1) >= np.asarray(res.posterior).max(-1) - 1e-6)


def test_exhaustive_equals_one_step_for_a_loss_linear_in_z():
    """A mixture loss L(z) = sum_k z_k c_k has dL/dz = c = (L(e_k))_k: both agree exactly."""
    c = jnp.asarray([0.3, -1.2, 2.0, 0.7])
    loss = lambda z: jnp.dot(z, c)  # noqa: E731
    ex = inference.exhaustive(loss, 4, temperature=0.5)
    one = inference.one_step(loss, inference.max_entropy_latent(4), temperature=0.5)
    chex.assert_trees_all_close(ex.grad, one.grad, c)
    chex.assert_trees_all_close(ex.scores, one.scores)
    chex.assert_trees_all_close(ex.posterior, one.posterior, rtol=1e-6)
    assert int(ex.prediction) == int(one.prediction) == 1
    np.testing.assert_allclose(ex.loss, -1.2)


def test_exhaustive_jit_vmap_chunks_and_loop_agree():
    single = jax.jit(lambda x: inference.exhaustive(lambda z: _decoder_loss(_PARAMS, z, x), 4))
    batched = jax.vmap(single)(_X)
    looped = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *[single(x) for x in _X])
    chex.assert_trees_all_close(batched, looped, rtol=1e-5, atol=1e-6)
    example_loss = lambda z, x: _decoder_loss(_PARAMS, z, x)  # noqa: E731
    plain = inference.exhaustive_batch(example_loss, 4, _X)
    chunked = inference.exhaustive_batch(example_loss, 4, _X, chunk_size=3)
    chex.assert_trees_all_close(plain, chunked, looped, rtol=1e-5, atol=1e-6)
    # The one-hot losses are the loss evaluated at the vertices.
    eye = np.eye(4, dtype=np.float32)
    direct = np.array([[float(_decoder_loss(_PARAMS, e, x)) for e in eye] for x in _X[:2]])
    np.testing.assert_allclose(plain.grad[:2], direct, rtol=1e-5)


def test_exhaustive_rejects_bad_input():
    with pytest.raises(ValueError, match="num_tasks must be an integer >= 2"):
        inference.exhaustive(_quad, 1)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        inference.exhaustive(_quad, 3, temperature=0.0)
    with pytest.raises(ValueError, match="scalar"):
        inference.exhaustive(lambda z: z ** 2, 3)
    with pytest.raises(ValueError, match="non-empty"):
        inference.exhaustive_batch(lambda z, x: jnp.sum(z), 3, {})


def test_softmax_latent_at_zero_logits_gives_same_prediction():
    """At uniform logits the softmax Jacobian only centres (and scales) the gradient."""
    params = _decoder(1, num_tasks=5)
    x = _data(2, (32, 6))
    probs, logits = jax.jit(lambda xs: (
        inference.one_step_batch(lambda z, xi: _decoder_loss(params, z, xi),
                                 inference.max_entropy_latent(5), xs),
        inference.one_step_batch(lambda z, xi: _decoder_loss(params, jax.nn.softmax(z), xi),
                                 inference.max_entropy_latent(5, parameterization="logits"),
                                 xs)))(x)
    np.testing.assert_array_equal(probs.prediction, logits.prediction)
    np.testing.assert_allclose(logits.scores, metrics.centered(probs.scores) / 5, rtol=1e-4,
                               atol=1e-6)


# --------------------------------------------------------------------------
# Iterative optimisation against analytic optima.
# --------------------------------------------------------------------------
def _quadratic(seed, num_tasks=4, lo=1.0, hi=4.0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(num_tasks, num_tasks)))
    a = (q * np.linspace(lo, hi, num_tasks)) @ q.T
    c = rng.normal(size=num_tasks)
    return a.astype(np.float32), c.astype(np.float32)


@pytest.mark.parametrize("penalty", [0.0, 0.3, 2.0])
def test_optimize_reaches_quadratic_optimum_with_squared_penalty(penalty):
    a, c = _quadratic(0)
    loss = lambda z: 0.5 * (z - c) @ a @ (z - c)  # noqa: E731
    z0 = inference.max_entropy_latent(4)
    anchor = jnp.asarray([0.1, -0.2, 0.3, 0.0])
    lr = 1.0 / (4.0 + 2.0 * penalty)  # 1 / Lipschitz constant of the objective
    num_steps = 150
    z_final, trace = inference.optimize(loss, z0, optax.sgd(lr), num_steps, penalty=penalty,
                                        anchor=anchor, penalty_kind="squared")
    # Optimum of 0.5 (z-c)^T A (z-c) + lam ||z - anchor||^2.
    want = np.linalg.solve(a + 2 * penalty * np.eye(4), a @ c + 2 * penalty * np.asarray(anchor))
    np.testing.assert_allclose(z_final, want, rtol=1e-4, atol=1e-5)

    chex.assert_shape(trace.loss, (num_steps,))
    chex.assert_shape(trace.objective, (num_steps,))
    chex.assert_shape(trace.z, (num_steps, 4))
    chex.assert_shape(trace.grad_norm, (num_steps,))
    np.testing.assert_allclose(trace.z[-1], z_final)
    # Trace fields are evaluated at the latent before each update.
    z_before = np.concatenate([np.asarray(z0)[None], np.asarray(trace.z[:-1])])
    np.testing.assert_allclose(trace.loss, [loss(z) for z in z_before], rtol=1e-5, atol=1e-6)
    pen = np.sum((z_before - np.asarray(anchor)) ** 2, axis=1)
    np.testing.assert_allclose(trace.objective, np.asarray(trace.loss) + penalty * pen,
                               rtol=1e-5, atol=1e-6)
    grads = (z_before - c) @ a + 2 * penalty * (z_before - np.asarray(anchor))
    np.testing.assert_allclose(trace.grad_norm, np.linalg.norm(grads, axis=1), rtol=1e-4,
                               atol=1e-6)
    # Gradient descent with step <= 1/L never increases a convex quadratic objective.
    assert np.all(np.diff(np.asarray(trace.objective)) <= 1e-6)


def test_optimize_norm_penalty_reaches_shrinkage_optimum():
    """Isotropic loss a/2 ||z - c||^2 + lam ||z - anchor|| is minimised at
    anchor + (1 - lam / (a r)) (c - anchor), r = ||c - anchor|| (when lam < a r)."""
    a_scale, num_tasks = 2.0, 3
    c = jnp.asarray([1.0, -0.5, 0.8])
    z0 = inference.max_entropy_latent(num_tasks)  # also the default anchor
    r = float(jnp.linalg.norm(c - z0))
    lam = 0.4 * a_scale * r
    z_final, trace = inference.optimize(lambda z: 0.5 * a_scale * jnp.sum((z - c) ** 2), z0,
                                        optax.sgd(0.5 / a_scale), 60, penalty=lam)
    want = z0 + (1 - lam / (a_scale * r)) * (c - z0)
    np.testing.assert_allclose(z_final, want, rtol=1e-5, atol=1e-6)
    assert np.all(np.diff(np.asarray(trace.objective)) <= 1e-6)


def test_optimize_matches_hand_written_optax_loop():
    params = _decoder(3)
    x = _data(4, (6,))
    loss = lambda z: _decoder_loss(params, z, x)  # noqa: E731
    z0 = inference.max_entropy_latent(4)
    opt = optax.sgd(0.3, momentum=0.5)
    z_final, trace = inference.optimize(loss, z0, opt, 7, penalty=0.05)
    z, state = z0, opt.init(z0)
    for i in range(7):
        np.testing.assert_allclose(trace.loss[i], loss(z), rtol=1e-5)
        d = z - z0
        pen_grad = d / jnp.linalg.norm(d) if i > 0 else jnp.zeros_like(d)  # 'norm' kind
        updates, state = opt.update(jax.grad(loss)(z) + 0.05 * pen_grad, state, z)
        z = optax.apply_updates(z, updates)
        np.testing.assert_allclose(trace.z[i], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z_final, z, rtol=1e-5, atol=1e-6)


def test_optimize_zero_steps_returns_initial_latent():
    z0 = inference.max_entropy_latent(3)
    z_final, trace = inference.optimize(lambda z: jnp.sum(z**2), z0, optax.sgd(0.1), 0)
    np.testing.assert_array_equal(z_final, z0)
    chex.assert_shape(trace.z, (0, 3))


# --------------------------------------------------------------------------
# Gradients against finite differences (float64, scoped so x64 does not leak).
# --------------------------------------------------------------------------
@pytest.mark.float64
def test_one_step_grad_matches_central_differences():
    with jax.enable_x64(True):
        params = tuple(jnp.asarray(p) for p in _decoder(5, dtype=np.float64))
        x = jnp.asarray(_data(6, (6,), np.float64))
        loss = lambda z: _decoder_loss(params, z, x)  # noqa: E731
        eps = 1e-6
        for z in (inference.max_entropy_latent(4, dtype=jnp.float64),
                  jnp.asarray(_data(7, (4,), np.float64))):
            res = inference.one_step(loss, z)
            assert res.grad.dtype == jnp.float64
            eye = jnp.eye(4, dtype=jnp.float64)
            fd = np.array([(loss(z + eps * e) - loss(z - eps * e)) / (2 * eps) for e in eye])
            np.testing.assert_allclose(res.grad, fd, rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(res.scores, -fd, rtol=1e-7, atol=1e-9)
    assert jnp.zeros(1).dtype == jnp.float32  # x64 did not leak


@pytest.mark.float64
def test_l2_penalty_gradients():
    with jax.enable_x64(True):
        anchor = jnp.asarray([0.25, 0.25, 0.25, 0.25])
        z = jnp.asarray([0.9, -0.1, 0.3, 0.2])
        for kind in ("norm", "squared"):
            check_grads(jax.jit(lambda q, k=kind: inference.l2_penalty(q, anchor, k)), (z,),
                        order=1, modes=("fwd", "rev"), eps=1e-6)
        # The 'norm' kind has gradient 0 (not NaN) at the anchor.
        np.testing.assert_array_equal(jax.grad(inference.l2_penalty)(anchor, anchor, "norm"),
                                      np.zeros(4))
        with pytest.raises(ValueError, match="penalty kind must be 'norm' or 'squared'"):
            inference.l2_penalty(z, anchor, "l1")


@pytest.mark.float64
def test_differentiating_through_primitives_matches_finite_differences():
    """Meta-gradients through the scans (e.g. w.r.t. data or decoder weights)."""
    with jax.enable_x64(True):
        params = tuple(jnp.asarray(p) for p in _decoder(8, dtype=np.float64))
        z0 = inference.max_entropy_latent(4, dtype=jnp.float64)
        x = jnp.asarray(_data(9, (6,), np.float64))
        opt = optax.sgd(0.2, momentum=0.5)

        def optimized(xx):
            return inference.optimize(lambda z: _decoder_loss(params, z, xx), z0, opt, 4,
                                      penalty=0.1, penalty_kind="squared")[0]

        def ood(xx):
            s = inference.ood_scores(lambda z: _decoder_loss(params, z, xx), z0,
                                     temperature=0.5, step_size=0.3)
            return jnp.stack([s.loss, s.max_score, s.grad_norm, s.posterior_entropy,
                              s.loss_after_step])

        seq = jnp.asarray(_data(10, (5, 6), np.float64))

        def online_final(ss):
            def window_loss(z, obs, mask):
                per = jax.vmap(lambda o: _decoder_loss(params, z, o))(obs)
                return jnp.sum(jnp.where(mask, per, 0.0)), None
            return inference.online(window_loss, z0, ss, opt, window=2, num_steps=2)[0]

        # jit so that each finite-difference evaluation reuses one compiled program.
        check_grads(jax.jit(optimized), (x,), order=1, modes=("fwd", "rev"), eps=1e-6)
        check_grads(jax.jit(ood), (x,), order=1, modes=("rev",), eps=1e-6)
        check_grads(jax.jit(online_final), (seq,), order=1, modes=("rev",), eps=1e-6)


# --------------------------------------------------------------------------
# jit / no-jit / vmap / Python-loop agreement.
# --------------------------------------------------------------------------
_PARAMS = _decoder(11)
_X = _data(12, (5, 6))
_SEQ = _data(13, (7, 6))
_Z0 = inference.max_entropy_latent(4)
_OPT = optax.sgd(0.3, momentum=0.5)


def _window_loss(z, obs, mask):
    per = jax.vmap(lambda o: _decoder_loss(_PARAMS, z, o))(obs)
    return jnp.sum(jnp.where(mask, per, 0.0)), per[-1]


class JitAgreementTest(chex.TestCase):
    """Each primitive under jit and without jit matches a plain reference."""

    @chex.variants(with_jit=True, without_jit=True)
    def test_one_step(self):
        fn = self.variant(lambda x: inference.one_step(
            lambda z: _decoder_loss(_PARAMS, z, x), _Z0, temperature=0.5))
        res = fn(_X[0])
        g = jax.grad(lambda z: _decoder_loss(_PARAMS, z, _X[0]))(_Z0)
        np.testing.assert_allclose(res.grad, g, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.posterior, jax.nn.softmax(-g / 0.5), rtol=1e-5)
        self.assertEqual(int(res.prediction), int(np.argmax(-g)))

    @chex.variants(with_jit=True, without_jit=True)
    def test_optimize(self):
        fn = self.variant(lambda x: inference.optimize(
            lambda z: _decoder_loss(_PARAMS, z, x), _Z0, _OPT, 6, penalty=0.1))
        z_final, trace = fn(_X[0])
        ref_final, ref_trace = jax.jit(lambda x: inference.optimize(
            lambda z: _decoder_loss(_PARAMS, z, x), _Z0, _OPT, 6, penalty=0.1))(_X[0])
        chex.assert_trees_all_close((z_final, trace), (ref_final, ref_trace), rtol=1e-5,
                                    atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_online(self):
        fn = self.variant(lambda s: inference.online(_window_loss, _Z0, s, _OPT, window=3,
                                                     num_steps=2, penalty=0.05))
        z_final, trace = fn(_SEQ)
        ref_z, ref_losses = _online_reference(_window_loss, _Z0, _SEQ, _OPT, window=3,
                                              num_steps=2, penalty=0.05, kind="norm")
        np.testing.assert_allclose(trace.z, ref_z, rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(trace.loss, ref_losses, rtol=1e-4, atol=2e-5)
        np.testing.assert_allclose(z_final, ref_z[-1], rtol=1e-4, atol=2e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ood_scores(self):
        fn = self.variant(lambda x: inference.ood_scores(
            lambda z: _decoder_loss(_PARAMS, z, x), _Z0, temperature=0.5, step_size=0.2))
        s = fn(_X[1])
        loss = lambda z: _decoder_loss(_PARAMS, z, _X[1])  # noqa: E731
        g = jax.grad(loss)(_Z0)
        p = jax.nn.softmax(-g / 0.5)
        np.testing.assert_allclose(s.loss, loss(_Z0), rtol=1e-6)
        np.testing.assert_allclose(s.max_score, jnp.max(-g), rtol=1e-5)
        np.testing.assert_allclose(s.grad_norm, jnp.linalg.norm(g), rtol=1e-5)
        np.testing.assert_allclose(s.posterior_entropy, -jnp.sum(p * jnp.log(p)), rtol=1e-5)
        np.testing.assert_allclose(s.loss_after_step, loss(_Z0 - 0.2 * g), rtol=1e-5)


def test_vmap_matches_python_loop():
    # The single-example functions are jitted so the Python loop reuses one program.
    single_one_step = jax.jit(lambda x: inference.one_step(
        lambda z: _decoder_loss(_PARAMS, z, x), _Z0))
    single_optimize = jax.jit(lambda x: inference.optimize(
        lambda z: _decoder_loss(_PARAMS, z, x), _Z0, _OPT, 5, penalty=0.1))
    single_ood = jax.jit(lambda x: inference.ood_scores(
        lambda z: _decoder_loss(_PARAMS, z, x), _Z0))
    seqs = np.stack([_SEQ, _SEQ[::-1], 2 * _SEQ])
    single_online = jax.jit(lambda s: inference.online(_window_loss, _Z0, s, _OPT, window=2))

    cases = [(single_one_step, _X), (single_optimize, _X), (single_ood, _X),
             (single_online, seqs)]
    for fn, inputs in cases:
        batched = jax.vmap(fn)(inputs)
        looped = [fn(inputs[i]) for i in range(len(inputs))]
        stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *looped)
        chex.assert_trees_all_close(batched, stacked, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Online inference.
# --------------------------------------------------------------------------
def _online_reference(loss_fn, z0, seq, opt, *, window, num_steps, penalty, kind):
    """Hand-written online protocol: window of the last H observations (zero
    padded, masked), loss at the carried-in latent, then num_steps optax updates."""
    seq = np.asarray(seq)
    padded = np.concatenate([np.zeros((window - 1,) + seq.shape[1:], seq.dtype), seq])
    z, state = z0, opt.init(z0)
    zs, losses = [], []
    for t in range(len(seq)):
        obs = padded[t:t + window]
        mask = np.arange(window) >= window - 1 - t
        f = lambda q: loss_fn(q, obs, mask)[0]  # noqa: E731
        losses.append(f(z))
        for _ in range(num_steps):
            d = z - z0
            if kind == "squared":
                pen_grad = 2 * d
            else:
                n = jnp.linalg.norm(d)
                pen_grad = jnp.where(n > 0, d / jnp.where(n > 0, n, 1.0), 0.0)
            updates, state = opt.update(jax.grad(f)(z) + penalty * pen_grad, state, z)
            z = optax.apply_updates(z, updates)
        zs.append(z)
    return np.stack(zs), np.array(losses)


def test_online_window_one_equals_optax_loop_on_current_observation():
    w = _data(20, (3, 4))
    seq = _data(21, (9, 3))
    z0 = inference.max_entropy_latent(4)
    opt = optax.sgd(0.2, momentum=0.7)

    def current_only(z, obs, mask):
        del mask
        return 0.5 * jnp.sum((obs[0] - w @ z) ** 2), obs[0]

    z_final, trace = inference.online(current_only, z0, seq, opt, window=1)
    z, state = z0, opt.init(z0)
    for t in range(9):
        loss = lambda q: 0.5 * jnp.sum((seq[t] - w @ q) ** 2)  # noqa: E731
        np.testing.assert_allclose(trace.loss[t], loss(z), rtol=1e-5)
        np.testing.assert_allclose(trace.grad[t], jax.grad(loss)(z), rtol=1e-5, atol=1e-6)
        updates, state = opt.update(jax.grad(loss)(z), state, z)
        z = optax.apply_updates(z, updates)
        np.testing.assert_allclose(trace.z[t], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(trace.aux, seq)  # aux of the newest observation
    np.testing.assert_allclose(z_final, z, rtol=1e-5, atol=1e-6)


def test_online_mask_marks_padded_entries_at_start():
    window, length = 4, 6
    seq = np.arange(1.0, length + 1, dtype=np.float32)

    def loss_fn(z, obs, mask):
        return jnp.sum(z) * jnp.sum(jnp.where(mask, obs, 0.0)), (obs, mask)

    _, trace = inference.online(loss_fn, inference.max_entropy_latent(2), seq, optax.sgd(0.0),
                                window=window)
    obs, mask = trace.aux
    chex.assert_shape(obs, (length, window))
    chex.assert_shape(mask, (length, window))
    for t in range(length):
        want_mask = np.arange(window) >= window - 1 - t
        np.testing.assert_array_equal(mask[t], want_mask)
        np.testing.assert_array_equal(np.asarray(obs[t])[~want_mask], 0.0)  # zero padding
        np.testing.assert_array_equal(np.asarray(obs[t])[want_mask],
                                      seq[max(0, t - window + 1):t + 1])


@pytest.mark.parametrize("num_steps,kind", [(1, "squared"), (3, "squared"), (3, "norm")])
def test_online_num_steps_equals_sequential_updates(num_steps, kind):
    z_final, trace = inference.online(_window_loss, _Z0, _SEQ, _OPT, window=3,
                                      num_steps=num_steps, penalty=0.1, penalty_kind=kind)
    ref_z, ref_losses = _online_reference(_window_loss, _Z0, _SEQ, _OPT, window=3,
                                          num_steps=num_steps, penalty=0.1, kind=kind)
    np.testing.assert_allclose(trace.z, ref_z, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(trace.loss, ref_losses, rtol=1e-4, atol=2e-5)
    np.testing.assert_allclose(z_final, ref_z[-1], rtol=1e-4, atol=2e-5)


# --------------------------------------------------------------------------
# Per-example latents (never a batch-mean loss with a shared latent).
# --------------------------------------------------------------------------
def _example_loss(z, x):
    return _decoder_loss(_PARAMS, z, x)


_one_step_batch = jax.jit(lambda z0, x: inference.one_step_batch(_example_loss, z0, x))
_one_step_single = jax.jit(lambda x: inference.one_step(lambda z: _example_loss(z, x), _Z0))


def test_one_step_batch_gives_per_example_gradients():
    res = _one_step_batch(_Z0, _X)
    chex.assert_shape(res.grad, (5, 4))
    chex.assert_shape(res.prediction, (5,))
    for i in range(5):
        single = _one_step_single(_X[i])
        np.testing.assert_allclose(res.grad[i], single.grad, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(res.loss[i], single.loss, rtol=1e-6)

    # Changing one example changes only its own row.
    x2 = _X.copy()
    x2[2] += 1.0
    res2 = _one_step_batch(_Z0, x2)
    keep = np.arange(5) != 2
    np.testing.assert_array_equal(res2.grad[keep], res.grad[keep])
    assert not np.allclose(res2.grad[2], res.grad[2])

    # A shared latent with a batch-mean loss would give the mean row for everyone.
    shared = inference.one_step(lambda z: jnp.mean(jax.vmap(_example_loss, (None, 0))(z, _X)),
                                _Z0)
    np.testing.assert_allclose(shared.grad, np.mean(res.grad, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(res.grad, shared.grad[None])

    # Documented alternative: a [B, K] latent with a SUMMED loss.
    zb = jnp.broadcast_to(_Z0, (5, 4))
    summed = inference.one_step(lambda z: jnp.sum(jax.vmap(_example_loss)(z, _X)), zb)
    np.testing.assert_allclose(summed.grad, res.grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(summed.prediction, res.prediction)

    # [B, K] starting latents are used as given.
    zs = jnp.asarray(_data(30, (5, 4)))
    res_z = _one_step_batch(zs, _X)
    np.testing.assert_allclose(
        res_z.grad[3], jax.grad(_example_loss)(zs[3], _X[3]), rtol=1e-5, atol=1e-6)


def test_per_example_broadcasts_shared_latent_and_takes_pytree_batches():
    def fn(z, example):
        return jax.grad(lambda q: _decoder_loss(_PARAMS, q, example["x"]) * example["w"])(z)

    batch = {"x": _X, "w": np.linspace(0.5, 2.0, 5).astype(np.float32)}
    got = inference.per_example(fn)(_Z0, batch)
    chex.assert_shape(got, (5, 4))
    for i in range(5):
        np.testing.assert_allclose(got[i], fn(_Z0, {"x": _X[i], "w": batch["w"][i]}),
                                   rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="non-empty batch"):
        inference.per_example(fn)(_Z0, {})


def test_optimize_batch_is_per_example():
    z_final, trace = inference.optimize_batch(_example_loss, _Z0, _X, _OPT, 4, penalty=0.1)
    chex.assert_shape(z_final, (5, 4))
    chex.assert_shape(trace.z, (5, 4, 4))
    x2 = _X.copy()
    x2[0] -= 1.0
    z_final2, _ = inference.optimize_batch(_example_loss, _Z0, x2, _OPT, 4, penalty=0.1)
    np.testing.assert_array_equal(z_final2[1:], z_final[1:])
    assert not np.allclose(z_final2[0], z_final[0])
    single, _ = inference.optimize(lambda z: _example_loss(z, _X[3]), _Z0, _OPT, 4, penalty=0.1)
    np.testing.assert_allclose(z_final[3], single, rtol=1e-5, atol=1e-6)


def test_optimize_batch_with_per_example_anchor():
    anchors = jnp.asarray(_data(31, (5, 4)))
    z_final, _ = inference.optimize_batch(_example_loss, _Z0, _X, _OPT, 4, penalty=0.5,
                                          anchor=anchors, penalty_kind="squared")
    single, _ = inference.optimize(lambda z: _example_loss(z, _X[2]), _Z0, _OPT, 4, penalty=0.5,
                                   anchor=anchors[2], penalty_kind="squared")
    np.testing.assert_allclose(z_final[2], single, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Property tests.
# --------------------------------------------------------------------------
@jax.jit
def _properties_run(w, x, temperature):
    z0 = inference.max_entropy_latent(w.shape[1])
    loss = lambda z, xi: 0.5 * jnp.sum((xi - jnp.tanh(w @ z)) ** 2)  # noqa: E731
    res = inference.one_step_batch(loss, z0, x, temperature=temperature)
    return res, inference.entropy(res.posterior)


@settings(max_examples=25, deadline=None)
@given(num_tasks=st.integers(2, 12), batch=st.sampled_from([1, 3, 8]),
       temperature=st.floats(0.05, 20.0), seed=st.integers(0, 2**16))
def test_one_step_properties(num_tasks, batch, temperature, seed):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(5, num_tasks)).astype(np.float32)
    x = rng.normal(size=(batch, 5)).astype(np.float32)
    # One compilation per (K, batch); the temperature is traced, so the second call
    # reuses it. Results go to NumPy so the checks below compile nothing.
    res, ent = jax.tree_util.tree_map(np.asarray, _properties_run(w, x, np.float32(temperature)))
    res_t1, _ = jax.tree_util.tree_map(np.asarray, _properties_run(w, x, np.float32(1.0)))

    assert res.posterior.shape == (batch, num_tasks)
    np.testing.assert_allclose(np.sum(res.posterior, axis=-1), 1.0, rtol=1e-5)
    assert np.all(res.posterior >= 0)
    np.testing.assert_array_equal(res.scores, -res.grad)
    # prediction is an argmax of the posterior (ties after rounding allowed) ...
    post = res.posterior
    np.testing.assert_array_equal(post[np.arange(batch), res.prediction], post.max(axis=-1))
    np.testing.assert_array_equal(res.prediction, np.argmax(res.scores, axis=-1))
    # ... and does not depend on the temperature.
    np.testing.assert_array_equal(res.prediction, res_t1.prediction)
    assert res.prediction.dtype == np.int32
    # A sharper temperature gives a sharper posterior; entropy stays in [0, log K].
    assert np.all(ent >= -1e-5) and np.all(ent <= np.log(num_tasks) + 1e-5)
    if temperature < 1.0:
        assert np.all(post.max(-1) >= res_t1.posterior.max(-1) - 1e-6)


# --------------------------------------------------------------------------
# Bad input.
# --------------------------------------------------------------------------
def _quad(z):
    return jnp.sum(z**2)


def test_fewer_than_two_tasks_is_rejected():
    with pytest.raises(ValueError, match="num_tasks must be an integer >= 2"):
        inference.max_entropy_latent(1)
    with pytest.raises(ValueError, match="K >= 2"):
        inference.one_step(_quad, jnp.ones(1))
    with pytest.raises(ValueError, match="K >= 2"):
        inference.one_step(_quad, jnp.ones(()))
    with pytest.raises(ValueError, match="K >= 2"):
        inference.one_step_batch(lambda z, x: jnp.sum((z - x) ** 2), jnp.ones((3, 1)),
                                 jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="K >= 2"):
        inference.ood_scores(_quad, jnp.ones(1))
    with pytest.raises(ValueError, match="parameterization must be 'probs' or 'logits'"):
        inference.max_entropy_latent(3, parameterization="simplex")


@pytest.mark.parametrize("which", ["optimize", "optimize_batch", "online"])
def test_iterative_primitives_reject_single_task_latent(which):
    z1 = jnp.ones(1)
    with pytest.raises(ValueError, match="K >= 2"):
        if which == "optimize":
            inference.optimize(_quad, z1, optax.sgd(0.1), 2)
        elif which == "optimize_batch":
            inference.optimize_batch(lambda z, x: jnp.sum((z - x) ** 2), z1, jnp.ones((3, 1)),
                                     optax.sgd(0.1), 2)
        else:
            inference.online(lambda z, o, m: (jnp.sum(z * o[0]), None), z1, jnp.ones(4),
                             optax.sgd(0.1), window=2)


def test_bad_step_counts_and_windows_are_rejected():
    z0 = inference.max_entropy_latent(3)
    window_loss = lambda z, o, m: (jnp.sum(z) * jnp.sum(o), None)  # noqa: E731
    with pytest.raises(ValueError, match="num_steps must be an integer >= 0"):
        inference.optimize(_quad, z0, optax.sgd(0.1), -1)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 0"):
        inference.optimize(_quad, z0, optax.sgd(0.1), 2.5)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        inference.online(window_loss, z0, jnp.ones(4), optax.sgd(0.1), window=2, num_steps=-1)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        inference.online(window_loss, z0, jnp.ones(4), optax.sgd(0.1), window=2, num_steps=0)
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        inference.online(window_loss, z0, jnp.ones(4), optax.sgd(0.1), window=0)
    with pytest.raises(ValueError, match="window must be an integer >= 1"):
        inference.online(window_loss, z0, jnp.ones(4), optax.sgd(0.1), window=2.5)
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        inference.online(window_loss, z0, jnp.ones(4), optax.sgd(0.1), window=2, num_steps=1.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        inference.one_step(_quad, z0, temperature=0.0)


def test_non_scalar_loss_is_rejected():
    z0 = inference.max_entropy_latent(3)
    vector_loss = lambda z: z**2  # noqa: E731
    with pytest.raises(ValueError, match="scalar"):
        inference.one_step(vector_loss, z0)
    with pytest.raises((TypeError, ValueError), match="scalar"):
        inference.one_step_batch(lambda z, x: z * x, z0, jnp.ones((2, 3)))
    with pytest.raises((TypeError, ValueError), match="scalar"):
        inference.optimize(vector_loss, z0, optax.sgd(0.1), 2)
    with pytest.raises((TypeError, ValueError), match="scalar"):
        inference.ood_scores(vector_loss, z0)
    with pytest.raises((TypeError, ValueError), match="scalar"):
        inference.online(lambda z, o, m: (z * o[0], None), z0, jnp.ones(4), optax.sgd(0.1),
                         window=2)


@pytest.mark.parametrize("n, chunk", [(10, 4), (12, 4), (5, 8)])
def test_chunked_batches_equal_unchunked(n, chunk):
    """chunk_size only changes the schedule (lax.map over vmap chunks), not results."""
    key = jax.random.PRNGKey(0)
    w = jax.random.normal(key, (3, 5))
    # A zero-width leaf (a model input with no features) must survive the reshapes.
    xs = {"x": jax.random.normal(jax.random.fold_in(key, 1), (n, 5)), "empty": jnp.zeros((n, 0))}
    loss = lambda z, ex: jnp.sum((z @ w - ex["x"]) ** 2) + jnp.sum(ex["empty"])  # noqa: E731
    z0 = inference.max_entropy_latent(3)
    a = inference.optimize_batch(loss, z0, xs, optax.adam(0.1), 7)
    b = inference.optimize_batch(loss, z0, xs, optax.adam(0.1), 7, chunk_size=chunk)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert u.shape == v.shape
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
    c = inference.one_step_batch(loss, z0, xs)
    d = inference.one_step_batch(loss, z0, xs, chunk_size=chunk)
    np.testing.assert_allclose(c.grad, d.grad, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="chunk_size"):
        inference.one_step_batch(loss, z0, xs, chunk_size=0)


@pytest.mark.parametrize("chunk", [None, 2])
def test_batch_outputs_compute_only_the_named_fields(chunk):
    """outputs= keeps the named OneStepResult fields, equal to the full result's, and
    sets the others to None, for one-step and exhaustive scoring, chunked or not."""
    full = _one_step_batch(_Z0, _X)
    for names in (("prediction",), ("scores", "loss"), "posterior"):
        got = inference.one_step_batch(_example_loss, _Z0, _X, outputs=names, chunk_size=chunk)
        kept = (names,) if isinstance(names, str) else names
        for f in inference.OneStepResult._fields:
            if f in kept:
                np.testing.assert_allclose(getattr(got, f), getattr(full, f), rtol=1e-5,
                                           atol=1e-6)
            else:
                assert getattr(got, f) is None, f
    ex = inference.exhaustive_batch(_example_loss, 4, _X, chunk_size=chunk)
    ex_p = inference.exhaustive_batch(_example_loss, 4, _X, outputs=["prediction"],
                                      chunk_size=chunk)
    np.testing.assert_array_equal(ex_p.prediction, ex.prediction)
    assert ex_p.grad is None and ex_p.loss is None
    for bad in (("preds",), ()):
        with pytest.raises(ValueError, match="outputs must name fields of OneStepResult"):
            inference.one_step_batch(_example_loss, _Z0, _X, outputs=bad)
    with pytest.raises(ValueError, match="outputs must name fields"):
        inference.exhaustive_batch(_example_loss, 4, _X, outputs="grads")


def test_auto_chunk_size_is_cache_blocking_on_cpu_only(monkeypatch):
    assert inference.resolve_chunk_size(7) == 7 and inference.resolve_chunk_size(None) is None
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert inference.resolve_chunk_size("auto") == inference.CPU_CHUNK_SIZE
    for accelerator in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda a=accelerator: a)
        assert inference.resolve_chunk_size("auto") is None
    with pytest.raises(ValueError, match="chunk_size"):
        inference.per_example(lambda z, x: z, chunk_size="fast")


def _latent_only_decoder(n=48, k=5, out=20):
    """A decoder of ``z`` alone (empty per-example inputs) and a squared-error loss."""
    from gbi_jax.models import MLP

    model = MLP(hidden=(32, 24), out_features=out)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((0,)), jnp.zeros((k,)))
    batch = {"inputs": jnp.zeros((n, 0)),
             "x": jax.random.normal(jax.random.PRNGKey(1), (n, out))}

    def loss(z, ex):
        return jnp.sum((model.apply(params, ex["inputs"], z) - ex["x"]) ** 2)

    return loss, batch


def _dot_shapes(jaxpr):
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn.outvars[0].aval.shape
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _dot_shapes(sub)


@pytest.mark.parametrize("chunk", [None, 16])
def test_shared_latent_forward_runs_once_not_per_example(chunk):
    """Reverse-mode one-step inference from one shared latent through a decoder of z
    alone: the decoder's forward products take the latent unbatched (once per chunk),
    only the backward products are per example; the gradients are still each example's
    own."""
    n = 64
    loss, batch = _latent_only_decoder(n=n)
    z0 = inference.max_entropy_latent(5)
    run = lambda b: inference.one_step_batch(loss, z0, b, chunk_size=chunk,  # noqa: E731
                                             grad_mode="reverse")

    shapes = list(_dot_shapes(jax.make_jaxpr(run)(batch).jaxpr))
    rows = n if chunk is None else chunk
    assert sorted(s for s in shapes if len(s) == 1) == [(20,), (24,), (32,)]  # forward
    assert sorted(s for s in shapes if len(s) == 2) == [(rows, 5), (rows, 24), (rows, 32)]
    got = run(batch)
    for i in (0, 17, 63):
        want = jax.grad(loss)(z0, {"inputs": batch["inputs"][i], "x": batch["x"][i]})
        np.testing.assert_allclose(got.grad[i], want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# Forward-mode one-step gradients and grad_mode="auto".
# --------------------------------------------------------------------------
def test_forward_mode_one_step_equals_reverse_and_finite_differences():
    z0 = jnp.asarray([0.1, 0.5, 0.2, 0.2], jnp.float32)
    fn = lambda z: _decoder_loss(_PARAMS, z, _X[1])  # noqa: E731
    fwd = inference.one_step(fn, z0, grad_mode="forward")
    rev = inference.one_step(fn, z0, grad_mode="reverse")
    np.testing.assert_allclose(fwd.grad, rev.grad, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fwd.loss, rev.loss, rtol=1e-6)
    np.testing.assert_array_equal(fwd.prediction, rev.prediction)
    eps = 1e-3
    z64 = np.asarray(z0, np.float64)
    w, b, v = (np.asarray(a, np.float64) for a in _PARAMS)
    f64 = lambda z: 0.5 * np.sum((_X[1] - v @ np.tanh(w @ z + b)) ** 2)  # noqa: E731
    fd = [(f64(z64 + eps * e) - f64(z64 - eps * e)) / (2 * eps) for e in np.eye(4)]
    np.testing.assert_allclose(fwd.grad, fd, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("chunk", [None, 16])
def test_one_step_batch_forward_mode_shares_the_latent_work(chunk):
    """Forward mode from a shared latent through a decoder of z alone: every matrix
    product is unbatched over examples (the decoder and its K tangents run once per
    chunk); each example keeps its own gradient, equal to reverse mode's."""
    loss, batch = _latent_only_decoder()
    z0 = inference.max_entropy_latent(5)
    run = lambda b, mode: inference.one_step_batch(  # noqa: E731
        loss, z0, b, chunk_size=chunk, grad_mode=mode)
    shapes = list(_dot_shapes(jax.make_jaxpr(lambda b: run(b, "forward"))(batch).jaxpr))
    rows = 48 if chunk is None else chunk
    assert shapes and all(rows not in s for s in shapes), shapes
    rev_shapes = list(_dot_shapes(jax.make_jaxpr(lambda b: run(b, "reverse"))(batch).jaxpr))
    assert any(s[0] == rows for s in rev_shapes if len(s) == 2)
    fwd, rev = run(batch, "forward"), run(batch, "reverse")
    np.testing.assert_allclose(fwd.grad, rev.grad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fwd.loss, rev.loss, rtol=1e-6)
    np.testing.assert_array_equal(fwd.prediction, rev.prediction)
    np.testing.assert_allclose(fwd.posterior, rev.posterior, rtol=1e-5, atol=1e-7)


def test_grad_mode_auto_picks_forward_only_where_it_saves_work():
    loss, batch = _latent_only_decoder()
    z0 = inference.max_entropy_latent(5)
    assert inference.choose_grad_mode(loss, z0, batch) == "forward"
    # Per-example latents: nothing is shared, reverse mode.
    zb = jnp.broadcast_to(z0, (48, 5))
    assert inference.choose_grad_mode(loss, zb, batch) == "reverse"
    # Per-example inputs feeding the first layer (an encoder's features): the forward
    # pass is each example's own, and K tangents of it cost more than one backward.
    from gbi_jax.models import MLP

    model = MLP(hidden=(64, 64), out_features=20)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((30,)), jnp.zeros((8,)))
    enc = {"inputs": jax.random.normal(jax.random.PRNGKey(2), (48, 30)),
           "x": jax.random.normal(jax.random.PRNGKey(3), (48, 20))}

    def enc_loss(z, ex):
        return jnp.sum((model.apply(params, ex["inputs"], z) - ex["x"]) ** 2)

    assert inference.choose_grad_mode(enc_loss, inference.max_entropy_latent(8), enc) == "reverse"
    # "auto" runs the chosen program: same shapes as forward mode, same gradients.
    auto = jax.make_jaxpr(lambda b: inference.one_step_batch(loss, z0, b, chunk_size=None))(batch)
    fwd = jax.make_jaxpr(lambda b: inference.one_step_batch(loss, z0, b, chunk_size=None,
                                                            grad_mode="forward"))(batch)
    assert list(_dot_shapes(auto.jaxpr)) == list(_dot_shapes(fwd.jaxpr))


def test_grad_mode_errors():
    fn = lambda z: _decoder_loss(_PARAMS, z, _X[0])  # noqa: E731
    with pytest.raises(ValueError, match="grad_mode must be one of 'reverse', 'forward'"):
        inference.one_step(fn, _Z0, grad_mode="auto")
    with pytest.raises(ValueError, match="grad_mode must be one of"):
        inference.one_step_batch(_example_loss, _Z0, _X, grad_mode="jvp")
    zb = jnp.broadcast_to(_Z0, (5, 4))
    with pytest.raises(ValueError, match=r"unbatched \[K\] latent"):
        inference.one_step(lambda z: jnp.sum(jax.vmap(_example_loss)(z, _X)), zb,
                           grad_mode="forward")
    # Per-example [B, K] latents may still use forward mode in one_step_batch.
    got = inference.one_step_batch(_example_loss, zb, _X, grad_mode="forward")
    np.testing.assert_allclose(got.grad, _one_step_batch(_Z0, _X).grad, rtol=1e-5, atol=1e-6)


def test_program_cost_counts_products_and_scans():
    a, b, bt = jnp.ones((7, 5)), jnp.ones((5, 3)), jnp.ones((3, 5))
    assert inference._program_cost(jnp.dot, a, b) == 2 * 7 * 5 * 3

    def scanned(x):
        return jax.lax.scan(lambda c, _: (c @ b @ bt, None), x, None, length=4)[0]

    one = inference._program_cost(lambda x: x @ b @ bt, a)
    assert one == 2 * (2 * 7 * 5 * 3)
    assert inference._program_cost(scanned, a) == 4 * one
    # Elementwise work counts its size.
    assert inference._program_cost(jnp.tanh, a) == 35


def test_grad_mode_auto_keeps_reverse_for_a_loss_without_forward_mode():
    """A loss through a custom_vjp function has no jvp: 'auto' must keep reverse mode
    (and run), while an explicit 'forward' fails as JAX does."""
    @jax.custom_vjp
    def clip_grad(x):
        return x

    clip_grad.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))
    loss, batch = _latent_only_decoder()
    wrapped = lambda z, ex: loss(clip_grad(z), ex)  # noqa: E731
    z0 = inference.max_entropy_latent(5)
    assert inference.choose_grad_mode(wrapped, z0, batch) == "reverse"
    got = inference.one_step_batch(wrapped, z0, batch, chunk_size=None)
    want = inference.one_step_batch(loss, z0, batch, chunk_size=None, grad_mode="reverse")
    np.testing.assert_allclose(got.grad, jnp.clip(want.grad, -1.0, 1.0), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError):
        inference.one_step_batch(wrapped, z0, batch, chunk_size=None, grad_mode="forward")
