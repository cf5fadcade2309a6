"""Tests of `launch`: sweep combinators, workdir names, the local runner and aggregation.

The runner tests launch tests/fixtures/fake_experiment (absl + config_flags, no
jax) as real subprocesses, so the whole file runs in a few seconds.
"""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from launch import aggregate, jobs, runner
from launch.sweep import Run, Sweep, as_sweep, chain, fixed, load_sweep, product, sweep, zipit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")


def fake_sweep(job_list, name="fake"):
    return Sweep(experiment="fake_experiment.main", config="fake_experiment/config.py:smoke",
                 jobs=job_list, name=name)


def run(job_list, root, **kwargs):
    kwargs.setdefault("log", lambda msg: None)
    return runner.run_sweep(fake_sweep(job_list), str(root), cwd=FIXTURES, **kwargs)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def max_concurrency(results):
    """Most jobs alive at once, from the runner's launch/exit times."""
    events = sorted([(r.start, 1) for r in results] + [(r.end, -1) for r in results],
                    key=lambda e: (e[0], e[1]))  # an exit before a launch at the same time
    alive = peak = 0
    for _, delta in events:
        alive += delta
        peak = max(peak, alive)
    return peak


# -- combinators ----------------------------------------------------------------------------------


def test_sweep_and_product_sizes_and_order():
    assert sweep("a", [1, 2, 3]) == [{"a": 1}, {"a": 2}, {"a": 3}]
    jobs_ = product(sweep("a", [1, 2]), sweep("b", ["x", "y", "z"]))
    assert len(jobs_) == 6
    assert jobs_[:3] == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 1, "b": "z"}]
    assert len(product(sweep("a", range(2)), sweep("b", range(3)), sweep("c", range(4)))) == 24
    assert product() == [{}]
    assert product(fixed("c", 0.5), sweep("a", [1, 2])) == [{"c": 0.5, "a": 1}, {"c": 0.5, "a": 2}]
    assert chain(sweep("a", [1]), sweep("b", [2])) == [{"a": 1}, {"b": 2}]


def test_zipit_and_nesting():
    assert zipit(sweep("a", [1, 2]), sweep("b", [3, 4])) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    nested = product(sweep("seed", [0, 1]), zipit(sweep("lr", [0.1, 0.2]), sweep("wd", [0.0, 1.0])))
    assert len(nested) == 4 and nested[1] == {"seed": 0, "lr": 0.2, "wd": 1.0}


def test_zipit_length_mismatch_raises():
    with pytest.raises(ValueError, match="equal length.*\\[2, 3\\]"):
        zipit(sweep("a", [1, 2]), sweep("b", [1, 2, 3]))


def test_combinator_errors():
    with pytest.raises(ValueError, match="two different values for 'a'"):
        product(sweep("a", [1]), sweep("a", [2]))
    with pytest.raises(ValueError, match="no values"):
        sweep("a", [])
    with pytest.raises(TypeError, match="scalar"):
        sweep("a", [{"nested": 1}])
    assert sweep("seeds", [[0, 1]]) == [{"seeds": (0, 1)}]  # lists become tuples


# -- sweep files ----------------------------------------------------------------------------------


def test_example_sweep_file():
    s = load_sweep(os.path.join(REPO, "launch", "sweeps", "gbi_toy_seeds.py"))
    assert s.name == "gbi_toy_seeds"
    assert s.experiment == "experiments.gbi_toy.main"
    assert s.config == "experiments/gbi_toy/config.py:smoke"
    assert len(s.jobs) == 6
    assert {(j["seed"], j["latent.lr"]) for j in s.jobs} == {
        (seed, lr) for seed in (0, 1, 2) for lr in (0.1, 0.3)}


def test_sweep_file_with_arg_and_dict(tmp_path):
    path = tmp_path / "s.py"
    path.write_text(textwrap.dedent("""
        def get_sweep(arg="2"):
            return {"experiment": "m.main", "config": "c.py",
                    "jobs": [{"seed": i} for i in range(int(arg))]}
    """))
    assert len(load_sweep(str(path)).jobs) == 2
    assert len(load_sweep(f"{path}:5").jobs) == 5


def test_bad_sweep_files(tmp_path):
    missing = tmp_path / "no_get_sweep.py"
    missing.write_text("SWEEP = []\n")
    with pytest.raises(AttributeError, match="defines no get_sweep"):
        load_sweep(str(missing))
    with pytest.raises(FileNotFoundError, match="not found"):
        load_sweep(str(tmp_path / "nope.py"))
    bad_keys = tmp_path / "bad_keys.py"
    bad_keys.write_text("def get_sweep():\n    return {'experiment': 'm', 'jobs': [{}]}\n")
    with pytest.raises(ValueError, match=r"missing keys \['config'\]"):
        load_sweep(str(bad_keys))
    with pytest.raises(TypeError, match="must return"):
        as_sweep([{"a": 1}])
    with pytest.raises(ValueError, match="empty"):
        Sweep("m", "c.py", [])


def test_unknown_mode(tmp_path):
    with pytest.raises(ValueError, match="unknown mode 'threads'.*processes, vmap"):
        run([{"seed": 0}], tmp_path, mode="threads")


# -- workdir names and commands -------------------------------------------------------------------


def test_workdir_names_are_stable_readable_and_safe():
    assert jobs.workdir_name({"seed": 0, "latent.lr": 0.1}) == "latent.lr=0.1,seed=0"
    assert jobs.workdir_name({"latent.lr": 0.1, "seed": 0}) == "latent.lr=0.1,seed=0"
    assert jobs.workdir_name({}) == "default"
    assert jobs.workdir_name({"seeds": (0, 1, 2)}) == "seeds=0_1_2"
    assert jobs.workdir_name({"lr": 1e-5, "flag": True}) == "flag=True,lr=1e-05"
    odd = jobs.workdir_name({"data.path": "/tmp/some dir/x*", "n": 1})
    assert "/" not in odd and " " not in odd and "*" not in odd
    assert odd == jobs.workdir_name({"n": 1, "data.path": "/tmp/some dir/x*"})  # stable
    assert odd != jobs.workdir_name({"data.path": "/tmp/some_dir/x?", "n": 1})  # hash differs
    assert jobs.workdir_name({"name": "1"}) != jobs.workdir_name({"name": 1})
    long = jobs.workdir_name({f"key{i}": "value" * 3 for i in range(20)})
    assert len(long) <= 120
    names = {jobs.workdir_name(o) for o in product(sweep("a", [0.1, 0.2]), sweep("b", [1, 2]))}
    assert len(names) == 4


def test_duplicate_jobs_rejected():
    with pytest.raises(ValueError, match="same workdir"):
        jobs.plan_jobs([{"seed": 0}, {"seed": 0}])


def test_command_uses_config_flags_syntax():
    s = fake_sweep([{}])
    job = jobs.Job("x", {"seeds": (0, 1), "latent.lr": 0.1, "tag": "a b", "fail": False})
    argv = jobs.command(s, job, "/tmp/x", python="py")
    assert argv[:5] == ["py", "-m", "fake_experiment.main",
                        "--config=fake_experiment/config.py:smoke",
                        "--workdir=/tmp/x"]
    assert argv[5:] == ["--config.seeds=(0, 1)", "--config.latent.lr=0.1", "--config.tag=a b",
                        "--config.fail=False"]


# -- runner ---------------------------------------------------------------------------------------


def test_parallel_run_failure_skip_and_aggregate(tmp_path):
    job_list = chain(product(sweep("seed", [0, 1]), sweep("latent.lr", [0.1, 0.2]),
                             fixed("sleep", 0.2)),
                     [{"fail": True}])
    messages = []
    report = run(job_list, tmp_path, parallel=3, log=messages.append)
    assert max_concurrency(report.results) == 3  # 5 jobs, at most 3 at once

    status = {r.job.name: r.status for r in report.results}
    assert status.pop("fail=True") == "failed"
    assert set(status.values()) == {"ok"} and len(status) == 4
    assert report.exit_code == 1
    failed = report.failed[0]
    assert failed.returncode != 0
    assert "fake failure requested by config.fail" in failed.log_tail
    assert any("fake failure requested" in m for m in messages)  # reported with its log tail

    ok = [r for r in report.results if r.status == "ok"]
    for r in ok:
        assert os.path.isfile(os.path.join(r.workdir, "log.txt"))
        assert os.path.isfile(os.path.join(r.workdir, "config.json"))
    results_00 = read_json(str(tmp_path / "latent.lr=0.1,seed=0,sleep=0.2" / "results.json"))
    assert results_00["loss"] == pytest.approx(0.1) and results_00["tag"] == "smoke"

    # Aggregation written after the run.
    rows = read_csv(str(tmp_path / "results.csv"))
    assert len(rows) == 4
    assert {"job", "seed", "latent.lr", "sleep", "loss", "metrics.acc", "tag"} <= set(rows[0])
    by_job = {r["job"]: r for r in rows}
    assert float(by_job["latent.lr=0.2,seed=1,sleep=0.2"]["loss"]) == pytest.approx(0.4)
    summary = (tmp_path / "summary.md").read_text()
    assert "| latent.lr | sleep | seeds | n |" in summary
    assert "fail=True" in summary  # listed as missing/failed
    # lr=0.1: loss over seeds 0, 1 = 0.1, 0.2 -> mean 0.15, sample std 0.07071
    assert "| 0.1 | 0.2 | 0, 1 | 2 |" in summary and "0.15 ± 0.07071" in summary

    # Rerun: finished jobs are skipped, the failed one is retried (and fails again).
    report2 = run(job_list, tmp_path, parallel=3)
    status2 = {r.job.name: r.status for r in report2.results}
    assert status2.pop("fail=True") == "failed"
    assert set(status2.values()) == {"skipped"}
    path = tmp_path / "latent.lr=0.1,seed=0,sleep=0.2" / "results.json"
    assert read_json(str(path)) == results_00
    assert report2.failed[0].log_tail.count("=== launch") == 1  # tail of the latest attempt only


def test_parallel_one_runs_sequentially(tmp_path):
    report = run(product(sweep("seed", [0, 1])), tmp_path, parallel=1, aggregate=False)
    assert max_concurrency(report.results) == 1
    spans = sorted((read_json(os.path.join(r.workdir, "results.json"))["start"],
                    read_json(os.path.join(r.workdir, "results.json"))["end"])
                   for r in report.results)
    assert spans[0][1] <= spans[1][0]
    assert not os.path.exists(tmp_path / "results.csv")


def test_named_runs_with_their_own_configs_and_sweep_defaults(tmp_path):
    s = Sweep(experiment="fake_experiment.main", config=None, name="named",
              jobs=[Run("first", {"latent.lr": 0.5}, config="fake_experiment/config.py"),
                    Run("second", {"seed": 1, "sleep": 0.2},
                        config="fake_experiment/config.py:smoke"),
                    Run("third", {"sleep": 0.2}, config="fake_experiment/config.py:smoke")],
              parallel=1, aggregate=False)
    assert s.configs() == ["fake_experiment/config.py", "fake_experiment/config.py:smoke"]
    report = runner.run_sweep(s, str(tmp_path), cwd=FIXTURES, log=lambda m: None)
    assert [r.status for r in report.results] == ["ok", "ok", "ok"]
    assert max_concurrency(report.results) == 1  # the sweep's parallel
    assert not os.path.exists(tmp_path / "results.csv")  # the sweep's aggregate
    first = read_json(str(tmp_path / "first" / "results.json"))
    assert first["tag"] == "default" and first["loss"] == pytest.approx(0.5)
    second = read_json(str(tmp_path / "second" / "results.json"))
    assert second["tag"] == "smoke" and second["loss"] == pytest.approx(0.2)
    meta = read_json(str(tmp_path / "first" / "job.json"))
    assert meta["config"] == "fake_experiment/config.py" and meta["name"] == "first"
    # explicit arguments win over the sweep's defaults
    report = runner.run_sweep(s, str(tmp_path / "b"), cwd=FIXTURES, parallel=2, aggregate=True,
                              log=lambda m: None)
    assert max_concurrency(report.results) == 2
    assert len(read_csv(str(tmp_path / "b" / "results.csv"))) == 3


def test_bad_runs_rejected():
    with pytest.raises(ValueError, match="directory name"):
        Run("a/b")
    with pytest.raises(ValueError, match="directory name"):
        Run("..")
    with pytest.raises(ValueError, match="has no config"):
        Sweep("m", None, [Run("a")])
    with pytest.raises(ValueError, match="plain dict but Sweep.config is None"):
        Sweep("m", None, [Run("a", config="c.py"), {"seed": 0}])
    with pytest.raises(ValueError, match="same workdir 'a'"):
        jobs.plan_jobs([Run("a"), Run("a", {"seed": 1})])
    with pytest.raises(ValueError, match="parallel"):
        Sweep("m", "c.py", [{}], parallel=0)


def test_sweep_file_with_a_dataclass_and_defaults(tmp_path):
    path = tmp_path / "s.py"
    path.write_text(textwrap.dedent("""
        from __future__ import annotations
        import dataclasses
        from launch.sweep import Run, Sweep

        @dataclasses.dataclass(frozen=True)
        class Spec:
            name: str
            lr: float

        def get_sweep():
            return Sweep("m", "c.py", [Run(s.name, {"lr": s.lr}) for s in (Spec("x", 0.1),)],
                         root="workdirs/x", parallel=1)
    """))
    s = load_sweep(str(path))
    assert (s.root, s.parallel, s.name) == ("workdirs/x", 1, "s")
    assert [j.name for j in jobs.plan_jobs(s.jobs)] == ["x"]


def test_dry_run_writes_nothing(tmp_path):
    root = tmp_path / "root"
    report = run([{"seed": 0}, {"seed": 1}], root, dry_run=True)
    assert [r.status for r in report.results] == ["dry_run", "dry_run"]
    assert "--config.seed=1" in report.results[1].command
    assert not root.exists()


def test_every_job_is_validated_before_any_runs(tmp_path):
    root = tmp_path / "root"
    job_list = [{"latent.lr": 0.1}, {"latent.lr": -1.0}, {"latent.nope": 1}, {"sleep": "x"}]
    for dry_run in (True, False):
        report = run(job_list, root, dry_run=dry_run)
        assert report.exit_code == 2
        notes = {r.job.name: r.note for r in report.invalid}
        assert sorted(notes) == ["latent.lr=-1.0", "latent.nope=1", "sleep=x"]
        assert "config.latent.lr: must be > 0" in notes["latent.lr=-1.0"]
        assert "--config.latent.nope: latent has no field 'nope'" in notes["latent.nope=1"]
        assert "--config.sleep='x'" in notes["sleep=x"]
        assert not root.exists()  # nothing ran, nothing was written


def test_a_workdir_without_the_completion_marker_runs_again(tmp_path):
    job_list = [{"seed": 0}, {"seed": 1}]
    assert run(job_list, tmp_path).exit_code == 0
    os.remove(tmp_path / "seed=1" / "complete.json")  # as if stopped after results.json
    assert jobs.COMPLETE_FILE == __import__("gbi_jax.workdir").workdir.COMPLETE_FILE
    to_run, done = runner.plan(fake_sweep(job_list), str(tmp_path))
    assert [j.name for j in to_run] == ["seed=1"] and [j.name for j in done] == ["seed=0"]
    report = run(job_list, tmp_path)
    assert [(r.job.name, r.status) for r in report.results] == [("seed=0", "skipped"),
                                                                ("seed=1", "ok")]
    report = run([{"skip_marker": True}], tmp_path)  # exits 0 but never marks completion
    assert report.results[0].status == "failed" and "complete.json" in report.results[0].note


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL])
def test_killing_the_runner_stops_its_jobs(tmp_path, sig):
    sweep_file = tmp_path / "slow_sweep.py"
    sweep_file.write_text(textwrap.dedent("""
        from launch.sweep import Sweep

        def get_sweep():
            return Sweep(experiment="fake_experiment.main", config="fake_experiment/config.py",
                         jobs=[{"sleep": 60.0}, {"sleep": 61.0}], parallel=2)
    """))
    root = tmp_path / "root"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-m", "launch.run", f"--sweep={sweep_file}",
                             f"--root={root}"], cwd=FIXTURES, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids, deadline = [], time.time() + 30
    while len(pids) < 2 and time.time() < deadline:
        time.sleep(0.1)
        pids = []
        for name in ("sleep=60.0", "sleep=61.0"):
            try:
                found = re.findall(r"pid=(\d+)", (root / name / "log.txt").read_text())
            except FileNotFoundError:
                found = []
            pids += [int(p) for p in found[-1:]]
    try:
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(timeout=20)
        deadline = time.time() + 15
        while any(_alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(p) for p in pids)
    finally:
        proc.kill()
        for p in pids:
            if _alive(p):
                os.kill(p, signal.SIGKILL)


def test_vmap_mode_merges_seeds_and_splits_results(tmp_path):
    job_list = product(fixed("seeds", (0,)), sweep("seed", [0, 1, 2]),
                       sweep("latent.lr", [0.1, 0.2]))
    report = run(job_list, tmp_path, mode="vmap", parallel=2)
    assert report.exit_code == 0
    assert sorted(r.job.name for r in report.results) == [
        "latent.lr=0.1,seeds=0_1_2", "latent.lr=0.2,seeds=0_1_2"]
    merged = read_json(str(tmp_path / "latent.lr=0.1,seeds=0_1_2" / "results.json"))
    assert merged["seeds_run"] == [0, 1, 2]
    assert read_json(str(tmp_path / "latent.lr=0.1,seeds=0_1_2" / "job.json"))["split"] is True

    # Per-seed workdirs hold the split results: shared keys + that seed's per_seed entry.
    for seed in (0, 1, 2):
        r = read_json(str(tmp_path / f"latent.lr=0.2,seed={seed},seeds=0" / "results.json"))
        assert r["loss"] == pytest.approx(0.2 * (seed + 1))
        assert r["metrics"]["acc"] == pytest.approx(1 - 0.1 * seed)
        assert r["seeds_run"] == [0, 1, 2]  # shared keys are copied
        assert r["summary"] == {"loss": pytest.approx(0.2 * (seed + 1))}  # summary -> own entry
        assert "per_seed" not in r

    rows = read_csv(str(tmp_path / "results.csv"))
    assert len(rows) == 6 and {r["seed"] for r in rows} == {"0", "1", "2"}
    assert len({r["pid"] for r in rows}) == 2  # 6 runs in 2 processes
    summary = (tmp_path / "summary.md").read_text()
    assert "| 0.2 | 0, 1, 2 | 3 |" in summary
    assert "0.4 ± 0.2" in summary  # loss over seeds for lr=0.2: 0.2, 0.4, 0.6

    # The per-seed workdirs count as finished in processes mode too.
    again = run(job_list, tmp_path, mode="processes")
    assert {r.status for r in again.results} == {"skipped"} and len(again.results) == 6


def test_vmap_mode_leaves_out_finished_seeds(tmp_path):
    job_list = product(sweep("seed", [0, 1, 2]), sweep("latent.lr", [0.1]))
    done_dir = tmp_path / jobs.workdir_name({"seed": 0, "latent.lr": 0.1})
    done_dir.mkdir()
    (done_dir / "results.json").write_text("{}")
    (done_dir / "complete.json").write_text("{}")
    to_run, done = runner.plan(fake_sweep(job_list), str(tmp_path), mode="vmap")
    assert [j.name for j in done] == ["latent.lr=0.1,seed=0"]
    assert [j.overrides for j in to_run] == [{"latent.lr": 0.1, "seeds": (1, 2)}]
    with pytest.raises(ValueError, match="replaces 'seeds'"):
        runner.plan(fake_sweep(product(fixed("seeds", (0, 1)), sweep("seed", [0, 1]))),
                    str(tmp_path), mode="vmap")


def test_vmap_mode_without_per_seed_keeps_merged_row(tmp_path):
    job_list = product(sweep("seed", [0, 1]), sweep("latent.lr", [0.1, 0.3]),
                       fixed("per_seed_results", False))
    report = run(job_list, tmp_path, mode="vmap")
    assert report.exit_code == 0
    assert all("no 'per_seed'" in r.note for r in report.results)
    rows = read_csv(str(tmp_path / "results.csv"))
    assert len(rows) == 2
    row = {r["latent.lr"]: r for r in rows}["0.3"]
    assert row["seeds"] == "[0, 1]" and float(row["loss"]) == pytest.approx(0.45)
    assert "| 0.3 | False | 0, 1 | 1 | " in (tmp_path / "summary.md").read_text()


# -- aggregation ----------------------------------------------------------------------------------


def test_seed_results_convention():
    merged = {"wall": 3.0, "per_seed": [{"loss": 1.0, "seed": 5}, {"loss": 2.0, "seed": 6}],
              "eval": {"acc": {"mean": 0.5, "std": 0.1, "per_seed": [0.4, 0.6]}, "n": 10,
                       "other": {"per_seed": [1, 2, 3]}}}
    assert jobs.seed_results(merged, 1, 2) == {
        "wall": 3.0, "loss": 2.0, "seed": 6,
        "eval": {"acc": 0.6, "n": 10, "other": {"per_seed": [1, 2, 3]}}}  # wrong length: kept


def test_flatten_and_standalone_aggregate(tmp_path):
    assert aggregate.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x"}) == {
        "a.b": 1, "a.c.d": [1, 2], "e": "x"}
    for seed, acc in ((0, 0.5), (1, 0.7)):
        workdir = tmp_path / f"seed={seed}"
        workdir.mkdir()
        (workdir / "job.json").write_text(json.dumps({"overrides": {"seed": seed}}))
        (workdir / "results.json").write_text(json.dumps({"eval": {"acc": acc}, "curve": [1, 2]}))
    (tmp_path / "seed=2").mkdir()
    (tmp_path / "seed=2" / "job.json").write_text(json.dumps({"overrides": {"seed": 2}}))
    (tmp_path / "seed=3").mkdir()  # one network with a per_seed breakdown: reduced to it
    (tmp_path / "seed=3" / "job.json").write_text(json.dumps({"overrides": {"seed": 3}}))
    (tmp_path / "seed=3" / "results.json").write_text(json.dumps(
        {"eval": {"acc": {"mean": 0.9, "std": 0.0, "per_seed": [0.9]}},
         "per_seed": [{"seed": 3, "eval.acc": 0.9}]}))

    proc = subprocess.run([sys.executable, "-m", "launch.aggregate", f"--root={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(str(tmp_path / "results.csv"))
    assert [r["job"] for r in rows] == ["seed=0", "seed=1", "seed=3"]
    assert rows[1]["eval.acc"] == "0.7" and rows[1]["curve"] == "[1, 2]"
    assert list(rows[0]) == ["job", "seed", "eval.acc", "curve"]  # results "seed" == override
    assert rows[2]["eval.acc"] == "0.9" and rows[2]["curve"] == ""
    summary = (tmp_path / "summary.md").read_text()
    assert "| seeds | n | eval.acc |" in summary  # lists are not summarised
    assert "| 0, 1, 3 | 3 | 0.7 ± 0.2 |" in summary
    assert "`seed=2`" in summary


def test_cli_runs_sweep_and_exits_nonzero_on_failure(tmp_path):
    sweep_file = tmp_path / "fake_sweep.py"
    sweep_file.write_text(textwrap.dedent("""
        from launch.sweep import Sweep, chain, sweep

        def get_sweep():
            return Sweep(experiment="fake_experiment.main",
                         config="fake_experiment/config.py",
                         jobs=chain(sweep("latent.lr", [0.5]), [{"fail": True}]))
    """))
    root = tmp_path / "root"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-m", "launch.run", f"--sweep={sweep_file}", f"--root={root}",
         "--parallel=2"], cwd=FIXTURES, env=env, capture_output=True, text=True, timeout=60,
        check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED fail=True" in proc.stdout
    assert "1 failed, 1 ok" in proc.stdout
    assert read_json(str(root / "latent.lr=0.5" / "results.json"))["tag"] == "default"
    assert (root / "summary.md").exists()

    bad = subprocess.run(
        [sys.executable, "-m", "launch.run", f"--sweep={sweep_file}", f"--root={root}",
         "--mode=threads"], cwd=FIXTURES, env=env, capture_output=True, text=True, timeout=60,
        check=False)
    assert bad.returncode != 0 and "--mode" in bad.stderr


# -- devices --------------------------------------------------------------------------------------


def _fake_nvidia_smi(tmp_path, gpus):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text("#!/bin/sh\n" + "".join(
        f"echo 'GPU {i}: NVIDIA H200 (UUID: GPU-{i})'\n" for i in range(gpus)))
    script.chmod(0o755)
    return str(bin_dir)


def test_accelerators_are_detected_without_jax(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path, 3) + os.pathsep + os.environ["PATH"])
    found = runner.detect_accelerators()
    assert found == runner.Accelerators("gpu", ("0", "1", "2"))
    assert runner.default_parallel(found) == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    assert runner.detect_accelerators() == runner.Accelerators("gpu", ("5", "7"))
    assert runner.default_parallel(runner.Accelerators("cpu")) == os.cpu_count()
    assert runner.default_parallel(runner.Accelerators("tpu")) == 1


def test_device_pool_gives_each_job_the_least_busy_gpu_and_memory_shares():
    one_each = runner.DevicePool(runner.Accelerators("gpu", ("0", "1")), parallel=2)
    assert one_each.acquire({}) == ("0", {"CUDA_VISIBLE_DEVICES": "0"})
    assert one_each.acquire({}) == ("1", {"CUDA_VISIBLE_DEVICES": "1"})
    shared = runner.DevicePool(runner.Accelerators("gpu", ("0", "1")), parallel=6)
    got = [shared.acquire({})[0] for _ in range(4)]
    assert got == ["0", "1", "0", "1"]
    shared.release("1")
    device, env = shared.acquire({"XLA_PYTHON_CLIENT_MEM_FRACTION": "0.9"})
    assert device == "1"  # the freed slot is reused
    assert env == {"CUDA_VISIBLE_DEVICES": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    _, env = shared.acquire({})
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.33"  # 3 jobs per GPU, rounded down
    assert runner.DevicePool(runner.Accelerators("cpu"), 4).acquire({}) == (None, {})


def test_sweep_on_a_gpu_machine_runs_one_job_per_gpu_each_on_its_own(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", _fake_nvidia_smi(tmp_path, 2) + os.pathsep + os.environ["PATH"])
    report = run(product(sweep("seed", (0, 1, 2, 3)), fixed("sleep", 0.3)), tmp_path / "root")
    assert report.exit_code == 0
    assert max_concurrency(report.results) <= 2  # default parallel: one per GPU
    envs = [read_json(os.path.join(r.workdir, "results.json"))["device_env"]
            for r in report.results]
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in envs) == ["0", "0", "1", "1"]
    assert all(e["XLA_PYTHON_CLIENT_PREALLOCATE"] is None for e in envs)  # one job per GPU
