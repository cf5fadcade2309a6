"""gbi_jax.workdir: config claims and conflicts, metrics that survive a kill, results in
the run's key order, non-finite floats, atomic array files."""

import json
import math
import os

import numpy as np
import pytest

from gbi_jax.workdir import Workdir, WorkdirConflictError, from_jsonable, to_jsonable


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
    wd.truncate_metrics(1, key="train_step")
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
