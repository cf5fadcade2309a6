"""A run killed with SIGKILL at chosen points (before its first checkpoint, while a
checkpoint is being written, between results and figures) and then rerun ends with the
same ``results.json`` and ``metrics.jsonl``, byte for byte, as an uninterrupted run, and
with its report, figures and completion marker."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small program built like the experiments: lock, skip if complete, claim, fit (resumed
# from the workdir), finish. KILL_AT picks where it kills itself with SIGKILL.
_PROGRAM = r"""
import os, signal, sys
kill = os.environ.get("KILL_AT", "")
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if kill.startswith("checkpoint:"):  # orbax renames the finished temporary directory last
    rename = os.rename
    def killing_rename(src, dst, *args, **kw):
        if os.path.basename(str(dst)) == kill.split(":")[1]:
            die()
        return rename(src, dst, *args, **kw)
    os.rename = killing_rename
sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
import numpy as np, optax
from gbi_jax import training
from gbi_jax.workdir import Workdir
from test_training import TARGETS, init_fn, loss_fn

wd = Workdir(sys.argv[1])
with wd.lock():
    if wd.is_complete():
        sys.exit(0)
    wd.claim({"num_steps": 100, "seeds": [0, 1]})

    def on_chunk(step):
        if kill == f"chunk:{step}":
            die()

    fit = training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(0.1), seeds=(0, 1),
                       member_data=TARGETS[:2], num_steps=100, chunk_size=25,
                       checkpoint_every=2, workdir=wd, on_chunk=on_chunk)
    results = {"steps": fit.steps, "loss": fit.history["loss"], "w": fit.state.params["w"]}

    def draw(path):
        if kill == "figures":
            die()
        os.makedirs(os.path.join(path, "figures"), exist_ok=True)
        with open(os.path.join(path, "figures", "curve.txt"), "w") as f:
            f.write(" ".join(f"{v:.6f}" for v in np.mean(fit.history["loss"], axis=1)))

    wd.finish(results, "loss curve in figures/curve.txt", draw)
"""


def _run(workdir, kill=""):
    env = dict(os.environ, KILL_AT=kill, JAX_PLATFORMS="cpu")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
    return subprocess.run([sys.executable, "-c", _PROGRAM, str(workdir)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def _outputs(workdir):
    out = {}
    for name in ("results.json", "metrics.jsonl", "results.md", "figures/curve.txt"):
        with open(os.path.join(workdir, name), "rb") as f:
            out[name] = f.read()
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    done = _run(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    return _outputs(workdir)


@pytest.mark.parametrize("kill", [
    "chunk:25",  # metric rows of steps 1..25 logged, no checkpoint yet (first one at 50)
    "checkpoint:100",  # killed inside the save of the last checkpoint
    "figures",  # results.json written, figures and report not
])
def test_killed_run_resumes_to_identical_outputs(tmp_path, reference, kill):
    killed = _run(tmp_path, kill)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert not os.path.exists(tmp_path / "complete.json")
    resumed = _run(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert os.path.exists(tmp_path / "complete.json")
    assert _outputs(tmp_path) == reference
