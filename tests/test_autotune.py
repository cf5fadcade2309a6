"""gbi_jax.autotune and fit(member_block="auto"): the probe picks the faster candidate,
caches it per machine and workload, survives a damaged cache, and changes no result."""

import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gbi_jax import autotune, training


@pytest.fixture
def cache(tmp_path, monkeypatch):
    path = tmp_path / "autotune.json"
    monkeypatch.setenv("GBI_JAX_AUTOTUNE_CACHE", str(path))
    return path


def _sleeper(calls):
    def make_call(c):
        def run():
            calls.append(c)
            time.sleep(0.002 * c)
        return run
    return make_call


def test_pick_measures_the_fastest_and_caches_it(cache):
    calls = []
    choice = autotune.pick("sleep", [5, 1, 3], _sleeper(calls), rounds=3)
    assert choice.value == 1 and choice.how == "measured"
    assert len(calls) == 3 * 4  # a warm-up and 3 timed calls each
    assert set(choice.seconds) == {"5", "1", "3"}
    assert "1" in choice.describe("x") and "measured" in choice.describe("x")
    stored = json.loads(cache.read_text())
    assert [v["value"] for v in stored.values()] == [1]
    assert all(k.startswith("sleep|") and autotune.machine_key() in k for k in stored)
    calls.clear()
    again = autotune.pick("sleep", [5, 1, 3], _sleeper(calls))
    assert again.value == 1 and again.how == "cached" and calls == []
    # another workload key probes again; a cached value that is no longer a candidate too
    assert autotune.pick("other", [4, 2], _sleeper(calls)).how == "measured"
    assert autotune.pick("sleep", [5, 3], _sleeper(calls)).value == 3


def test_damaged_or_disabled_cache_is_not_fatal(cache, monkeypatch):
    cache.write_text("{not json")
    assert autotune.pick("k", [2, 1], _sleeper([])).value == 1
    assert json.loads(cache.read_text())  # rebuilt
    monkeypatch.setenv("GBI_JAX_AUTOTUNE_CACHE", "off")
    assert autotune.cache_path() is None
    assert autotune.pick("k", [2, 1], _sleeper([])).how == "measured"
    with pytest.raises(ValueError, match="candidate"):
        autotune.pick("k", [], _sleeper([]))


def test_racing_times_only_the_contenders_further():
    """After the common rounds, only candidates within ``margin`` of the fastest get the
    further calls; a far slower one is left out and the fastest is still chosen."""
    calls = []
    choice = autotune.pick("race", [20, 10, 11], _sleeper(calls), rounds=2, final_rounds=6,
                           margin=0.3, use_cache=False)
    assert choice.value == 10
    counts = {c: calls.count(c) for c in (20, 10, 11)}
    assert counts == {20: 1 + 2, 10: 1 + 6, 11: 1 + 6}  # warm-up + timed calls
    assert set(choice.seconds) == {"20", "10", "11"}
    # one clear winner ends the race after the common rounds
    calls.clear()
    autotune.pick("race", [20, 1], _sleeper(calls), rounds=2, final_rounds=9, margin=0.05,
                  use_cache=False)
    assert calls.count(1) == 3 and calls.count(20) == 3


def test_member_block_candidates():
    assert training.member_block_candidates(13) == [None, 8, 7, 6, 5, 4, 3, 2]
    assert training.member_block_candidates(40) == [None, 20, 14, 10, 8, 6, 4, 3, 2]
    assert training.member_block_candidates(4) == [None, 3, 2, 1]
    assert training.member_block_candidates(2) == [None, 1]
    assert training.member_block_candidates(1) == [None]
    assert training.resolve_member_block(4) == 4
    assert training.resolve_member_block(None) == (
        "auto" if jax.default_backend() == "cpu" else None)


def _init(key, data):
    return {"w": jax.random.normal(key, (16, 16)) / 4}


def _loss(params, data, key, step):
    x = jax.random.normal(key, (32, 16))
    return jnp.mean((jnp.tanh(x @ params["w"]) - data) ** 2), {}


def test_fit_with_auto_member_block_matches_one_vmap(cache, caplog):
    kw = dict(init_fn=_init, loss_fn=_loss, tx=optax.adam(1e-2), seeds=range(6),
              member_data=jnp.linspace(-0.5, 0.5, 6)[:, None], num_steps=40, chunk_size=20)
    plain = training.fit(member_block=None, **kw)
    with caplog.at_level("WARNING"):
        auto = training.fit(member_block="auto", **kw)
    assert "member_block" in caplog.text and "measured" in caplog.text
    for a, b in zip(jax.tree_util.tree_leaves(plain.state.params),
                    jax.tree_util.tree_leaves(auto.state.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(np.asarray(auto.state.step), 40)
    caplog.clear()
    with caplog.at_level("WARNING"):
        training.fit(member_block="auto", **kw)
    assert "cached" in caplog.text
    with pytest.raises(ValueError, match="'auto'"):
        training.fit(member_block="fast", **kw)


def test_tune_chunk_size_keeps_results_and_picks_a_candidate(cache):
    from gbi_jax import inference

    w = jax.random.normal(jax.random.PRNGKey(0), (8, 32))
    batch = jax.random.normal(jax.random.PRNGKey(1), (600, 32))
    loss = lambda z, x: jnp.sum((z @ w - x) ** 2)  # noqa: E731
    opt = optax.sgd(1e-3)
    fns = {c: jax.jit(lambda b, c=c: inference.optimize_batch(
        loss, jnp.full((8,), 1 / 8), b, opt, 5, chunk_size=c)[0])
        for c in inference.chunk_size_candidates(600)}
    assert list(fns) == [None, 128, 256, 512]
    choice = inference.tune_chunk_size(lambda c: lambda: fns[c](batch).block_until_ready(),
                                       600, key="test")
    assert choice.value in fns
    ref = np.asarray(fns[None](batch))
    np.testing.assert_allclose(np.asarray(fns[choice.value](batch)), ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------
# per_example(chunk_size="auto"): the trace-time probe of inference.auto_chunk_size.
# --------------------------------------------------------------------------
@pytest.fixture
def small_probe(cache, monkeypatch):
    """A fresh per-process memo and a short candidate list (few compilations)."""
    from gbi_jax import inference

    monkeypatch.setattr(inference, "_AUTO_CHOICES", {})
    monkeypatch.setattr(inference, "PROBE_CHUNKS", (100, 200))
    monkeypatch.setattr(inference, "AUTO_MIN_BATCH", 250)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    return inference


def _decoder_loss(scale=1.0):
    def program(w, z, x):
        return scale * jnp.sum((jnp.tanh(z @ w) - x) ** 2)
    return program


def test_auto_chunk_probe_runs_inside_jit_caches_and_keeps_results(small_probe, cache, caplog):
    inference = small_probe
    w = jax.random.normal(jax.random.PRNGKey(0), (6, 40))
    xs = jax.random.normal(jax.random.PRNGKey(1), (457, 40))  # not a multiple of any chunk
    z0 = jnp.full((6,), 1 / 6)
    program = _decoder_loss()

    @jax.jit
    def infer(w, xs):  # the weights are traced: the probe stands in for them
        return inference.optimize_batch(lambda z, x: program(w, z, x), z0, xs,
                                        optax.sgd(0.05), 4)[0]

    with caplog.at_level("WARNING"):
        out = infer(w, xs)
    assert "per_example chunk_size for 457-latent batches (probed on 457)" in caplog.text
    assert "measured" in caplog.text
    stored = json.loads(cache.read_text())
    (key, entry), = [(k, v) for k, v in stored.items() if k.startswith("chunk_size|")]
    assert "latents=457" in key and entry["value"] in (None, 100, 200)
    ref = inference.optimize_batch(lambda z, x: program(w, z, x), z0, xs, optax.sgd(0.05), 4,
                                   chunk_size=None)[0]
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-6)

    # A new process (empty memo) reads the disk cache; a program differing only in a
    # literal value (here a loss scale) is the same workload.
    inference._AUTO_CHOICES.clear()
    caplog.clear()
    scaled = _decoder_loss(scale=3.0)
    with caplog.at_level("WARNING"):
        jax.jit(lambda w, xs: inference.one_step_batch(
            lambda z, x: scaled(w, z, x), z0, xs).grad)(w, xs)
        jax.jit(lambda w, xs: inference.optimize_batch(
            lambda z, x: scaled(w, z, x), z0, xs, optax.sgd(0.5), 4)[0])(w, xs)
    assert caplog.text.count("cached for this machine") == 1  # the optimize program
    assert caplog.text.count("measured") == 1                 # one_step: another program


def test_auto_chunk_small_batches_and_accelerators_take_one_vmap(small_probe, monkeypatch,
                                                                 caplog):
    inference = small_probe
    f = lambda z, x: jnp.sum(z * x)  # noqa: E731
    with caplog.at_level("WARNING"):
        assert inference.auto_chunk_size(f, jnp.ones((249, 3)), jnp.ones((249, 3))) is None
        monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
        assert inference.auto_chunk_size(f, jnp.ones((5000, 3)), jnp.ones((5000, 3))) is None
    assert caplog.text == ""


def test_auto_chunk_probe_shrinks_for_slow_calls_and_maps_one_vmap(small_probe, monkeypatch,
                                                                  caplog):
    inference = small_probe
    monkeypatch.setattr(inference, "PROBE_CALL_S", 0.0)  # every call is "too slow"
    monkeypatch.setattr(inference, "PROBE_MIN_LATENTS", 300)
    f = lambda z, x: jnp.sum(jnp.tanh(z * x))  # noqa: E731
    with caplog.at_level("WARNING"):
        chunk = inference.auto_chunk_size(f, jnp.ones((900, 3)), jnp.ones((900, 3)))
    assert "(probed on 300" in caplog.text
    # One vmap measured on 300 latents means chunks of 300 for the 900-latent batch.
    assert chunk in (100, 200, 300)
    assert (chunk == 300) == ("one vmap there = chunks of 300 here" in caplog.text)


def test_auto_chunk_probe_failure_falls_back_to_the_rule(small_probe, cache, caplog):
    inference = small_probe

    @jax.jit
    def f(key, xs):  # closes over a traced PRNG key: no stand-in exists for it
        fn = lambda z, x: jnp.sum(z * x * jax.random.normal(key, x.shape))  # noqa: E731
        return inference.per_example(fn)(jnp.ones((400, 3)), xs)

    with caplog.at_level("WARNING"):
        out = f(jax.random.key(0), jnp.ones((400, 3)))
    assert out.shape == (400,)
    assert "probe failed" in caplog.text and f"using {inference.CPU_CHUNK_SIZE}" in caplog.text
    assert not cache.exists() or "chunk_size|" not in cache.read_text()


@pytest.mark.parametrize("n,chunk", [(7, 3), (10, 5), (9, 8)])
def test_chunks_overlap_at_the_end_instead_of_padding(n, chunk):
    from gbi_jax import inference

    xs = jnp.arange(n * 2, dtype=jnp.float32).reshape(n, 2)
    f = lambda z, x: {"s": z * x.sum(), "x": x}  # noqa: E731
    z = jnp.arange(n, dtype=jnp.float32).reshape(n, 1)
    out = jax.jit(inference.per_example(f, chunk_size=chunk))(z, xs)
    ref = jax.vmap(f)(z, xs)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_auto_chunk_probe_times_only_the_outputs_named(small_probe, monkeypatch):
    """one_step_batch(outputs=...) probes the program that computes only those fields
    (the caller's smaller program), and the full program without it."""
    inference = small_probe
    seen = []

    def record(fn, one, m_max, label, shared):
        seen.append(jax.tree_util.tree_leaves(jax.eval_shape(fn, *one)))
        return 100, True

    monkeypatch.setattr(inference, "_probe_chunk_size", record)
    w = jax.random.normal(jax.random.PRNGKey(0), (6, 40))
    xs = jax.random.normal(jax.random.PRNGKey(1), (300, 40))
    program = _decoder_loss()
    loss = lambda z, x: program(w, z, x)  # noqa: E731
    z0 = jnp.full((6,), 1 / 6)
    full = inference.one_step_batch(loss, z0, xs)
    preds = inference.one_step_batch(loss, z0, xs, outputs=("prediction",))
    both = inference.exhaustive_batch(loss, 6, xs, outputs=("loss", "prediction"))
    assert [len(s) for s in seen] == [5, 1, 2]
    assert seen[1][0].dtype == jnp.int32 and seen[1][0].shape == ()
    np.testing.assert_array_equal(preds.prediction, full.prediction)
    assert both.grad is None and both.loss.shape == (300,)
