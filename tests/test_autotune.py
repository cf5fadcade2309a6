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


def test_member_block_candidates():
    assert training.member_block_candidates(13) == [None, 7, 5, 4]
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
