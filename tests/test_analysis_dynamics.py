"""Tests for gbi_jax.analysis.dynamics: fixed points, stability, tuning and sparsity."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gbi_jax.analysis import dynamics as dyn

H = 6
_RNG = np.random.default_rng(0)
_BASIS, _ = np.linalg.qr(_RNG.normal(size=(H, H)))  # orthonormal columns


def _linear_map(eigenvalues):
    return jnp.asarray(_BASIS @ np.diag(eigenvalues) @ _BASIS.T, jnp.float32)


_CONTRACTION = _linear_map([0.5, 0.3, -0.2, 0.6, 0.1, 0.4])
_OFFSET = jnp.asarray(_RNG.normal(size=H), jnp.float32)
_PLANE = _linear_map([1.0, 1.0, 0.5, 0.3, -0.4, 0.2])  # fixed points: span of columns 0, 1


_AFFINE = {"a": _CONTRACTION, "b": _OFFSET}
_PLANE_PARAMS = {"a": _PLANE, "b": jnp.zeros(H, jnp.float32)}
_TRACES = []


# One module-level step function for every network: the parameters are an argument.
def _affine_step(params, h, u):
    _TRACES.append(1)  # runs only while JAX traces (compiles) a program
    return params["a"] @ h + params["b"] + u


# --------------------------------------------------------------------------
# PCA.
# --------------------------------------------------------------------------
def test_pca_recovers_known_axes():
    stds = np.array([3.0, 2.0, 1.0, 0.1, 0.1, 0.1])
    data = (_RNG.normal(size=(20_000, H)) * stds) @ _BASIS.T + 5.0
    components, ratio = dyn.pca(data, 3)
    assert components.shape == (3, H) and ratio.shape == (3,)
    np.testing.assert_allclose(ratio, stds[:3] ** 2 / np.sum(stds ** 2), atol=0.01)
    np.testing.assert_allclose(np.abs(components @ _BASIS[:, :3]), np.eye(3), atol=0.02)
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-5)
    coords = dyn.pca_transform(data, components)
    np.testing.assert_allclose(np.std(coords, axis=0), stds[:3], rtol=0.03)


# --------------------------------------------------------------------------
# Fixed points and stability.
# --------------------------------------------------------------------------
def test_fixed_point_of_affine_map():
    h_star = np.linalg.solve(np.eye(H) - np.asarray(_CONTRACTION), np.asarray(_OFFSET))
    h0 = jnp.asarray(_RNG.normal(size=(16, H)) * 3, jnp.float32)
    fp = dyn.find_fixed_points(_affine_step, _AFFINE, h0, input=0.0, steps=4000)
    assert fp.points.shape == (16, H) and fp.q.shape == (16,) and fp.q_trace.shape == (40, 16)
    # Constant-step Adam (the authors' setting) ends in a jitter of size ~lr.
    np.testing.assert_allclose(fp.points, np.broadcast_to(h_star, (16, H)), atol=0.02)
    assert np.all(fp.converged) and np.all(fp.q_trace[-1] < fp.q_trace[0])
    # A decaying learning rate converges much tighter than constant-step Adam.
    tight = dyn.find_fixed_points(
        _affine_step, _AFFINE, h0, input=0.0, steps=3000,
        optimizer=optax.adam(optax.cosine_decay_schedule(0.05, 3000)))
    np.testing.assert_allclose(tight.points, np.broadcast_to(h_star, (16, H)), atol=1e-4)
    # Input shifts the fixed point: (I - A) h = b + u.
    u = jnp.full(H, 0.3)
    shifted = dyn.find_fixed_points(_affine_step, _AFFINE, h0[:2], input=u, steps=4000)
    np.testing.assert_allclose(shifted.points[0], np.linalg.solve(
        np.eye(H) - np.asarray(_CONTRACTION), np.asarray(_OFFSET + u)), atol=0.02)
    # Unique points: all 16 collapse to one.
    unique, labels = dyn.unique_points(fp.points, eps=0.5, q=fp.q)
    assert unique.shape == (1, H) and np.all(labels == 0)
    # Jacobian of F - id is A - I exactly.
    jac = dyn.jacobians(_affine_step, _AFFINE, fp.points[:1], 0.0)
    np.testing.assert_allclose(jac[0], np.asarray(_CONTRACTION) - np.eye(H), atol=1e-6)
    eigs = dyn.jacobian_eigenvalues(_affine_step, _AFFINE, unique, 0.0)
    np.testing.assert_allclose(eigs[0].real, [-0.4, -0.5, -0.6, -0.7, -0.9, -1.2], atol=1e-5)
    sig = dyn.continuous_attractor_signature(eigs)
    assert not sig.is_attractor[0] and not sig.marginal[0] and sig.stable[0]


def test_networks_share_one_compiled_program():
    """Two networks (different parameters, same shapes) and two learning rates reuse the
    programs compiled for the first call, and each gets its own closed-form fixed point."""
    h0 = jnp.asarray(_RNG.normal(size=(8, H)), jnp.float32)
    nets = [{"a": _linear_map(ev), "b": jnp.asarray(_RNG.normal(size=H), jnp.float32)}
            for ev in ([0.5, 0.2, -0.3, 0.1, 0.4, 0.0], [-0.5, 0.6, 0.3, 0.2, -0.1, 0.5])]
    dyn.find_fixed_points(_affine_step, nets[0], h0, input=0.0, steps=2000, lr=0.05)
    dyn.jacobians(_affine_step, nets[0], h0[:1], 0.0)
    traced = len(_TRACES)
    for net, lr in zip(nets, (0.05, 0.04)):
        fp = dyn.find_fixed_points(_affine_step, net, h0, input=0.0, steps=2000, lr=lr)
        h_star = np.linalg.solve(np.eye(H) - np.asarray(net["a"]), np.asarray(net["b"]))
        np.testing.assert_allclose(fp.points, np.broadcast_to(h_star, (8, H)), atol=0.05)
        jac = dyn.jacobians(_affine_step, net, fp.points[:1], 0.0)
        np.testing.assert_allclose(jac[0], np.asarray(net["a"]) - np.eye(H), atol=1e-6)
    assert len(_TRACES) == traced  # nothing was traced (compiled) again


def test_plane_attractor():
    h0 = jnp.asarray(_RNG.normal(size=(32, H)) * 2, jnp.float32)
    fp = dyn.find_fixed_points(_affine_step, _PLANE_PARAMS, h0, input=0.0, steps=4000)
    assert np.all(fp.converged)
    off_plane = np.asarray(fp.points) @ _BASIS[:, 2:]
    np.testing.assert_allclose(off_plane, 0.0, atol=0.02)
    in_plane = np.asarray(fp.points) @ _BASIS[:, :2]
    assert np.std(in_plane) > 0.5  # a sheet of distinct fixed points, not one point
    eigs = dyn.jacobian_eigenvalues(_affine_step, _PLANE_PARAMS, fp.points, 0.0)
    assert eigs.shape == (32, H)
    np.testing.assert_allclose(eigs[:, :2], 0.0, atol=1e-5)  # the two marginal directions
    np.testing.assert_allclose(eigs[0, 2:].real, [-0.5, -0.7, -0.8, -1.4], atol=1e-5)
    sig = dyn.continuous_attractor_signature(eigs, k=2)
    assert np.all(sig.is_attractor) and sig.top.shape == (32, 2)
    np.testing.assert_allclose(sig.max_other, 0.5, atol=1e-5)
    assert not np.any(dyn.continuous_attractor_signature(eigs, k=3).is_attractor)


def test_unique_points_dbscan_vs_greedy():
    # A chain of points 0.4 apart: DBSCAN(eps=0.5, min_samples=1) links it into one
    # cluster; the greedy radius cover keeps several representatives.
    chain = np.zeros((6, 2))
    chain[:, 0] = 0.4 * np.arange(6)
    far = np.array([[10.0, 0.0], [10.2, 0.0]])
    points = np.concatenate([far[:1], chain, far[1:]])
    unique, labels = dyn.unique_points(points, eps=0.5)
    np.testing.assert_array_equal(labels, [0, 1, 1, 1, 1, 1, 1, 0])  # sklearn numbering
    np.testing.assert_allclose(unique, [far[0], chain[0]])
    unique, labels = dyn.unique_points(points, eps=0.5, method="greedy")
    assert len(unique) == 4 and np.all(labels[[0, 7]] == 0)
    # Representatives are the lowest-q members.
    q = np.arange(8)[::-1].astype(float)
    unique, _ = dyn.unique_points(points, eps=0.5, q=q)
    np.testing.assert_allclose(unique, [far[1], chain[-1]])
    with pytest.raises(ValueError, match="method"):
        dyn.unique_points(points, method="kmeans")


def test_timescale_amplification():
    # mu = lambda + 1; tau_net = dt / |ln |mu||.
    eigs = np.array([-0.01, -0.1, 0.0, -1.0 + 0.05j])
    amp = dyn.timescale_amplification(eigs)
    np.testing.assert_allclose(amp[:2], 1 / np.abs(np.log(np.array([0.99, 0.9]))), rtol=1e-5)
    assert np.isinf(amp[2])
    np.testing.assert_allclose(amp[3], 1 / np.abs(np.log(0.05)), rtol=1e-5)
    np.testing.assert_allclose(dyn.timescale_amplification(eigs[:2], dt=100.0, tau=50.0),
                               2 * amp[:2], rtol=1e-5)


# --------------------------------------------------------------------------
# Tuning and sparsity.
# --------------------------------------------------------------------------
def test_tuning_grid():
    def final_state(x):  # units: x1, x2, x1 + x2, relu(x1), constant
        return jnp.stack([x[:, 0], x[:, 1], x[:, 0] + x[:, 1], jax.nn.relu(x[:, 0]),
                          jnp.ones(x.shape[0])], axis=-1)

    grid = dyn.tuning_grid(final_state)
    assert grid.maps.shape == (8, 8, 5) and grid.latents.shape == (8, 8, 2)
    values = np.linspace(-0.5, 0.5, 8)
    np.testing.assert_allclose(grid.maps[:, 3, 0], values, atol=1e-6)  # x1 along rows
    np.testing.assert_allclose(grid.maps[3, :, 1], values, atol=1e-6)
    np.testing.assert_allclose(grid.corr_x1[:3], [1.0, np.nan, 1.0], atol=1e-5)
    np.testing.assert_allclose(grid.corr_x2[:3], [np.nan, 1.0, 1.0], atol=1e-5)
    assert 0.8 < grid.corr_x1[3] < 1.0
    assert np.isnan(grid.corr_x1[4]) and np.isnan(grid.corr_x2[4])


def test_lifetime_sparseness_and_active_fraction():
    m = 10
    one_hot = np.zeros((m, 4))
    one_hot[3, 0] = 2.0  # responds to one stimulus -> S = 1
    one_hot[:, 1] = 1.5  # constant -> S = 0
    one_hot[:5, 2] = 1.0  # half of the stimuli: (1 - 0.5) / (1 - 1/m)
    # column 3 silent -> S = 1 by convention
    np.testing.assert_allclose(dyn.lifetime_sparseness(one_hot),
                               [1.0, 0.0, 0.5 / (1 - 1 / m), 1.0], atol=1e-6)
    np.testing.assert_allclose(dyn.active_fraction(one_hot), (1 + 10 + 5) / 40)
    np.testing.assert_allclose(dyn.active_fraction(one_hot, mode="ever"), 0.75)
    np.testing.assert_allclose(dyn.active_fraction(one_hot, threshold=1.2), (1 + 10) / 40)
