"""gbi_jax.training: determinism, vmap independence, resume, NaN handling and the divergence
guard, metric rows, incompatible checkpoints, sharding over host devices."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gbi_jax import training
from gbi_jax.workdir import Workdir

TARGETS = jnp.array([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0], [-1.0, 0.5, 2.0]])


def init_fn(key, data):
    return {"w": jax.random.normal(key, (3,)), "b": jnp.zeros(())}


def loss_fn(params, data, key, step):
    x = jax.random.normal(key, (8, 3))
    y = x @ data
    pred = x @ params["w"] + params["b"]
    return jnp.mean((pred - y) ** 2), {"abs_b": jnp.abs(params["b"])}


def _fit(seeds=(0, 1, 2), data=TARGETS, **kw):
    kw.setdefault("num_steps", 200)
    kw.setdefault("chunk_size", 50)
    return training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1), seeds=seeds,
                        member_data=data[:len(seeds)], **kw)


def _maxdiff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in
               zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_fit_learns_and_is_deterministic():
    r1, r2 = _fit(), _fit()
    assert _maxdiff(r1.state.params, r2.state.params) == 0.0
    np.testing.assert_allclose(np.asarray(r1.state.params["w"]), np.asarray(TARGETS), atol=0.05)
    assert r1.history["loss"].shape == (len(r1.steps), 3)
    assert r1.steps[-1] == 200 and int(r1.state.step[0]) == 200
    assert r1.history["loss"][-1].max() < 0.01 < r1.history["loss"][0].min()


def test_members_are_independent_of_each_other():
    both = _fit(seeds=(0, 1), data=TARGETS)
    alone = training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1), seeds=(1,),
                         member_data=TARGETS[1:2], num_steps=200, chunk_size=50)
    assert _maxdiff(training.unstack(both.state.params, 1),
                    training.unstack(alone.state.params, 0)) < 1e-6


def test_chunking_does_not_change_results():
    a = _fit(chunk_size=60)  # 60 + 60 + 60 + 20 (padded last chunk)
    b = _fit(chunk_size=200)
    c = _fit(chunk_size=7)
    assert _maxdiff(a.state.params, b.state.params) < 1e-6
    assert _maxdiff(a.state.params, c.state.params) < 1e-6


def test_chunk_program_is_the_program_fit_runs(tmp_path, monkeypatch):
    """Four chunks of ``chunk_program`` give ``fit``'s result bit for bit (same initial
    states, placement and blocks); ``"auto"`` is probed and its choice logged."""
    prog = training.chunk_program(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1),
                                  seeds=(0, 1, 2), member_data=TARGETS, chunk_size=50,
                                  member_block=2)
    assert (prog.members, prog.member_block, prog.member_block_note) == (3, 2, None)
    assert prog.compile() > 0  # the compiled executable runs the same chunks
    for _ in range(4):
        metrics = prog.run()
    ref = _fit(member_block=2)
    assert _maxdiff(prog.state.params, ref.state.params) == 0.0
    np.testing.assert_array_equal(np.asarray(metrics["loss"])[:, -1], ref.history["loss"][-1])
    monkeypatch.setenv("GBI_JAX_AUTOTUNE_CACHE", str(tmp_path / "autotune.json"))
    auto = training.chunk_program(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1),
                                  seeds=(0, 1, 2), member_data=TARGETS, chunk_size=50,
                                  member_block="auto")
    assert auto.member_block in training.member_block_candidates(3)
    assert auto.member_block_note.startswith("member_block: ")
    with pytest.raises(ValueError, match="member_block"):
        training.chunk_program(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1),
                               seeds=(0,), chunk_size=5, member_block=0)


def test_member_blocks_split_evenly_and_reject_bad_sizes():
    assert training.member_blocks(13, 5) == [(0, 5), (5, 9), (9, 13)]
    assert training.member_blocks(12, 4) == [(0, 4), (4, 8), (8, 12)]
    assert training.member_blocks(3, None) == [(0, 3)]
    assert training.member_blocks(3, 8) == [(0, 3)]
    assert training.member_blocks(3, 1) == [(0, 1), (1, 2), (2, 3)]
    for bad in (0, -2, 2.5, True, "4"):
        with pytest.raises(ValueError, match="member_block"):
            training.member_blocks(6, bad)


def test_block_groups_are_runs_of_equal_blocks():
    assert training._block_groups(training.member_blocks(13, 5)) == [(0, 1, 5), (5, 2, 4)]
    assert training._block_groups(training.member_blocks(12, 4)) == [(0, 3, 4)]
    assert training._block_groups(training.member_blocks(7, 2)) == [(0, 3, 2), (6, 1, 1)]
    assert training._block_groups([(0, 3)]) == [(0, 1, 3)]


def test_blocks_of_one_size_compile_to_one_copy_of_the_step():
    """Eight blocks of 2 hold the step once (a lax.map over the blocks), not eight times."""
    def loss(params, data, key, step):
        return jnp.mean(jnp.tanh(jax.random.normal(key, (4, 3)) @ params["w"])), {}

    tx = optax.sgd(0.1)
    init = jax.vmap(lambda k: training.init_state(init_fn(k, None), tx))
    keys = training.member_keys(range(16))
    data = jnp.zeros((16, 1))
    sizes = {}
    for block in (None, 2, 16 // 3 + 1):  # one vmap; 8 x 2; 6/5/5 (two sizes)
        fn = training.make_chunk_fn(loss, tx, 3, member_block=block)
        hlo = fn.lower(init(keys), data, keys, jnp.asarray(3, jnp.int32)).as_text()
        sizes[block] = hlo.count("tanh")
    assert sizes[2] == sizes[None] and sizes[6] == 2 * sizes[None]


def test_member_blocking_does_not_change_results():
    """Blocks run one after the other, each vmapped: same updates as one vmap."""
    plain = _fit(num_steps=60, chunk_size=25)
    for block in (1, 2):  # 3 members -> [1, 1, 1] and [2, 1]
        blocked = _fit(num_steps=60, chunk_size=25, member_block=block)
        assert _maxdiff(plain.state.params, blocked.state.params) < 1e-6
        np.testing.assert_allclose(blocked.history["loss"], plain.history["loss"], rtol=1e-5)


def test_interrupted_run_resumes_to_identical_result(tmp_path):
    reference = _fit()

    class Killed(Exception):
        pass

    def kill_after_second_chunk(step):
        if step == 100:
            raise Killed()

    wd = Workdir(str(tmp_path))
    with pytest.raises(Killed):
        _fit(workdir=wd, on_chunk=kill_after_second_chunk)
    resumed = _fit(workdir=wd)
    assert resumed.resumed_from == 100
    assert _maxdiff(reference.state.params, resumed.state.params) == 0.0
    np.testing.assert_array_equal(reference.history["loss"], resumed.history["loss"])
    # The metrics log has each step exactly once.
    steps = [r["train_step"] for r in wd.read_metrics()]
    assert steps == sorted(set(steps)) and steps[-1] == 200


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path):
    def nan_after(params, data, key, step):
        loss, aux = loss_fn(params, data, key, step)
        return jnp.where(step >= 72, jnp.nan, loss), aux

    wd = Workdir(str(tmp_path))
    with pytest.raises(training.NonFiniteLossError,
                       match=r"step 73 .*last good checkpoint \(step 50\)"):
        training.fit(init_fn=init_fn, loss_fn=nan_after, tx=optax.adam(0.1), seeds=(0, 1),
                     member_data=TARGETS[:2], num_steps=120, chunk_size=25, checkpoint_every=2,
                     workdir=wd)
    steps = sorted(int(d) for d in os.listdir(os.path.join(wd.checkpoint_dir, "train"))
                   if d.isdigit())
    assert steps[-1] == 50
    # The kept checkpoint is usable: a fixed loss resumes from it.
    resumed = _fit(seeds=(0, 1), workdir=wd, chunk_size=25)
    assert resumed.resumed_from == 50


def test_loss_bound_stops_the_run_and_names_step_member_seed(tmp_path):
    def blows_up(params, data, key, step):  # member 1 (seed 7) exceeds the bound at step 41
        loss, aux = loss_fn(params, data, key, step)
        return jnp.where((step >= 40) & (data[0] == 0.0), 1e6, loss), aux

    wd = Workdir(str(tmp_path))
    with pytest.raises(training.DivergenceError,
                       match=r"loss 1e\+06 above the bound 100 at step 41 \(member 1, seed 7\)"
                             r".*last good checkpoint \(step 25\)") as info:
        training.fit(init_fn=init_fn, loss_fn=blows_up, tx=optax.adam(0.1), seeds=(3, 7),
                     member_data=TARGETS[:2], num_steps=100, chunk_size=25, workdir=wd,
                     max_loss=100.0)
    e = info.value
    assert isinstance(e, training.NonFiniteLossError)  # existing handlers still catch it
    assert (e.step, e.member, e.seed, e.checkpoint) == (41, 1, 7, 25)
    assert sorted(os.listdir(os.path.join(wd.checkpoint_dir, "train"))) == ["25"]
    assert max(r["train_step"] for r in wd.read_metrics()) == 25  # the bad chunk is not logged


def test_non_finite_gradient_with_finite_loss_stops_before_any_checkpoint(tmp_path):
    def bad_gradient(params, data, key, step):  # loss unchanged, d/db sqrt(|b - b|) = nan
        loss, aux = loss_fn(params, data, key, step)
        b, off = params["b"], jnp.where(step >= 30, 0.0, 1.0)
        return loss + jnp.sqrt(jnp.abs(b - b) + off) - off, aux

    wd = Workdir(str(tmp_path))
    with pytest.raises(training.DivergenceError,
                       match=r"non-finite gradient norm \(nan\) at step 31 \(member 0, seed 0\)"
                             r".*no checkpoint exists yet") as info:
        training.fit(init_fn=init_fn, loss_fn=bad_gradient, tx=optax.adam(0.1), seeds=(0, 1),
                     member_data=TARGETS[:2], num_steps=100, chunk_size=50, workdir=wd)
    assert info.value.checkpoint is None
    assert not os.listdir(os.path.join(wd.checkpoint_dir, "train"))


def test_non_finite_parameters_are_never_saved(tmp_path):
    wd = Workdir(str(tmp_path))  # one finite step whose update overflows float32
    with pytest.raises(training.DivergenceError, match=r"non-finite parameters after step 1 "
                       r"\(member 0, seed 0\).*no checkpoint exists yet"):
        training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.sgd(1e38), seeds=(0,),
                     member_data=TARGETS[:1], num_steps=1, chunk_size=1, workdir=wd)
    assert not os.listdir(os.path.join(wd.checkpoint_dir, "train"))


def test_incompatible_checkpoint_is_refused(tmp_path):
    wd = Workdir(str(tmp_path))
    _fit(workdir=wd, num_steps=50)

    def other_init(key, data):
        return {"w": jnp.zeros((5,)), "b": jnp.zeros(())}

    with pytest.raises(ValueError, match="does not match the model"):
        training.fit(init_fn=other_init, loss_fn=loss_fn, tx=optax.adam(0.1), seeds=(0, 1, 2),
                     member_data=TARGETS, num_steps=60, workdir=wd)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_steps=0), "num_steps"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(seeds=()), "seeds"),
    (dict(member_data=jnp.zeros((2, 3))), "member_data"),
    (dict(member_block=0), "member_block"),
    (dict(max_loss=0.0), "max_loss"),
    (dict(max_grad_norm=float("inf")), "max_grad_norm"),
])
def test_bad_arguments_name_the_field(kwargs, message):
    args = dict(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1), seeds=(0, 1, 2),
                member_data=TARGETS, num_steps=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        training.fit(**args)


def test_log_rows_average_each_run_of_log_every_steps():
    metrics = {"loss": np.arange(10.0).reshape(2, 5)}  # 2 members x 5 steps after step 20
    rows = training._log_rows(metrics, 20, 2)
    assert [s for s, _ in rows] == [22, 24, 25]
    np.testing.assert_array_equal(rows[0][1]["loss"], [0.5, 5.5])
    np.testing.assert_array_equal(rows[2][1]["loss"], [4.0, 9.0])
    assert training._metrics_row("t", 22, rows[0][1])["loss_mean"] == 3.0


_SHARD_SCRIPT = r"""
import jax, jax.numpy as jnp, numpy as np, optax, sys
sys.path.insert(0, {tests!r})
from test_training import init_fn, loss_fn, TARGETS
from gbi_jax import training
assert jax.device_count() == 2, jax.devices()
out = {{}}
for shard, block in ((True, None), (False, None), (True, 1)):
    r = training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1), seeds=(0, 1, 2),
                     member_data=TARGETS, num_steps=60, chunk_size=25, shard=shard,
                     member_block=block)
    w = r.state.params["w"]
    # the result is gathered onto one device: later jitted work is not SPMD
    assert len(w.sharding.device_set) == 1, w.sharding
    solved = jax.jit(jnp.linalg.solve)(w @ w.T + jnp.eye(3), jnp.ones(3))
    assert np.isfinite(np.asarray(solved)).all()
    out[shard, block] = np.asarray(w)
    assert out[shard, block].shape == (3, 3)
prog = training.chunk_program(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1),
                              seeds=(0, 1, 2), member_data=TARGETS, chunk_size=60)
assert prog.sharded and prog.keys.shape[0] == 4 and prog.members == 3, prog
prog.run()
np.save({path!r}, np.stack([out[True, None], out[False, None], out[True, 1],
                            np.asarray(prog.state.params["w"])[:3]]))
"""


def test_members_shard_over_two_host_devices(tmp_path):
    """3 members padded to 4 and split over 2 fake CPU devices = unsharded result; also
    with each device running its 2 members as blocks of 1 (``shard_map``), and
    ``chunk_program``'s one chunk of the same 60 steps."""
    import subprocess
    import sys

    tests = os.path.dirname(os.path.abspath(__file__))
    path = str(tmp_path / "w.npy")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", _SHARD_SCRIPT.format(tests=tests, path=path)],
                   check=True, env=env, cwd=os.path.dirname(tests), timeout=300)
    sharded, single, blocked, program = np.load(path)
    np.testing.assert_allclose(sharded, single, atol=1e-6)
    np.testing.assert_allclose(program, single, atol=1e-6)  # chunk_program, placed as fit
    np.testing.assert_allclose(blocked, single, atol=1e-6)
    reference = _fit(num_steps=60, chunk_size=25)
    np.testing.assert_allclose(sharded, np.asarray(reference.state.params["w"]), atol=1e-6)
