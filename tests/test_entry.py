"""experiments.entry: host devices requested before JAX starts (per experiment, env
overrides, XLA_FLAGS wins) and user errors that end a run with exit status 2, no traceback."""

import json
import os
import subprocess
import sys

import pytest

from experiments import entry
from gbi_jax.data import DatasetNotFoundError
from gbi_jax.training import NonFiniteLossError
from gbi_jax.workdir import WorkdirConflictError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENVS = ("GBI_HOST_DEVICES", "DISENTANGLE_HOST_DEVICES", "GBI_TOY_HOST_DEVICES")
MAINS = {"gbi_toy": "experiments/gbi_toy/config.py:smoke",
         "gbi_images": "experiments/gbi_images/config.py:smoke",
         "disentangle": "experiments/disentangle/config.py:fig1_smoke"}


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENVS + ("XLA_FLAGS",):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _subprocess_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ENVS + ("XLA_FLAGS",)}
    env.update(extra)
    return env


def test_host_device_count_default_auto_and_env_overrides(clean_env):
    envs = entry.host_devices_envs("experiments.disentangle.experiment")
    assert envs == ("DISENTANGLE_HOST_DEVICES", "GBI_HOST_DEVICES")
    assert entry.host_device_count(None, envs) == 1
    assert entry.host_device_count("auto", envs) == entry.usable_cores()
    assert entry.host_device_count(3, envs) == 3
    clean_env.setenv("GBI_HOST_DEVICES", "4")
    assert entry.host_device_count(None, envs) == 4
    clean_env.setenv("DISENTANGLE_HOST_DEVICES", "2")  # the experiment's own variable first
    assert entry.host_device_count("auto", envs) == 2
    toy = entry.host_devices_envs("experiments.gbi_toy.experiment")
    assert entry.host_device_count(None, toy) == 4  # DISENTANGLE_... is not the toy's
    with pytest.raises(ValueError, match="DISENTANGLE_HOST_DEVICES"):
        clean_env.setenv("DISENTANGLE_HOST_DEVICES", "two")
        entry.host_device_count(None, envs)
    for name in envs:
        clean_env.delenv(name)
    for bad in (0, -1, "two", True):
        with pytest.raises(ValueError, match="host devices"):
            entry.host_device_count(bad, envs)


def test_request_host_devices_sets_xla_flags_unless_they_set_the_count(clean_env):
    assert entry.request_host_devices(None) == 1 and "XLA_FLAGS" not in os.environ
    clean_env.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    assert entry.request_host_devices(3) == 3
    assert os.environ["XLA_FLAGS"] == ("--xla_cpu_enable_fast_math=false "
                                       "--xla_force_host_platform_device_count=3")
    assert entry.request_host_devices(5) == 0  # an explicit count in XLA_FLAGS wins
    assert os.environ["XLA_FLAGS"].endswith("count=3")


@pytest.mark.parametrize("error, heading", [
    (WorkdirConflictError("made by a different config"), "workdir conflict"),
    (NonFiniteLossError("non-finite loss at step 3"), "training diverged"),
    (DatasetNotFoundError("no mnist here"), "missing dataset"),
])
def test_user_errors_exit_2_with_the_message(error, heading, capsys):
    def run(config, workdir):
        raise error

    with pytest.raises(SystemExit) as exit_info:
        entry.run_cleanly(run, None, "wd")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == f"error: {heading}.\n{error}\n"


def test_other_errors_propagate():
    def run(config, workdir):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        entry.run_cleanly(run, None, "wd")


@pytest.mark.parametrize("name", sorted(MAINS))
def test_cli_workdir_conflict_exits_2_without_traceback(name, tmp_path):
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"made_by": "another run"}, f)
    out = subprocess.run([sys.executable, "-m", f"experiments.{name}.main",
                          f"--config={MAINS[name]}", f"--workdir={tmp_path}"], cwd=ROOT,
                         env=_subprocess_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "error: workdir conflict." in out.stderr and "made_by" in out.stderr
    assert "Traceback" not in out.stderr
    with open(tmp_path / "config.json") as f:
        assert json.load(f) == {"made_by": "another run"}  # nothing overwritten


# Runs an experiment's real main.py with app.run replaced by a probe that prints the
# number of devices JAX sees (nothing is trained).
_PROBE = """
import runpy, sys
from absl import app
def probe(main, argv=None, **kwargs):
    import jax
    print("DEVICES", jax.device_count())
app.run = probe
sys.argv = ["main"]
runpy.run_module("experiments.{name}.main", run_name="__main__")
"""


def _devices(name, **env):
    out = subprocess.run([sys.executable, "-c", _PROBE.format(name=name)], cwd=ROOT,
                         env=_subprocess_env(**env), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.split("DEVICES")[-1])


def test_disentangle_asks_for_one_device_per_core_and_the_toy_for_one():
    assert _devices("disentangle") == entry.usable_cores()
    assert _devices("disentangle", DISENTANGLE_HOST_DEVICES="3") == 3
    assert _devices("disentangle", GBI_HOST_DEVICES="3",
                    XLA_FLAGS="--xla_force_host_platform_device_count=2") == 2
    assert _devices("gbi_toy", DISENTANGLE_HOST_DEVICES="3") == 1
    assert _devices("gbi_images") == 1
    assert _devices("gbi_toy", GBI_HOST_DEVICES="2") == 2


def test_resume_with_changed_fields_override_ok_and_evaluation_fields(tmp_path, monkeypatch):
    import copy

    from experiments.gbi_toy import config as toy_config
    from experiments.gbi_toy import experiment as toy
    from gbi_jax.workdir import Workdir

    smoke = toy_config.get_config("smoke")
    Workdir(str(tmp_path)).claim(smoke)
    monkeypatch.setattr(toy, "_run_claimed", lambda config, wd: "ran")
    changed = copy.deepcopy(smoke)
    changed.train.lr = 2e-3
    with pytest.raises(WorkdirConflictError, match="train.lr"):
        toy.run(changed, str(tmp_path))
    assert toy.run(changed, str(tmp_path), override_ok=("train.lr",)) == "ran"
    with open(tmp_path / "history.jsonl") as f:
        history = [json.loads(line) for line in f]
    assert [(h["field"], h["old"], h["new"]) for h in history] == [("train.lr", 1e-3, 2e-3)]
    evaluation = copy.deepcopy(changed)
    evaluation.eval.test_blocks = 4  # evaluation-only: accepted and recorded
    evaluation.figures = False  # runtime-only: not compared
    assert toy.run(evaluation, str(tmp_path)) == "ran"
    with open(tmp_path / "config.json") as f:
        stored = json.load(f)
    assert stored["eval"]["test_blocks"] == 4 and stored["figures"] is True
    assert stored["train"]["lr"] == 2e-3


def test_a_run_that_fails_before_training_leaves_no_claim(tmp_path, monkeypatch):
    from experiments.gbi_toy import config as toy_config
    from experiments.gbi_toy import experiment as toy

    def fail(config, wd):
        raise ValueError("config.recomposition.blocks: too few")

    monkeypatch.setattr(toy, "_run_claimed", fail)
    workdir = tmp_path / "new"
    with pytest.raises(SystemExit) as exit_info:
        entry.run_cleanly(lambda c, w: entry.locked_run(toy.run, c, w),
                          toy_config.get_config("smoke"), str(workdir))
    assert exit_info.value.code == 2 and not workdir.exists()


def test_flag_errors_name_the_field_without_a_traceback():
    argv = ["main", "--config=experiments/gbi_toy/config.py:smoke", "--config.train.foo=1"]
    message = entry.flag_error_message(AttributeError(KeyError("'foo'")), argv)
    assert message.startswith("--config.train.foo: config.train has no field 'foo'")
    assert "lr" in message  # the fields it does have
    wrapped = ("flag --config=x.py:bad: Error whilst parsing config file:\n\nTraceback (most "
               "recent call last):\n  File ...\nValueError: Unknown config variant 'bad'\n")
    assert entry.flag_error_message(ValueError(wrapped), argv) == (
        "--config=x.py:bad: ValueError: Unknown config variant 'bad'")


def test_cli_divergence_exits_2_naming_the_step_without_traceback(tmp_path):
    out = subprocess.run([sys.executable, "-m", "experiments.gbi_toy.main",
                          f"--config={MAINS['gbi_toy']}", f"--workdir={tmp_path / 'w'}",
                          "--config.train.max_loss=1e-9", "--config.recomposition.enabled=False"],
                         cwd=ROOT, env=_subprocess_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "error: training diverged." in out.stderr and "step" in out.stderr
    assert "Traceback" not in out.stderr
