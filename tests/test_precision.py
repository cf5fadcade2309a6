"""gbi_jax.precision: bfloat16 matrix products with float32 accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jax.extend import core as jex_core

from gbi_jax import inference, precision
from gbi_jax.models import MLP


def _rounded(a):
    """``a`` rounded to bfloat16 and back: the operand a bf16 product sees."""
    return np.asarray(jnp.asarray(a).astype(jnp.bfloat16).astype(jnp.float32), np.float64)


def test_product_equals_rounded_operands_with_float32_accumulation():
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 300))
    w = jax.random.normal(jax.random.PRNGKey(1), (300, 5))
    got = precision.with_matmul_dtype(lambda a, b: a @ b)(x, w)
    assert got.dtype == jnp.float32
    exact = _rounded(x) @ _rounded(w)          # float64 product of the rounded operands
    np.testing.assert_allclose(np.asarray(got), exact, rtol=1e-5, atol=1e-4)
    # ... and it is not the float32 product: the rounding is really there.
    assert np.max(np.abs(np.asarray(x @ w) - np.asarray(got))) > 1e-3


def test_every_float32_product_of_nested_programs_is_rewritten():
    w = jax.random.normal(jax.random.PRNGKey(1), (16, 16))

    def f(x, flag):
        inner = jax.jit(lambda a: jnp.tanh(a @ w))
        y, _ = jax.lax.scan(lambda c, _: (inner(c), None), x, None, length=3)
        y = jax.lax.cond(flag, lambda v: v @ w.T, lambda v: v, y)
        return jnp.sum(y ** 2)

    g = precision.with_matmul_dtype(jax.value_and_grad(f))
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 16))

    def dots(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                yield eqn
            for sub in jex_core.jaxprs_in_params(eqn.params):
                yield from dots(sub)

    found = list(dots(jax.make_jaxpr(g)(x, True).jaxpr))
    # forward: the scan body's and the cond branch's; backward: the input gradient of each
    assert len(found) == 4
    for eqn in found:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16] * 2
        assert eqn.outvars[0].aval.dtype == jnp.float32
    plain = list(dots(jax.make_jaxpr(jax.value_and_grad(f))(x, True).jaxpr))
    assert len(plain) == len(found)
    assert all(eqn.invars[0].aval.dtype == jnp.float32 for eqn in plain)
    loss, grad = jax.jit(g)(x, True)
    loss32, grad32 = jax.value_and_grad(f)(x, True)
    np.testing.assert_allclose(loss, loss32, rtol=5e-2)
    np.testing.assert_allclose(grad, grad32, rtol=0.1, atol=0.1 * float(jnp.abs(grad32).max()))


def test_integer_products_and_none_are_left_alone():
    f = lambda a: a @ a.T  # noqa: E731
    assert precision.with_matmul_dtype(f, None) is f
    a = jnp.arange(6, dtype=jnp.int32).reshape(2, 3)
    np.testing.assert_array_equal(precision.with_matmul_dtype(f)(a), f(a))


@pytest.mark.parametrize("bad", ["bf16", "float32", jnp.float32, 3])
def test_bad_matmul_dtype_names_the_field(bad):
    with pytest.raises(ValueError, match="matmul_dtype"):
        precision.check_matmul_dtype(bad)
    with pytest.raises(ValueError, match="matmul_dtype"):
        inference.optimize(lambda z: jnp.sum(z ** 2), jnp.full((3,), 1 / 3),
                           optax.sgd(0.1), 2, matmul_dtype=bad)


def test_bfloat16_inference_agrees_with_float32_on_a_decoder():
    k = 10
    model = MLP(hidden=(64, 64), out_features=100, z_injection="concat")
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((0,)), jnp.zeros((k,)))
    labels = jnp.arange(40) % k
    inputs = jnp.zeros((40, 0))
    x = model.apply(params, inputs, jax.nn.one_hot(labels, k))
    x = x + 0.02 * jax.random.normal(jax.random.PRNGKey(1), x.shape)
    batch = {"inputs": inputs, "x": x}

    def loss(z, e):
        return jnp.sum((model.apply(params, e["inputs"], z) - e["x"]) ** 2)

    z0 = inference.max_entropy_latent(k)
    opt = optax.sgd(0.05, momentum=0.5)
    z32, _ = jax.jit(lambda b: inference.optimize_batch(loss, z0, b, opt, 30))(batch)
    z16, tr = jax.jit(lambda b: inference.optimize_batch(
        loss, z0, b, opt, 30, matmul_dtype="bfloat16"))(batch)
    assert z16.dtype == jnp.float32 and tr.loss.dtype == jnp.float32
    np.testing.assert_array_equal(np.argmax(z16, -1), np.argmax(z32, -1))
    assert float(jnp.max(jnp.abs(z16 - z32))) < 0.05
    os16 = jax.jit(lambda b: inference.one_step_batch(loss, z0, b, matmul_dtype="bfloat16"))(batch)
    os32 = jax.jit(lambda b: inference.one_step_batch(loss, z0, b))(batch)
    np.testing.assert_array_equal(os16.prediction, os32.prediction)
    assert os16.grad.dtype == jnp.float32


@pytest.mark.parametrize("platform,flags,native", [
    ("cpu", frozenset({"fma", "avx2"}), False),             # AVX2 only
    ("cpu", frozenset({"avx2", "avx512f"}), False),         # AVX-512 without BF16
    ("cpu", frozenset({"avx512f", "avx512_bf16"}), True),
    ("cpu", frozenset({"amx_tile", "amx_bf16"}), True),
    ("cpu", frozenset({"asimd", "bf16"}), True),            # Arm FEAT_BF16
    ("cpu", frozenset(), False),                            # flags unreadable
    ("gpu", frozenset(), True),
    ("tpu", frozenset(), True),
])
def test_native_bf16_rule(platform, flags, native):
    assert precision.native_bf16(platform, flags) is native


@pytest.mark.parametrize("native", [True, False])
def test_auto_matmul_dtype_follows_the_hardware(monkeypatch, native):
    monkeypatch.setattr(precision, "native_bf16", lambda *a, **k: native)
    want = np.dtype(jnp.bfloat16) if native else None
    assert precision.resolve_matmul_dtype("auto") == want
    assert precision.check_matmul_dtype("auto") == want
    f = lambda a: a @ a.T  # noqa: E731
    assert (precision.with_matmul_dtype(f, "auto") is f) is (not native)
    # ... and the inference helpers take it: bf16 products (rounded) or exact float32.
    w = jax.random.normal(jax.random.PRNGKey(1), (4, 300))
    x = jax.random.normal(jax.random.PRNGKey(2), (300,))
    loss = lambda z: jnp.sum((z @ w - x) ** 2)  # noqa: E731
    z0 = jnp.full((4,), 0.25)
    got = inference.one_step(loss, z0, matmul_dtype="auto").grad
    exact = jax.grad(loss)(z0)
    assert (float(jnp.max(jnp.abs(got - exact))) > 0) is native


def test_explicit_bfloat16_without_native_products_warns_once(monkeypatch):
    from absl import logging

    monkeypatch.setattr(precision, "native_bf16", lambda *a, **k: False)
    monkeypatch.setattr(precision, "_warned_bf16", False)
    seen = []
    monkeypatch.setattr(logging, "warning", lambda msg, *a: seen.append(msg % a))
    for _ in range(3):
        assert precision.resolve_matmul_dtype("bfloat16") == np.dtype(jnp.bfloat16)
    assert len(seen) == 1 and "matmul_dtype='auto'" in seen[0]
    monkeypatch.setattr(precision, "native_bf16", lambda *a, **k: True)
    monkeypatch.setattr(precision, "_warned_bf16", False)
    precision.resolve_matmul_dtype("bfloat16")
    assert len(seen) == 1


def test_cpu_flags_reads_this_machine():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if "flags" in text:  # x86: every listed flag of the first CPU is read
        line = next(ln for ln in text.splitlines() if ln.startswith("flags"))
        assert flags == frozenset(line.split(":", 1)[1].split())
