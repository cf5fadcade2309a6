"""gbi_jax.workdir: config claims, conflicts and overrides, metrics reconciled after a kill,
locks, the completion marker, results in the run's key order, non-finite floats, atomic
array files."""

import json
import math
import os

import numpy as np
import pytest

from gbi_jax.workdir import (CorruptWorkdirError, Workdir, WorkdirConflictError, WorkdirLockedError,
                            from_jsonable, to_jsonable)


def test_workdir_refuses_a_different_config(tmp_path):
    wd = Workdir(str(tmp_path))
    assert wd.claim({"a": 1, "b": {"c": 2}, "log": 1}) is False
    assert wd.claim({"a": 1, "b": {"c": 2}, "log": 1}) is True
    assert wd.claim({"a": 1, "b": {"c": 2}, "log": 5}, ignore=("log",)) is True
    with pytest.raises(WorkdirConflictError, match=r"b\.c: 2 -> 3"):
        wd.claim({"a": 1, "b": {"c": 3}, "log": 1})
    with open(wd.file("config.json")) as f:
        assert json.load(f)["b"]["c"] == 2  # nothing overwritten


def test_workdir_metrics_survive_a_cut_line(tmp_path):
    wd = Workdir(str(tmp_path))
    wd.append_metrics([{"train_step": 1, "x": np.float32(0.5)}, {"train_step": 2, "x": 1.0}])
    with open(wd.file("metrics.jsonl"), "a") as f:
        f.write('{"train_step": 3, "x"')  # killed mid-write
    assert [r["train_step"] for r in wd.read_metrics()] == [1, 2]
    wd.reconcile_metrics("train_step", 1)
    assert [r["train_step"] for r in wd.read_metrics()] == [1]


def test_results_keep_the_run_key_order_and_exact_floats(tmp_path):
    wd = Workdir(str(tmp_path))
    results = {"zeta": {"mnist": 1, "fashion": 2}, "alpha": [np.float32(0.1), 1 / 3]}
    wd.write_results(results)
    back = wd.read_results()
    assert list(back) == ["zeta", "alpha"] and list(back["zeta"]) == ["mnist", "fashion"]
    assert back["alpha"] == [float(np.float32(0.1)), 1 / 3]  # JSON floats round-trip exactly


def test_from_jsonable_restores_non_finite_floats():
    obj = {"a": [np.nan, np.inf, -np.inf, 1.5], "b": {"c": float("nan")}, "d": "name"}
    back = from_jsonable(json.loads(json.dumps(to_jsonable(obj))))
    assert math.isnan(back["a"][0]) and back["a"][1:] == [math.inf, -math.inf, 1.5]
    assert math.isnan(back["b"]["c"]) and back["d"] == "name"


def test_arrays_round_trip_and_are_replaced_atomically(tmp_path):
    wd = Workdir(str(tmp_path))
    assert wd.read_arrays() is None
    arrays = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "arm": np.array(["gbi", "b"])}
    wd.write_arrays(arrays)
    back = wd.read_arrays()
    assert back.keys() == arrays.keys()
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v)
    wd.write_arrays({"y": np.zeros(2)})  # a rewrite replaces the whole file
    assert list(wd.read_arrays()) == ["y"]
    assert os.listdir(tmp_path) == ["arrays.npz"]  # no temporary file left behind
    with pytest.raises(ValueError, match="obj"):
        wd.write_arrays({"obj": np.array([{}, None], dtype=object)})
    assert list(wd.read_arrays()) == ["y"]


def _metric_lines(wd):
    with open(wd.file("metrics.jsonl")) as f:
        return f.read().splitlines()


def test_reconcile_drops_only_the_restarted_fits_rows_and_a_torn_last_line(tmp_path):
    wd = Workdir(str(tmp_path))
    wd.append_metrics([{"a_step": 1}, {"a_step": 2}, {"b_step": 1}, {"b_step": 2}])
    with open(wd.file("metrics.jsonl"), "a") as f:
        f.write('{"b_step": 3, "x"')  # killed mid-write
    assert wd.reconcile_metrics("b_step", 1) == 1  # b_step 2 (the torn row is not counted)
    assert wd.read_metrics() == [{"a_step": 1}, {"a_step": 2}, {"b_step": 1}]
    assert _metric_lines(wd)[-1] == '{"b_step": 1}'  # the torn line is gone from the file
    assert wd.reconcile_metrics("a_step", 0) == 2  # a fit restarting from scratch
    assert wd.read_metrics() == [{"b_step": 1}]
    before = os.stat(wd.file("metrics.jsonl")).st_mtime_ns
    assert wd.reconcile_metrics("b_step", 5) == 0
    assert os.stat(wd.file("metrics.jsonl")).st_mtime_ns == before  # nothing to rewrite
    with open(wd.file("metrics.jsonl"), "a") as f:
        f.write('{"b_step": 2}')  # complete, but killed before its newline
    wd.reconcile_metrics("b_step", 5)
    wd.append_metrics([{"b_step": 3}])
    assert _metric_lines(wd) == ['{"b_step": 1}', '{"b_step": 2}', '{"b_step": 3}']


def test_a_corrupt_middle_line_is_reported_and_nothing_is_dropped(tmp_path):
    wd = Workdir(str(tmp_path))
    wd.append_metrics([{"train_step": s} for s in range(1, 31)])
    lines = _metric_lines(wd)
    lines[7] = lines[7][:5]  # line 8 of 30 cut in the middle
    with open(wd.file("metrics.jsonl"), "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(wd.file("metrics.jsonl"), "rb") as f:
        content = f.read()
    for call in (wd.read_metrics, lambda: wd.reconcile_metrics("train_step", 10)):
        with pytest.raises(CorruptWorkdirError, match=r"metrics\.jsonl: line 8 .*by hand"):
            call()
    with open(wd.file("metrics.jsonl"), "rb") as f:
        assert f.read() == content  # byte for byte unchanged


def test_claim_ignores_runtime_fields_and_records_deliberate_overrides(tmp_path):
    wd = Workdir(str(tmp_path))
    cfg = {"train": {"lr": 0.1, "steps": 5}, "data": {"dir": "/a", "n": 3}, "runtime": {"x": 1}}
    assert wd.claim(cfg) is False
    changed = {"train": {"lr": 0.1, "steps": 5}, "data": {"dir": "/b", "n": 3},
               "runtime": {"x": 2, "y": 0}}
    assert wd.claim(changed, ignore=("runtime", "data.dir")) is True
    with pytest.raises(WorkdirConflictError, match=r"data\.n: 3 -> 4"):
        wd.claim({**cfg, "data": {"dir": "/a", "n": 4}}, ignore=("data.dir",))
    lower = {**cfg, "train": {"lr": 0.01, "steps": 5}}
    with pytest.raises(WorkdirConflictError, match=r"(?s)train\.lr: 0\.1 -> 0\.01.*override_ok"):
        wd.claim(lower)
    assert wd.claim(lower, override_ok=("train.lr",)) is True
    with open(wd.file("config.json")) as f:
        stored = json.load(f)
    assert stored["train"] == {"lr": 0.01, "steps": 5} and stored["data"]["dir"] == "/a"
    with open(wd.file("history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    assert [(h["field"], h["old"], h["new"]) for h in history] == [("train.lr", 0.1, 0.01)]
    assert wd.claim(lower) is True  # the stored config now holds the new value
    with pytest.raises(WorkdirConflictError, match="steps"):  # only the listed field is free
        wd.claim({**cfg, "train": {"lr": 0.5, "steps": 6}}, override_ok=("train.lr",))


def test_a_claim_that_trained_nothing_is_released(tmp_path):
    path = tmp_path / "run"
    wd = Workdir(str(path))
    assert wd.release_claim_if_untouched() is False  # nothing claimed
    wd.claim({"a": 1})
    assert wd.release_claim_if_untouched() is True
    assert not path.exists()  # the claim made the directory, so it is gone again
    wd = Workdir(str(path))
    wd.claim({"a": 1})
    wd.append_metrics([{"train_step": 1}])
    assert wd.release_claim_if_untouched() is False  # training output is never removed
    assert os.path.exists(wd.file("config.json"))
    resumed = Workdir(str(path))
    assert resumed.claim({"a": 1}) is True
    assert resumed.release_claim_if_untouched() is False  # not this object's claim


_HOLD_LOCK = r"""
import sys, time
from gbi_jax.workdir import Workdir
with Workdir(sys.argv[1]).lock():
    print("held", flush=True)
    time.sleep(60)
"""


def test_lock_refuses_a_second_process_naming_its_pid(tmp_path):
    import subprocess
    import sys

    wd = Workdir(str(tmp_path))
    with wd.lock(), wd.lock():  # re-entrant in one process
        pass
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], cwd=root,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirLockedError, match=rf"PID {holder.pid}\b") as info:
            with wd.lock():
                pass
        assert info.value.pid == holder.pid
    finally:
        holder.kill()  # SIGKILL: the kernel releases the lock
        holder.wait()
    with wd.lock():
        with open(wd.file("lock")) as f:
            assert int(f.read()) == os.getpid()


def test_finish_writes_the_completion_marker_last(tmp_path):
    wd = Workdir(str(tmp_path))
    seen = []

    def draw(path):
        seen.append((wd.read_results(), wd.is_complete()))
        raise KeyboardInterrupt  # killed while drawing

    with pytest.raises(KeyboardInterrupt):
        wd.finish({"x": 1}, "report", draw)
    assert seen == [({"x": 1}, False)] and not wd.is_complete()
    assert not os.path.exists(wd.file("results.md"))
    wd.finish({"x": 1}, "report", lambda path: seen.append("drawn"))  # the rerun redoes it
    assert seen[-1] == "drawn" and wd.is_complete()
    with open(wd.file("results.md")) as f:
        assert f.read() == "report\n"
    assert sorted(os.listdir(tmp_path)) == ["complete.json", "results.json", "results.md"]
