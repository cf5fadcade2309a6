"""The SLURM executor: unit tests here, and (marked ``slurm``) tests against a real
single-node cluster started by ``.ci/slurm.sh up DIR`` with ``GBI_SLURM_CLUSTER=DIR``."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from launch import slurm
from launch.jobs import Job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER = os.environ.get("GBI_SLURM_CLUSTER")


def _run(args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "launch.run", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


SWEEP_TEXT = '''
from launch.sweep import Run, Sweep
def get_sweep():
    o = {{"seeds": (0,), "figures": False, "train.blocks": 12}}
    return Sweep(experiment="experiments.gbi_toy.main",
                 config="experiments/gbi_toy/config.py:smoke", jobs=[{jobs}])
'''
THREE_JOBS = 'Run("a", o), Run("b", {**o, "seed": 1}), Run("c", {**o, "seed": 2})'


@pytest.fixture
def sweep_file(tmp_path):
    path = tmp_path / "sweep.py"
    path.write_text(SWEEP_TEXT.format(jobs=THREE_JOBS))
    return str(path)


# ---------------------------------------------------------------------- without a cluster


@pytest.mark.parametrize("args, words", [
    (["--executor=slurm", "--timeout_min=0"], "--timeout_min must be an integer >= 1"),
    (["--executor=slurm", "--gpus_per_job=-1"], "--gpus_per_job must be an integer >= 0"),
    (["--gpus_per_job=1"], "only apply with --executor=slurm"),
    (["--status", "--retry"], "exclude each other"),
    (["--executor=slurm", "--mode=vmap"], "--mode=vmap is local only"),
])
def test_bad_slurm_flags_exit_2_with_one_message(sweep_file, tmp_path, args, words):
    r = _run([f"--sweep={sweep_file}", f"--root={tmp_path / 'root'}", *args])
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "root" / "slurm").exists()


def test_no_sbatch_on_path_is_a_clear_error(sweep_file, tmp_path):
    r = _run([f"--sweep={sweep_file}", f"--root={tmp_path / 'root'}", "--executor=slurm"],
             env={"PATH": os.path.dirname(sys.executable)})
    assert r.returncode == 2, r.stderr
    assert "needs the SLURM command 'sbatch'" in r.stderr and "Traceback" not in r.stderr


def _git_repo(path):
    def git(*a):
        subprocess.run(["git", "-C", str(path), *a], check=True, capture_output=True)
    path.mkdir()
    git("init", "-q")
    (path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    return path


def test_snapshot_refuses_a_dirty_tree_unless_asked(tmp_path):
    repo = _git_repo(tmp_path / "repo")
    root = tmp_path / "root"
    snap = slurm.snapshot(str(repo), str(root), allow_dirty=False)
    assert snap["dirty"] == [] and open(os.path.join(snap["code"], "code.py")).read() == "x = 1\n"
    (repo / "code.py").write_text("x = 2\n")
    (repo / "new.py").write_text("y = 1\n")
    with pytest.raises(slurm.runner.SweepError, match="uncommitted changes.*--allow_dirty"):
        slurm.snapshot(str(repo), str(root), allow_dirty=False)
    dirty = slurm.snapshot(str(repo), str(root), allow_dirty=True)
    assert sorted(dirty["dirty"]) == ["code.py", "new.py"]
    assert dirty["code"] != snap["code"] and dirty["commit"] == snap["commit"]
    assert open(os.path.join(dirty["code"], "code.py")).read() == "x = 2\n"
    assert os.path.exists(os.path.join(dirty["code"], "new.py"))
    # The first snapshot is untouched by later edits: requeued jobs run submitted code.
    assert open(os.path.join(snap["code"], "code.py")).read() == "x = 1\n"


def test_the_job_script_runs_submitits_process_from_the_snapshot(tmp_path):
    """submitit's own process (which unpickles `JobCommand`) starts in the job script's
    directory: the script changes into the snapshot after the user's setup lines, so a
    requeued element never loads the checkout's (possibly edited) launch code."""
    from submitit.slurm.slurm import _make_sbatch_string  # pylint: disable=import-outside-toplevel
    code = tmp_path / "code dir"
    (code / "launch").mkdir(parents=True)
    (code / "launch" / "__init__.py").write_text("")
    (code / "launch" / "slurm.py").write_text("")
    params = slurm.SlurmOptions(slurm_setup=("export A=1",)).executor_parameters(str(code))
    assert params["setup"] == ["export A=1", f"cd '{code}'"]
    script = _make_sbatch_string(command="python -m submitit.core._submit F",
                                 folder=str(tmp_path), **params)
    assert script.index("export A=1") < script.index(f"cd '{code}'") < script.index("srun")
    setup = "\n".join(params["setup"])
    out = subprocess.run(["bash", "-c", f"{setup}\n{sys.executable} -c "
                          "'import launch.slurm; print(launch.slurm.__file__)'"], cwd=ROOT,
                         capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert out.stdout.strip() == str(code / "launch" / "slurm.py")


def test_parse_sacct_expands_pending_ranges_and_keeps_the_last_start():
    text = "12_0|COMPLETED\n12_1|RUNNING\n12_1|REQUEUED\n12_[2-4,7%2]|PENDING\n13|CANCELLED by 0\n"
    states = slurm.parse_sacct(text)
    assert states == {"12_0": "COMPLETED", "12_1": "REQUEUED", "12_2": "PENDING",
                      "12_3": "PENDING", "12_4": "PENDING", "12_7": "PENDING", "13": "CANCELLED"}


def test_job_state_joins_the_scheduler_and_the_workdir(tmp_path):
    job = Job(name="j", overrides={})
    element = {"job_id": "5_0"}
    assert slurm.job_state(str(tmp_path), job, None, {}) == "not submitted"
    assert slurm.job_state(str(tmp_path), job, element, {}) == "unknown"
    for sched, ours in [("PENDING", "pending"), ("REQUEUED", "pending"),
                        ("RUNNING", "running"), ("FAILED", "failed"),
                        ("CANCELLED", "failed"), ("TIMEOUT", "failed"),
                        ("COMPLETED", "failed")]:  # completed without complete.json
        assert slurm.job_state(str(tmp_path), job, element, {"5_0": sched}) == ours
    # A pending element cancelled before it started is listed under the array's id.
    assert slurm.job_state(str(tmp_path), job, element, {"5": "CANCELLED"}) == "failed"
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "complete.json").write_text("{}")
    assert slurm.job_state(str(tmp_path), job, element, {"5_0": "FAILED"}) == "finished"


def test_status_of_a_sweep_never_submitted(sweep_file, tmp_path):
    r = _run([f"--sweep={sweep_file}", f"--root={tmp_path / 'root'}", "--status"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("not submitted") == 4  # three rows and the count line


# ---------------------------------------------------------------------- a real cluster

needs_cluster = pytest.mark.skipif(
    not CLUSTER or not os.path.exists(os.path.join(CLUSTER or "", "slurm.conf")),
    reason="no SLURM cluster: start one with `.ci/slurm.sh up DIR` (root, apt) and set "
           "GBI_SLURM_CLUSTER=DIR")


def _without_timing(tree):
    if isinstance(tree, dict):
        return {k: _without_timing(v) for k, v in tree.items()
                if not re.search(r"time|second|per_s|rate", k)}
    if isinstance(tree, list):
        return [_without_timing(v) for v in tree]
    return tree


def _metrics(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if "time" not in k} for r in rows]


def _status(sweep_file, root, env):
    r = _run([f"--sweep={sweep_file}", f"--root={root}", "--status"], env=env)
    return r, {line.split()[0]: line.split()[1] for line in r.stdout.splitlines()[1:-1]}


def _poll(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.slurm
@needs_cluster
def test_array_sweep_preemption_resume_failure_and_retry(sweep_file, tmp_path):
    """One array job of 3 training runs: job a is preempted by a higher-priority job after
    a checkpoint and resumes to the results of an uninterrupted run; job c fails, is
    reported failed and finishes on --retry; the results aggregate into one table."""
    env = {"SLURM_CONF": os.path.join(CLUSTER, "slurm.conf")}
    root = tmp_path / "root"
    (root / "c").mkdir(parents=True)
    (root / "c" / "checkpoints").write_text("")  # a file where c needs a directory: c fails
    t0 = time.monotonic()
    r = _run([f"--sweep={sweep_file}", f"--root={root}", "--executor=slurm", "--allow_dirty",
              "--timeout_min=30"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "submitted 3 job(s) as SLURM array job" in r.stdout
    record = slurm.read_records(str(root))[-1]
    assert len({e["job_id"].split("_")[0] for e in record["jobs"]}) == 1  # one array job
    assert os.path.isdir(record["code"]) and len(record["commit"]) == 40
    _, states = _status(sweep_file, root, env)
    assert set(states) == {"a", "b", "c"}
    assert set(states.values()) <= {"pending", "running", "failed"}

    # The uninterrupted reference for a: the same job through the local executor.
    ref_sweep = tmp_path / "ref.py"
    ref_sweep.write_text(SWEEP_TEXT.format(jobs='Run("a", o)'))
    ref = subprocess.Popen([sys.executable, "-m", "launch.run", f"--sweep={ref_sweep}",
                            f"--root={tmp_path / 'ref'}", "--noaggregate"], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    ckpt = root / "a" / "checkpoints" / "train"
    _poll(lambda: ckpt.is_dir() and any(p.isdigit() for p in os.listdir(ckpt)), 180,
          "a's first checkpoint")
    preempted_at = time.monotonic()
    subprocess.run(["sbatch", "-p", "high", "-c", "4", "-o", str(tmp_path / "high.out"),
                    "--wrap", "sleep 3"], check=True, env={**os.environ, **env},
                   capture_output=True)
    log = root / "a" / "log.txt"
    _poll(lambda: log.read_text().count("=== launch") >= 2, 180, "a to be requeued")
    resumed_after = time.monotonic() - preempted_at
    final = _poll(lambda: (lambda s: s if not set(s.values()) & {"pending", "running",
                                                                "unknown"} else None)(
        _status(sweep_file, root, env)[1]), 300, "the sweep to end")
    assert final == {"a": "finished", "b": "finished", "c": "failed"}, final
    r, _ = _status(sweep_file, root, env)
    assert r.returncode == 1 and str(root / "c" / "log.txt") in r.stdout
    assert "resumed from checkpoint" in log.read_text()
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    want = json.loads((tmp_path / "ref" / "a" / "results.json").read_text())
    got = json.loads((root / "a" / "results.json").read_text())
    assert _without_timing(got) == _without_timing(want)
    assert _metrics(root / "a" / "metrics.jsonl") == _metrics(tmp_path / "ref" / "a" /
                                                              "metrics.jsonl")

    os.remove(root / "c" / "checkpoints")
    r = _run([f"--sweep={sweep_file}", f"--root={root}", "--retry", "--wait", "--allow_dirty",
              "--timeout_min=30"], env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resubmitting 1 failed job(s): c" in r.stdout
    assert _status(sweep_file, root, env)[1] == {"a": "finished", "b": "finished",
                                                 "c": "finished"}
    with open(root / "results.csv") as f:
        assert len(f.read().strip().splitlines()) == 4  # header + 3 runs
    print(f"\nSLURM sweep: 3 jobs + preemption + retry in {time.monotonic() - t0:.0f} s; "
          f"preemption to resumed start {resumed_after:.1f} s")


@pytest.mark.slurm
@needs_cluster
def test_cancel_stops_the_sweep(sweep_file, tmp_path):
    env = {"SLURM_CONF": os.path.join(CLUSTER, "slurm.conf")}
    root = tmp_path / "root"
    r = _run([f"--sweep={sweep_file}", f"--root={root}", "--executor=slurm", "--allow_dirty",
              "--timeout_min=30", "--cpus_per_job=4"], env=env)  # one at a time
    assert r.returncode == 0, r.stdout + r.stderr
    r = _run([f"--sweep={sweep_file}", f"--root={root}", "--cancel"], env=env)
    assert r.returncode == 0 and "cancelled 3 job(s)" in r.stdout, r.stdout + r.stderr
    states = _poll(lambda: (lambda s: s if set(s.values()) == {"failed"} else None)(
        _status(sweep_file, root, env)[1]), 60, "the cancelled jobs to end")
    assert states == {"a": "failed", "b": "failed", "c": "failed"}
    shutil.rmtree(root)
