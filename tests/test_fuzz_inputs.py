"""Bad inputs to the three experiments and the sweep runner: each ends with exit status 2
and one message that names the bad field (or flag, file, PID), no Python traceback, and
leaves an existing workdir byte-for-byte unchanged.

Every case fails before JAX compiles anything (the command line is parsed, the config
validated and the data found before the workdir is touched). Each case runs the real
``python -m <module>`` entry point in its own process, forked from a server process that
has imported JAX and the experiment modules once (``_FORK_SERVER``), so a case costs
milliseconds instead of seconds of imports; two servers share the table.
"""

import concurrent.futures
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import pytest

from experiments.disentangle import config as disentangle_config
from experiments.gbi_images import config as images_config
from experiments.gbi_toy import config as toy_config
from gbi_jax.workdir import LOCK_FILE, Workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = ("experiments.gbi_toy.main", "experiments/gbi_toy/config.py:smoke")
IMAGES = ("experiments.gbi_images.main", "experiments/gbi_images/config.py:smoke")
DISENTANGLE = ("experiments.disentangle.main", "experiments/disentangle/config.py:fig1_smoke")
CONFIGS = {TOY: toy_config.get_config("smoke"), IMAGES: images_config.get_config("smoke"),
           DISENTANGLE: disentangle_config.get_config("fig1_smoke")}


def _cases(table: str) -> list:
    """Parse a case table: one case a line, ``experiment | arguments | needles``
    (arguments split on spaces, needles on ``;``); ``#`` lines are comments."""
    names = {"toy": TOY, "images": IMAGES, "disentangle": DISENTANGLE, "runner": None}
    cases = []
    for line in table.strip().splitlines():
        if line.lstrip().startswith("#"):
            continue
        experiment, args, needles = (part.strip() for part in line.split("|"))
        cases.append((names[experiment], args.split(), [n.strip() for n in needles.split(";")]))
    return cases


# (experiment, extra arguments, substrings the message must contain). The workdir is an
# existing one made by the experiment's smoke config (see `workdirs`).
EXPERIMENT_CASES = _cases("""
# toy: the command line
toy         | --config.train.foo=1 | train.foo; lr
toy         | --config.trian.lr=1 | trian; train
toy         | --config.train.lr=abc | train.lr; abc
toy         | --config.figures=maybe | figures; maybe
toy         | --config=experiments/gbi_toy/config.py:bogus | bogus; smoke
toy         | --config=experiments/gbi_toy/nope.py | nope.py
toy         | --bogus_flag=1 | bogus_flag
toy         | extra_argument | extra_argument
# toy: config validation
toy         | --config.train.lr=-1 | train.lr
toy         | --config.train.lr=0 | train.lr
toy         | --config.seeds= | seeds
toy         | --config.seeds=(0,0) | seeds; repeat
toy         | --config.seeds=() | seeds
toy         | --config.seeds=abc | seeds
toy         | --config.arms=() | arms
toy         | --config.train.blocks=2 | train.blocks
toy         | --config.train.window=0 | train.window
toy         | --config.eval.test_blocks=0 | eval.test_blocks
toy         | --config.online.penalty_kind=cubic | online.penalty_kind
toy         | --config.recomposition.train_contexts=() | recomposition.train_contexts
toy         | --config.modularity.threshold=1.5 | modularity.threshold
toy         | --config.task.stds=(0.2,) | task.stds
toy         | --config.task.means=(a,b) | task.means; float
toy         | --config.train.max_loss=-1 | train.max_loss
# toy: the workdir
toy         | --config.train.blocks=7 | workdir conflict; train.blocks; 6 -> 7
toy         | --config.model.hidden=32 --config_override_ok=train.lr | model.hidden; config_override_ok
# images
images      | --config.datasets=() | datasets
images      | --config.datasets=(mnist,svhn) | datasets
images      | --config.data.normalization=zscore | data.normalization
images      | --config.train.batch_size=0 | train.batch_size
images      | --config.eval.iterative_steps=() | eval.iterative_steps
images      | --config.eval.iterative_steps=(x,) | eval.iterative_steps; int
images      | --config.ood.pairs=(mnist:cifar) | ood.pairs
images      | --config.recomposition.dataset=cifar100 | recomposition.dataset
images      | --config.classifier.members=0 | classifier.members
images      | --config.data.max_train=-1 | data.max_train
images      | --config.model.bottleneck=0 | model.bottleneck
images      | --config.data.fashion_idx_dir=/nonexistent | missing dataset; data.fashion_idx_dir
images      | --config=experiments/gbi_images/config.py:bogus | bogus
images      | --config.train.lr=0.01 | workdir conflict; train.lr
# disentangle
disentangle | --config.seeds=(1,1) | seeds; repeat
disentangle | --config.grid.sigmas=(0.0,) | grid.sigmas
disentangle | --config.grid.dims=(1,) | grid.dims
disentangle | --config.grid.cores=(cnn,) | grid.cores
disentangle | --config.grid.n_tasks=() | grid.n_tasks
disentangle | --config.grid.n_tasks=(a,) | grid.n_tasks; int
disentangle | --config.grid.free_rt=(1,) | grid.free_rt; bool
disentangle | --config.figure=fig9 | figure; fig9
disentangle | --config.eval.decoder=lasso | eval.decoder
disentangle | --config.train.batch_size=0 | train.batch_size
disentangle | --config.runtime.member_block=0 | runtime.member_block
disentangle | --config=experiments/disentangle/config.py:fig9 | fig9
disentangle | --config.train.steps=7 | workdir conflict; train.steps
""")
# Sweep files written into the sweep root's parent: (file stem, experiment, config, jobs).
SWEEPS = {
    "bad_lr": (TOY, '[{"seeds": (0,), "train.lr": -1.0}, {"seeds": (1,)}]'),
    "bad_field": (TOY, '[{"seeds": (0,), "train.nope": 1}]'),
    "duplicate_seeds": (TOY, '[{"seeds": (0, 0)}]'),
    "bad_grid": (DISENTANGLE, '[{"grid.dims": (1,)}]'),
}
RUNNER_CASES = [(args, needles) for _, args, needles in _cases("""
runner | --sweep=launch/sweeps/nope.py | nope.py
runner | --sweep=launch/sweeps/disentangle_panels.py:nope | nope; panel
runner | --sweep=launch/sweeps/disentangle_figures.py:fig9 --dry_run | fig9; invalid
runner | --sweep=launch/sweeps/disentangle_figures.py:fig9 | fig9; nothing was run
runner | --sweep=launch/sweeps/gbi_toy_seeds.py --mode=threads | mode; threads
runner | --sweep=launch/sweeps/gbi_toy_seeds.py --parallel=0 | parallel
runner |  | sweep
runner | --sweep={sweeps}/bad_lr.py | train.lr; 1 of 2
runner | --sweep={sweeps}/bad_lr.py --dry_run | train.lr; invalid
runner | --sweep={sweeps}/bad_field.py | train.nope
runner | --sweep={sweeps}/duplicate_seeds.py | seeds; repeat
runner | --sweep={sweeps}/bad_grid.py --dry_run | grid.dims
""")]


def _tree_hash(path):
    """sha256 of every file under ``path`` (the lock file, which records the PID of the
    last process that took it, aside)."""
    out = {}
    for base, _, files in os.walk(path):
        for name in files:
            full = os.path.join(base, name)
            if name == LOCK_FILE and base == path:
                continue
            with open(full, "rb") as f:
                out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _make_workdir(path, config):
    """A workdir as a run of ``config`` leaves it: claimed, a metric row, a results file."""
    wd = Workdir(str(path))
    wd.claim(config)
    wd.append_metrics([{"step": 0, "loss": 1.0}])
    wd.write_results({"made_by": "a finished run"})
    os.makedirs(wd.checkpoint_dir, exist_ok=True)
    with open(os.path.join(wd.checkpoint_dir, "placeholder"), "w") as f:
        f.write("a checkpoint")
    return wd


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    dirs = {key: str(_make_workdir(base / key[0].split(".")[1], cfg).path)
            for key, cfg in CONFIGS.items()}
    sweeps = base / "sweeps"
    sweeps.mkdir()
    for stem, ((module, config), job_list) in SWEEPS.items():
        (sweeps / f"{stem}.py").write_text(textwrap.dedent(f"""
            from launch.sweep import Sweep

            def get_sweep():
                return Sweep(experiment={module!r}, config={config!r}, jobs={job_list})
        """))
    root = base / "sweep_root"
    finished = root / "seed=0"
    finished.mkdir(parents=True)
    (finished / "results.json").write_text(json.dumps({"loss": 1.0}))
    (finished / "complete.json").write_text("{}")
    return dirs, str(sweeps), str(root)


def _env():
    env = {k: v for k, v in os.environ.items()
           if k not in ("XLA_FLAGS", "GBI_HOST_DEVICES", "DISENTANGLE_HOST_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


# Reads one JSON case per line ({"argv": [...], "out": path}) and answers one JSON line
# ({"code": exit status}); each case runs ``runpy.run_module`` of ``argv[1]`` with
# ``sys.argv = argv[1:]`` in a forked child whose stdout and stderr go to ``out``, as
# ``python -m`` would (an uncaught exception prints its traceback and exits 1).
_FORK_SERVER = r"""
import json, os, runpy, sys, traceback
import experiments.gbi_toy.experiment, experiments.gbi_images.experiment
import experiments.disentangle.experiment, launch.runner
for line in sys.stdin:
    case = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(case["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.argv = case["argv"][1:]
        code = 0
        try:
            runpy.run_module(case["argv"][1], run_name="__main__", alter_sys=True)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


def _shared_dir(argv):
    """The ``--workdir=`` or ``--root=`` an argv writes (None if neither)."""
    for a in argv:
        if a.startswith(("--workdir=", "--root=")):
            return a.split("=", 1)[1]
    return None


def _run_many(argvs, out_dir, servers=2):
    """``[(exit status, stdout + stderr)]`` of ``python -m argv[1] ...`` for each argv (which
    starts with ``-m``), run by ``servers`` fork servers. Calls on one workdir (or sweep
    root) go to the same server, one after another: run side by side, one of them would
    find the workdir locked by the other, which is the right answer but not the one a
    case checks."""
    procs = [subprocess.Popen([sys.executable, "-c", _FORK_SERVER], cwd=ROOT, env=_env(),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(servers)]
    outs = [os.path.join(out_dir, f"case{i}.txt") for i in range(len(argvs))]
    groups: dict = {}
    for i, argv in enumerate(argvs):
        groups.setdefault(_shared_dir(argv) or i, []).append(i)
    assigned = [[] for _ in range(servers)]
    for members in sorted(groups.values(), key=len, reverse=True):
        min(assigned, key=len).extend(members)

    def serve(k):
        proc, codes = procs[k], {}
        for i in assigned[k]:
            proc.stdin.write(json.dumps({"argv": argvs[i], "out": outs[i]}) + "\n")
            proc.stdin.flush()
            codes[i] = json.loads(proc.stdout.readline())["code"]
        proc.stdin.close()
        proc.wait(timeout=60)
        return codes

    with concurrent.futures.ThreadPoolExecutor(servers) as pool:
        codes = {i: c for part in pool.map(serve, range(servers)) for i, c in part.items()}
    results = []
    for i, out in enumerate(outs):
        with open(out) as f:
            results.append((codes[i], f.read()))
    return results


def _run(argv, out_dir):
    return _run_many([argv], str(out_dir), servers=1)[0]


def _check(code, output, needles, label):
    assert code == 2, f"{label}: exit {code}\n{output[-3000:]}"
    assert "Traceback" not in output, f"{label}: traceback\n{output[-3000:]}"
    assert "error:" in output, f"{label}: no error line\n{output[-3000:]}"
    for needle in needles:
        assert needle in output, f"{label}: {needle!r} not in the message\n{output[-3000:]}"


def test_bad_inputs_exit_2_with_one_message_and_leave_the_workdir_unchanged(workdirs, tmp_path):
    dirs, sweeps, root = workdirs
    assert len(EXPERIMENT_CASES) + len(RUNNER_CASES) >= 40
    before = {d: _tree_hash(d) for d in [*dirs.values(), root]}
    calls = []
    for (module, config), extra, needles in EXPERIMENT_CASES:
        argv = ["-m", module, f"--config={config}", f"--workdir={dirs[(module, config)]}"]
        calls.append((argv + extra, needles, f"{module} {' '.join(extra)}"))
    for extra, needles in RUNNER_CASES:
        extra = [a.format(sweeps=sweeps) for a in extra]
        calls.append((["-m", "launch.run", f"--root={root}", *extra], needles,
                      f"launch.run {' '.join(extra)}"))
    outcomes = _run_many([c[0] for c in calls], str(tmp_path))
    failures = []
    for (argv, needles, label), (code, output) in zip(calls, outcomes):
        try:
            _check(code, output, needles, label)
        except AssertionError as e:
            failures.append(str(e))
    assert not failures, f"{len(failures)} of {len(calls)} bad inputs:\n\n" + "\n\n".join(
        failures)
    assert {d: _tree_hash(d) for d in before} == before


def test_a_workdir_in_use_is_refused_naming_the_pid(workdirs, tmp_path):
    dirs, _, _ = workdirs
    path = dirs[TOY]
    before = _tree_hash(path)
    with Workdir(path).lock():
        code, output = _run(["-m", TOY[0], f"--config={TOY[1]}", f"--workdir={path}"],
                            tmp_path)
    _check(code, output, ["workdir in use", f"PID {os.getpid()}"], "locked workdir")
    assert _tree_hash(path) == before


def test_a_damaged_workdir_is_reported_not_overwritten(tmp_path):
    path = tmp_path / "damaged"
    path.mkdir()
    (path / "config.json").write_text('{"seed": 0, "train": {"lr"')  # cut by a crash
    before = _tree_hash(str(path))
    code, output = _run(["-m", TOY[0], f"--config={TOY[1]}", f"--workdir={path}"], tmp_path)
    _check(code, output, ["config.json", "not valid JSON"], "damaged config.json")
    assert _tree_hash(str(path)) == before


def test_a_failed_run_leaves_no_claim_and_verbose_shows_the_traceback(tmp_path):
    fresh = tmp_path / "fresh"
    argv = ["-m", IMAGES[0], f"--config={IMAGES[1]}", f"--workdir={fresh}",
            "--config.data.fashion_idx_dir=/nonexistent"]
    (code, output), (vcode, voutput), (dcode, doutput) = _run_many(
        [argv, argv + ["--verbose"], ["-m", TOY[0], f"--config={TOY[1]}", f"--workdir={fresh}",
                                      "--config.train.foo=1", "--debug"]], str(tmp_path),
        servers=1)  # one after the other: two at once on one workdir, one is refused
    _check(code, output, ["missing dataset"], "missing data")
    assert vcode == 2 and "Traceback" in voutput and "DatasetNotFoundError" in voutput
    assert dcode == 2 and "Traceback" in doutput
    assert not fresh.exists()  # nothing claimed: the corrected rerun is not a conflict
