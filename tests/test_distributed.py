"""Training and an experiment as a ``jax.distributed`` program of two local processes
(127.0.0.1, CPU host devices), against the same work in one process."""

import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIT = os.path.join(ROOT, "tests", "distributed_fit.py")
TIMEOUT = 240  # a hang (e.g. a process waiting for a peer that died) fails, never blocks


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.endswith("HOST_DEVICES")}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT
    return env


def _run_all(argvs, devices):
    """Start every argv at once; returns their (returncode, output)."""
    procs = [subprocess.Popen(a, cwd=ROOT, env=_env(devices), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for a in argvs]
    out = []
    try:
        for p in procs:
            text, _ = p.communicate(timeout=TIMEOUT)
            out.append((p.returncode, text))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out


def _fit(workdir, out, processes, devices, die_at=None):
    port = _port()
    argvs = []
    for i in range(processes):
        a = [sys.executable, FIT, f"--workdir={workdir}", f"--out={out}"]
        if processes > 1:
            a += [f"--num_processes={processes}", f"--process_id={i}", f"--port={port}"]
        if die_at is not None:
            a.append(f"--die_at={die_at}")
        argvs.append(a)
    return _run_all(argvs, devices)


def _metric_steps(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["train_step"] for line in f]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    (rc, text), = _fit(d / "wd", d / "params.npz", processes=1, devices=4)
    assert rc == 0, text
    return d


def test_two_processes_train_the_same_networks_as_one(one_process, tmp_path):
    outs = _fit(tmp_path / "wd", tmp_path / "params.npz", processes=2, devices=2)
    for rc, text in outs:
        assert rc == 0, text
    assert "process 1 of 2: 2 local devices" in outs[1][1]
    want, got = np.load(one_process / "params.npz"), np.load(tmp_path / "params.npz")
    for k in ("w1", "w2", "history_loss"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)  # bitwise
    steps = _metric_steps(tmp_path / "wd")
    assert steps == list(range(5, 61, 5)) == _metric_steps(one_process / "wd")  # each once


def test_two_processes_killed_after_a_checkpoint_resume_identically(one_process, tmp_path):
    outs = _fit(tmp_path / "wd", tmp_path / "params.npz", processes=2, devices=2, die_at=30)
    assert all(rc == -9 for rc, _ in outs), [rc for rc, _ in outs]
    assert not (tmp_path / "params.npz").exists()
    # Checkpoints are written in the background: the kill may cut the one of step 30.
    saved = [int(d) for d in os.listdir(tmp_path / "wd" / "checkpoints" / "train")
             if d.isdigit()]
    assert saved and max(saved) in (20, 30), saved
    outs = _fit(tmp_path / "wd", tmp_path / "params.npz", processes=2, devices=2)
    for rc, text in outs:
        assert rc == 0, text
    assert all(f"started at step {max(saved)}" in text for _, text in outs)
    want, got = np.load(one_process / "params.npz"), np.load(tmp_path / "params.npz")
    for k in ("w1", "w2", "history_loss"):
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert _metric_steps(tmp_path / "wd") == list(range(5, 61, 5))


def _without_timing(tree):
    if isinstance(tree, dict):
        return {k: _without_timing(v) for k, v in tree.items()
                if not re.search(r"time|_s$|per_s", k)}
    if isinstance(tree, list):
        return [_without_timing(v) for v in tree]
    return tree


def test_fig1_program_over_two_processes_gives_the_one_process_table(tmp_path):
    base = [sys.executable, "-m", "experiments.disentangle.main",
            "--config=experiments/disentangle/config.py:smoke", "--config.figures=False"]
    (rc, text), = _run_all([base + [f"--workdir={tmp_path / 'one'}"]], devices=2)
    assert rc == 0, text
    port = _port()
    outs = _run_all([base + [f"--workdir={tmp_path / 'two'}", "--distributed",
                             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                             f"--process_id={i}"] for i in range(2)], devices=1)
    for rc, text in outs:
        assert rc == 0, text
    one, two = (json.loads((tmp_path / w / "results.json").read_text()) for w in ("one", "two"))
    assert _without_timing(two) == _without_timing(one)
    assert (tmp_path / "two" / "table.csv").read_text() == (tmp_path / "one" /
                                                            "table.csv").read_text()


@pytest.mark.parametrize("args, words", [
    (["--num_processes=2"], "applies only to a distributed run"),
    (["--distributed", "--num_processes=2"], "needs --coordinator_address, --num_processes"),
    (["--distributed", "--coordinator_address=127.0.0.1:1", "--num_processes=2",
      "--process_id=2"], "--process_id must be in [0, --num_processes)"),
])
def test_bad_distributed_flags_exit_2(tmp_path, args, words):
    r = subprocess.run([sys.executable, "-m", "experiments.disentangle.main",
                        "--config=experiments/disentangle/config.py:smoke",
                        f"--workdir={tmp_path / 'wd'}", *args], cwd=ROOT, env=_env(1),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert words in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "wd").exists()


def test_a_conflicting_workdir_stops_every_process_with_exit_2(tmp_path):
    from gbi_jax.workdir import Workdir

    Workdir(str(tmp_path / "wd")).claim({"figure": "another experiment"})
    port = _port()
    outs = _run_all([[sys.executable, "-m", "experiments.disentangle.main",
                      "--config=experiments/disentangle/config.py:smoke",
                      f"--workdir={tmp_path / 'wd'}", "--distributed",
                      f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                      f"--process_id={i}"] for i in range(2)], devices=1)
    for rc, text in outs:  # process 1 checks the claim too instead of training alone
        assert rc == 2, text
        assert "was made by a different config" in text and "Traceback" not in text
    assert json.loads((tmp_path / "wd" / "config.json").read_text()) == {
        "figure": "another experiment"}
    assert set(os.listdir(tmp_path / "wd")) <= {"config.json", "lock"}  # nothing trained
