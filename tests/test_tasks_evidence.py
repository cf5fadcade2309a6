"""Evidence-aggregation task generator (gbi_jax.tasks.evidence): statistics and checks."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from gbi_jax.tasks import EvidenceTask, line_angles, orthant_index, orthant_signs, stack_instances


@functools.lru_cache(maxsize=None)
def _sampler(task, n, stim_steps, restricted):
    if restricted:
        return jax.jit(lambda i, k, o: task.sample(i, k, n, orthants=o, stim_steps=stim_steps))
    return jax.jit(lambda i, k: task.sample(i, k, n, stim_steps=stim_steps))


def _quadrant(x):
    """Numpy twin of orthant_index for D = 2 (no eager JAX ops: they compile one by one)."""
    x = np.asarray(x)
    signs = orthant_signs(2)
    return np.argmax(np.all(np.where(x[:, None] >= 0, 1.0, -1.0) == signs, -1), -1)


def _sample(task, inst, n, seed=0, orthants=None, stim_steps=None):
    """One compiled sampler per (task, n, T, restricted), reused across calls."""
    key = jax.random.PRNGKey(seed)
    if orthants is None:
        return _sampler(task, n, stim_steps, False)(inst, key)
    return _sampler(task, n, stim_steps, True)(inst, key, jnp.asarray(orthants))


def test_layout_targets_and_encoder():
    task = EvidenceTask(max_tasks=8)
    inst = task.instance(0, 6)
    b = _sample(task, inst, 512)
    assert b.inputs.shape == (512, 22, 41) and b.targets.shape == (512, 22, 8)
    fix = np.asarray(b.inputs[..., 0])
    assert np.all(fix[:, :21] == 1) and np.all(fix[:, 21] == 0)
    encode = jax.jit(task.encode)
    f0 = np.asarray(encode(inst, jnp.zeros(2)))
    np.testing.assert_allclose(b.inputs[:, 0, 1:], np.broadcast_to(f0, (512, 40)), rtol=1e-6)
    np.testing.assert_allclose(b.inputs[:, 21, 1:], np.broadcast_to(f0, (512, 40)), rtol=1e-6)
    np.testing.assert_allclose(b.inputs[:, 1:21, 1:], encode(inst, b.stimulus), rtol=1e-5,
                               atol=1e-6)
    t = np.asarray(b.targets)
    assert np.all(t[:, :21, :6] == 0.5) and np.all(t[:, :, 6:] == 0)  # padding masked
    np.testing.assert_array_equal(t[:, 21], np.asarray(b.labels))
    # Authors' labels: 1[x2 > tan(phi_i) x1], phi_i = (i + 1/2) pi / N.
    x = np.asarray(b.latent)
    phi = (np.arange(6) + 0.5) * np.pi / 6
    np.testing.assert_array_equal(t[:, 21, :6], (x[:, 1:2] > np.tan(phi) * x[:, :1]))


@pytest.mark.parametrize("dim, n", [(2, 2), (2, 24), (5, 7)])
def test_label_balance_and_noise_level(dim, n):
    task = EvidenceTask(dim=dim, max_tasks=n)
    inst = task.instance(3, n, sigma=0.3)
    b = _sample(task, inst, 20000)
    balance = np.asarray(b.labels).mean(0)
    assert np.all(np.abs(balance - 0.5) < 0.02), balance
    noise = np.asarray(b.stimulus - b.latent[:, None])
    assert abs(noise.std() - 0.3) < 0.003 and abs(noise.mean()) < 0.003
    x = np.asarray(b.latent)
    assert x.min() >= -0.5 and x.max() <= 0.5 and abs(x.var() - 1 / 12) < 0.002
    if dim > 2:  # random unit normals
        np.testing.assert_allclose(np.linalg.norm(inst.weights[:n], axis=1), 1.0, rtol=1e-5)


def test_quadrant_restriction():
    task = EvidenceTask()
    inst = task.instance(0, 2)
    signs = orthant_signs(2)
    np.testing.assert_array_equal(signs, [[1, 1], [-1, 1], [-1, -1], [1, -1]])
    for held in range(4):
        allowed = np.ones(4, bool)
        allowed[held] = False
        b = _sample(task, inst, 4000, seed=held, orthants=allowed)
        q = _quadrant(b.latent)
        assert held not in set(q) and set(q) == set(range(4)) - {held}
        counts = np.bincount(q, minlength=4)[allowed]
        assert counts.min() > 1200  # uniform over the allowed quadrants
        only = _sample(task, inst, 4000, seed=10 + held, orthants=~allowed)
        x = np.asarray(only.latent)
        assert np.all(_quadrant(only.latent) == held)
        assert np.abs(x).max() <= 0.5
        assert abs(np.abs(x).mean() - 0.25) < 0.01  # U[0, 1/2] magnitudes


def test_orthants_high_dim():
    signs = orthant_signs(3)
    assert signs.shape == (8, 3)
    np.testing.assert_array_equal(signs[0], [-1, -1, -1])
    np.testing.assert_array_equal(signs[-1], [1, 1, 1])
    x = jnp.asarray(signs * 0.1)
    np.testing.assert_array_equal(orthant_index(x), np.arange(8))


def test_orthant_numbering_orders():
    # Quadrants 1..4 = (+,+), (-,+), (-,-), (+,-) -> 0..3 (authors' DenoiseQuads).
    x = np.array([[0.1, 0.2], [-0.1, 0.2], [-0.1, -0.2], [0.1, -0.2], [0.0, 0.0]])
    np.testing.assert_array_equal(orthant_index(x), [0, 1, 2, 3, 0])
    np.testing.assert_array_equal(orthant_index(x), _quadrant(x))
    # D > 2 and order="binary": itertools.product([-, +], repeat=D), first coordinate
    # most significant.
    signs = np.array(list(itertools.product([-1, 1], repeat=3)))
    np.testing.assert_array_equal(orthant_signs(3, "binary"), signs)
    np.testing.assert_array_equal(orthant_index(0.3 * signs[None], order="binary"),
                                  np.arange(8)[None])  # leading dims are kept
    np.testing.assert_array_equal(orthant_index(0.3 * orthant_signs(2, "binary"),
                                                order="binary"), np.arange(4))
    assert orthant_signs(2).dtype == np.float32
    with pytest.raises(ValueError, match="quadrant"):
        orthant_signs(3, "quadrant")
    with pytest.raises(ValueError, match="order"):
        orthant_signs(2, "gray")


def test_line_angles():
    np.testing.assert_allclose(line_angles(2), [np.pi / 4, 3 * np.pi / 4])
    phi = line_angles(24)
    np.testing.assert_allclose(np.diff(phi), np.pi / 24)
    # The D = 2 label weights are (-tan phi, 1): 1[x2 > tan(phi) x1].
    inst = EvidenceTask(max_tasks=24).instance(0, 24)
    np.testing.assert_allclose(inst.weights[:, 0], -np.tan(phi), rtol=1e-6)


def test_correlated_factors_copula():
    task = EvidenceTask()
    inst = task.instance(0, 4, rho=0.6)
    x = np.asarray(_sample(task, inst, 20000).latent)
    for d in range(2):  # uniform marginals
        assert stats.kstest(x[:, d] + 0.5, "uniform").pvalue > 1e-3
    spearman = stats.spearmanr(x[:, 0], x[:, 1]).statistic
    assert abs(spearman - 6 / np.pi * np.arcsin(0.3)) < 0.02


def test_free_rt_accumulators():
    task = EvidenceTask(free_rt=True, max_tasks=6, bound=5.0)
    inst = task.instance(0, 6)
    b = _sample(task, inst, 512)
    assert b.inputs.shape == (512, 20, 40) and b.targets.shape == (512, 20, 6)
    w = np.asarray(inst.weights)
    cum = np.cumsum(np.asarray(b.stimulus) @ w.T, axis=1)
    a = np.asarray(b.targets)
    assert np.abs(a).max() <= 5.0 + 1e-5
    for i in range(0, 512, 37):
        for k in range(6):
            hit = np.flatnonzero(np.abs(cum[i, :, k]) >= 5)
            if hit.size:
                t0 = hit[0]
                np.testing.assert_allclose(a[i, :t0, k], cum[i, :t0, k], rtol=1e-5, atol=1e-5)
                assert np.all(a[i, t0:, k] == 5.0 * np.sign(cum[i, t0, k]))  # absorbed
            else:
                np.testing.assert_allclose(a[i, :, k], cum[i, :, k], rtol=1e-5, atol=1e-5)
    longer = _sample(task, inst, 4, stim_steps=21)  # evaluation: T + 1 samples
    assert longer.inputs.shape == (4, 21, 40)


def test_hyperbolic_boundaries():
    task = EvidenceTask(boundary="hyperbolic", max_tasks=8)
    inst = task.instance(0, 8)
    b = _sample(task, inst, 4000)
    x, y = np.asarray(b.latent), np.asarray(b.labels)
    q = _quadrant(b.latent)
    theta = 0.2 * np.linspace(1 / 16, 1, 2)
    for out in range(8):
        quad, k = divmod(out, 2)
        expect = (q == quad) & (np.abs(x[:, 0] * x[:, 1]) > theta[k])
        np.testing.assert_array_equal(y[:, out], expect)


def test_vmap_over_instances_with_different_n():
    task = EvidenceTask(max_tasks=24)
    insts = stack_instances([task.instance(s, n) for s, n in enumerate((2, 3, 24))])
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    b = jax.jit(jax.vmap(lambda i, k: task.sample(i, k, 8)))(insts, keys)
    assert b.targets.shape == (3, 8, 22, 24)
    assert np.all(np.asarray(b.targets[0, :, :, 2:]) == 0)
    assert np.all(np.asarray(b.targets[2, :, :21]) == 0.5)
    # Encoders differ between networks, and the quadratic flag switches the activation.
    assert not np.allclose(insts.encoder["w0"][0], insts.encoder["w0"][1])
    quad = task.instance(0, 2, encoder="quadratic")
    relu = task.instance(0, 2)
    h = jnp.ones((1, 2)) * 0.3
    assert not np.allclose(task.encode(quad, h), task.encode(relu, h))


def _reference_encoder(inst, x, quadratic):
    """The encoder written as plain matmuls in float64 (numpy)."""
    h = np.asarray(x, np.float64)
    enc = {k: np.asarray(v, np.float64) for k, v in inst.encoder.items()}
    for i in range(3):
        h = h @ enc[f"w{i}"] + enc[f"b{i}"]
        if i < 2:
            h = h * h if quadratic else np.maximum(h, 0.0)
    return h


@pytest.mark.parametrize("dim", [2, 9])  # 9: the first layer is a matmul (D > 8)
def test_encoder_matches_matmul_reference_for_every_static_kind(dim):
    x = jax.random.uniform(jax.random.PRNGKey(3), (64, dim), minval=-0.8, maxval=0.8)
    for encoder in ("relu", "quadratic"):
        ref = _reference_encoder(EvidenceTask(dim=dim).instance(1, 2, encoder=encoder), x,
                                 encoder == "quadratic")
        for kinds in (("relu", "quadratic"), (encoder,)):
            task = EvidenceTask(dim=dim, encoders=kinds)
            got = jax.jit(task.encode)(task.instance(1, 2, encoder=encoder), x)
            np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-6)


def test_static_encoder_kinds_are_checked():
    with pytest.raises(ValueError, match="encoders"):
        EvidenceTask(encoders=("tanh",))
    with pytest.raises(ValueError, match="encoders"):
        EvidenceTask(encoders=())
    with pytest.raises(ValueError, match="EvidenceTask.encoders"):
        EvidenceTask(encoders=("relu",)).instance(0, 2, encoder="quadratic")


@pytest.mark.parametrize("kwargs, n, match", [
    (dict(), 25, r"TaskInstance.num_tasks must be an integer in \[1, 24\]"),
    (dict(), 0, "TaskInstance.num_tasks"),
    (dict(boundary="circle"), 2, "EvidenceTask.boundary must be one of"),
    (dict(boundary="hyperbolic"), 6, "TaskInstance.num_tasks must be divisible by 4"),
    (dict(boundary="hyperbolic", dim=3), 4, "EvidenceTask.boundary 'hyperbolic' needs dim=2"),
    (dict(dim=0), 2, "EvidenceTask.dim must be an integer >= 1"),
    (dict(stim_steps=0), 2, "EvidenceTask.stim_steps"),
    (dict(encoder_hidden=(100, 0)), 2, "EvidenceTask.encoder_hidden"),
    (dict(bound=0.0), 2, "EvidenceTask.bound must be > 0"),
    (dict(free_rt=True, boundary="hyperbolic"), 4, "EvidenceTask.free_rt"),
])
def test_rejects_bad_values(kwargs, n, match):
    with pytest.raises(ValueError, match=match):
        EvidenceTask(**{"max_tasks": 24, **kwargs}).instance(0, n)


@pytest.mark.parametrize("task, kw, match", [
    (EvidenceTask(), dict(sigma=-0.1), "TaskInstance.sigma must be >= 0"),
    (EvidenceTask(), dict(rho=1.0), r"TaskInstance.rho must be in \(-1.0, 1.0\)"),
    (EvidenceTask(dim=3), dict(rho=-0.6), r"TaskInstance.rho must be in \(-0.5, 1.0\)"),
    (EvidenceTask(), dict(encoder="tanh"), "TaskInstance.encoder"),
])
def test_instance_rejects_bad_values(task, kw, match):
    with pytest.raises(ValueError, match=match):
        task.check_instance(2, **kw)  # checks without drawing ...
    with pytest.raises(ValueError, match=match):
        task.instance(0, 2, **kw)  # ... and instance() runs the same checks
