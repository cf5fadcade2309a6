"""gbi_jax.tensorboard: CRC-32C, event files read back exactly by our reader and by
TensorBoard's, a record cut by a kill; training.fit's runs (one per member and the mean)
equal metrics.jsonl, a resumed fit ends with the event files of an uninterrupted one, and
the progress line."""

import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gbi_jax import tensorboard as tb
from gbi_jax import training
from gbi_jax.workdir import Workdir

TARGETS = jnp.array([[1.0, 2.0], [0.0, 1.0], [-1.0, 0.5]])
MEMBERS = ["seed_0", "seed_1", "seed_2"]
METRICS = ("loss", "grad_norm", "w0")


def init_fn(key, data):
    return {"w": jax.random.normal(key, (2,))}


def loss_fn(params, data, key, step):
    x = jax.random.normal(key, (8, 2))
    return jnp.mean((x @ params["w"] - x @ data) ** 2), {"w0": params["w"][0]}


def _fit(workdir, **kw):
    kw.setdefault("num_steps", 40)
    return training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1), seeds=(0, 1, 2),
                        member_data=TARGETS, chunk_size=10, log_every=5, workdir=workdir, **kw)


def _logdir(wd: Workdir, name: str = "train") -> str:
    return os.path.join(wd.path, "tensorboard", name)


def _f32(x) -> float:
    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _assert_one_file_per_run(logdir):
    for run in os.listdir(logdir):
        names = os.listdir(os.path.join(logdir, run))
        assert len(names) == 1 and names[0].startswith("events.out.tfevents."), names


def test_crc32c_of_known_vectors():
    for crc in (tb.crc32c, tb.crc32c_python):
        assert crc(b"123456789") == 0xE3069283
        assert crc(b"") == 0
        assert crc(bytes(32)) == 0x8A9136AA  # RFC 3720, B.4
        assert crc(b"\xff" * 32) == 0x62A8AB43
        assert crc(bytes(range(32))) == 0x46DD794E


def _write_sample(logdir):
    """Two runs, two flushes (the second appends); returns the expected read-back."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=6) * 10.0 ** rng.integers(-30, 30, size=6),
                             [0.0, -0.0, np.inf, -np.inf, 3.4e38, 1e-45]])
    steps = [0, 1, 7, 100, 2**40] + list(range(200, 207))
    w = tb.ScalarWriter(logdir)
    expected = {"a": {"loss": [], "perf/x": []}, "b/c": {"loss": []}}
    for i, (step, v) in enumerate(zip(steps, values)):
        w.add("a", step, {"loss": v, "perf/x": -v})
        w.add("b/c", step, {"loss": 2 * v})
        expected["a"]["loss"].append((step, _f32(v)))
        expected["a"]["perf/x"].append((step, _f32(-v)))
        expected["b/c"]["loss"].append((step, _f32(2 * v)))
        if i == 5:
            w.flush()
    w.flush()
    return expected


def test_written_scalars_read_back_exactly(tmp_path):
    expected = _write_sample(str(tmp_path))
    assert tb.read_scalars(str(tmp_path)) == expected
    for run in ("a", "b/c"):
        [name] = os.listdir(tmp_path / run)
        events = tb.read_events(str(tmp_path / run / name))
        assert events[0].file_version == "brain.Event:2" and not events[0].scalars
        assert events[0].wall_time <= events[1].wall_time


def test_tensorboard_reads_our_files_and_our_reader_stops_where_it_does(tmp_path):
    pytest.importorskip("tensorboard", reason="pip install tensorboard (the test extra)")
    from tensorboard.backend.event_processing import event_file_loader, event_multiplexer

    expected = _write_sample(str(tmp_path))
    mux = event_multiplexer.EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    assert sorted(mux.Runs()) == ["a", "b/c"]
    for run, tags in expected.items():
        assert sorted(mux.Runs()[run]["scalars"]) == sorted(tags)
        for tag, series in tags.items():
            assert [(e.step, e.value) for e in mux.Scalars(run, tag)] == series

    # A write cut by a kill: both readers stop after the last whole record.
    [name] = os.listdir(tmp_path / "a")
    path = str(tmp_path / "a" / name)
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-7])
    ours = tb.read_scalars(str(tmp_path))["a"]["loss"]
    assert ours == expected["a"]["loss"][:-1]
    theirs = [e for e in event_file_loader.EventFileLoader(path).Load() if e.HasField("summary")]
    assert [e.step for e in theirs] == [s for s, _ in ours]


def test_member_runs_are_unique_and_sort_by_member():
    assert tb.member_runs([3, 1, 2]) == ["seed_3", "seed_1", "seed_2"]
    assert tb.member_runs([0, 0, 1]) == ["member_0_seed_0", "member_1_seed_0",
                                         "member_2_seed_1"]
    runs = tb.member_runs([0, 1] * 6)
    assert runs[:2] == ["member_00_seed_0", "member_01_seed_1"] and runs == sorted(runs)


def test_steps_per_sec_leaves_out_the_last_chunks_checkpoint(tmp_path, monkeypatch):
    """A chunk ends when its metrics reach the host: a slow checkpoint after the last
    chunk (the first save of a short fit pays one-time costs) is not in its rate."""
    save = training._save

    def slow_save(*args, **kw):
        time.sleep(1.0)
        return save(*args, **kw)

    monkeypatch.setattr(training, "_save", slow_save)
    wd = Workdir(str(tmp_path))
    _fit(wd, num_steps=20, checkpoint_every=100)  # one save, after the last chunk
    (step, rate), = tb.read_scalars(_logdir(wd))["mean"]["perf/steps_per_sec"]
    assert step == 20 and rate > 10 / 0.5  # 10 steps of a 2-weight model, far under 0.5 s


def test_fit_writes_a_run_per_member_and_the_mean_equal_to_metrics_jsonl(tmp_path):
    wd = Workdir(str(tmp_path))
    _fit(wd)
    got = tb.read_scalars(_logdir(wd))
    _assert_one_file_per_run(_logdir(wd))
    assert sorted(got) == ["mean", *MEMBERS]
    rows = wd.read_metrics()
    steps = [r["train_step"] for r in rows]
    assert steps == list(range(5, 41, 5))
    for tag in METRICS:
        for m, run in enumerate(MEMBERS):
            assert got[run][tag] == [(s, _f32(r[tag][m])) for s, r in zip(steps, rows)]
        assert got["mean"][tag] == [(s, _f32(r[f"{tag}_mean"])) for s, r in zip(steps, rows)]
    perf = got["mean"]
    assert [s for s, _ in perf["perf/first_chunk_s"]] == [10]
    assert [s for s, _ in perf["perf/compile_s"]] == [20]
    assert [s for s, _ in perf["perf/steps_per_sec"]] == [20, 30, 40]
    assert all(v > 0 for _, v in perf["perf/steps_per_sec"]) and perf["perf/eta_s"][-1][1] == 0

    off = Workdir(str(tmp_path / "off"))
    _fit(off, tensorboard=False)
    assert not os.path.exists(off.file("tensorboard"))


def test_resumed_fit_ends_with_the_event_files_of_an_uninterrupted_one(tmp_path):
    class Killed(Exception):
        pass

    def kill_at_30(step):
        if step == 30:
            raise Killed()

    reference = Workdir(str(tmp_path / "reference"))
    _fit(reference, checkpoint_every=2)
    wd = Workdir(str(tmp_path / "run"))
    with pytest.raises(Killed):  # checkpoint at 20; rows and events up to 30
        _fit(wd, checkpoint_every=2, on_chunk=kill_at_30)
    before = tb.read_run_events(_logdir(wd))
    assert before["seed_0"][-1].step == 30

    _fit(wd, checkpoint_every=2)  # drops the rows after 20, then logs 25 ... 40 again
    _assert_one_file_per_run(_logdir(wd))
    want, got = tb.read_scalars(_logdir(reference)), tb.read_scalars(_logdir(wd))
    assert sorted(got) == sorted(want)
    for run in want:
        metrics = {t for t in want[run] if not t.startswith("perf/")}
        assert metrics == {t for t in got[run] if not t.startswith("perf/")}
        for tag in metrics:
            assert got[run][tag] == want[run][tag]
        for tag, series in got[run].items():  # timings too: every step once, in order
            steps = [s for s, _ in series]
            assert steps == sorted(set(steps))
    # The timings of the first attempt up to the checkpoint stay, with the steps' wall times.
    assert [s for s, _ in got["mean"]["perf/steps_per_sec"]] == [20, 40]
    after = {e.step: e.wall_time for e in tb.read_run_events(_logdir(wd))["seed_0"]}
    assert all(after[e.step] == e.wall_time for e in before["seed_0"] if e.step <= 20)


def test_progress_line_shows_first_chunk_speed_eta_and_compile_once(caplog):
    caplog.set_level(logging.INFO, logger="absl")
    _fit(None)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[train] step")]
    assert len(lines) == 3  # chunks 1 and 2 and the last (the others are within 10 s)
    assert "first chunk (compile + run)" in lines[0] and "steps/s" not in lines[0]
    assert "steps/s x 3 nets" in lines[1] and "ETA" in lines[1] and "compile ~" in lines[1]
    assert lines[2].startswith("[train] step 40/40") and "done in" in lines[2]
    assert sum("compile" in line for line in lines) == 2  # first chunk's wording + estimate
