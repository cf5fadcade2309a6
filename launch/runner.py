"""Runs a sweep's jobs as local subprocesses: bounded parallelism, skip finished, report failures.

Workdir layout under the sweep root, one directory per job::

    <root>/<job name>/job.json      overrides, command, mode (written by the runner)
    <root>/<job name>/log.txt       the job's stdout+stderr (appended on reruns)
    <root>/<job name>/results.json  written by the experiment
    <root>/<job name>/complete.json written by the experiment last (after results, report
                                    and figures); its presence means "done"
    <root>/results.csv, summary.md  written by `launch.aggregate`

Before any job starts, the whole sweep is validated: every job's config is built (the
config file and variant, then the job's overrides, each of which must name an existing
field) and checked by the experiment's ``validate(config)`` (the module
``<package>.experiment`` next to the sweep's ``<package>.main``). If any job is invalid,
nothing runs and the report lists every invalid job (status ``"invalid"``, exit code 2);
``dry_run`` reports them the same way.

Stopping: each job runs in its own process group. When the runner is interrupted
(Ctrl-C, SIGTERM, SIGHUP via `launch.run`) it sends SIGTERM to every running job's group
(SIGKILL after 10 s). On Linux each job also asks the kernel for SIGTERM when the runner
dies (``PR_SET_PDEATHSIG``), so even ``kill -9`` of the runner stops its jobs. On any
platform, each experiment holds its workdir's lock while it runs, so a second writer on
one workdir (e.g. a rerun of the sweep while an orphan still runs) is refused.

Devices: with no ``parallel`` given (and none in the sweep), one job runs per
accelerator when the machine has GPUs (counted with ``nvidia-smi -L``, or from
``CUDA_VISIBLE_DEVICES``) and one per CPU core otherwise (TPU hosts: one job, which
uses every chip). On a GPU machine each job gets its own GPU through
``CUDA_VISIBLE_DEVICES`` (the least busy one when jobs outnumber GPUs); then, since
several JAX processes share a GPU, each job also gets
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` and ``XLA_PYTHON_CLIENT_MEM_FRACTION`` = 1 /
(jobs per GPU), rounded down to a hundredth. A variable already set in the environment
is never overridden.

Modes:
    processes  one subprocess per job (the default).
    vmap       jobs that differ only in ``seed`` become one subprocess run with
               ``--config.seeds=(s0, s1, ...)``. Seeds already finished are left
               out. A ``seeds=(0,)`` override of the jobs is replaced, so for
               experiments whose network m uses ``seed + seeds[m]`` (gbi_toy)
               both modes train the same networks.

Results convention of vmap mode: if the merged job's results.json has a key
``per_seed`` holding a list of dicts aligned with ``seeds``, the runner writes,
for each seed ``s_i``, the per-seed job's ``<root>/<name with seed=s_i>/results.json``:
the merged results with ``per_seed[i]`` merged into the top level, and every
nested cross-seed summary (a dict with its own ``per_seed`` list aligned with
``seeds``, e.g. ``{"mean", "std", "per_seed"}``) replaced by its i-th entry
(`launch.jobs.seed_results`). The merged job.json is then marked
``"split": true`` so aggregation counts every seed once, and the per-seed
workdirs count as finished in either mode. Without ``per_seed`` the merged job
is recorded as one row whose ``seeds`` column holds the tuple.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import functools
import importlib
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

from launch import aggregate as aggregate_lib
from launch import jobs as jobs_lib
from launch.jobs import COMPLETE_FILE, JOB_FILE, LOG_FILE, PER_SEED_KEY, RESULTS_FILE, Job
from launch.sweep import Sweep, load_sweep

MODES = ("processes", "vmap")


class SweepError(ValueError):
    """A sweep that cannot run as given (a missing config file, a mode that does not fit
    its jobs); the message says what to change."""
_TAIL_LINES = 20


@dataclasses.dataclass
class JobResult:
    """Outcome of one job: status is "ok", "skipped", "failed", "dry_run" or "invalid"
    (its config does not build or validate; ``note`` says why)."""

    job: Job
    workdir: str
    status: str
    command: list[str]
    returncode: int | None = None
    start: float = 0.0  # time.monotonic() at launch and at exit (0 if not run)
    end: float = 0.0
    log_tail: str = ""
    note: str = ""

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclasses.dataclass
class RunReport:
    results: list[JobResult]

    def by_status(self, status: str) -> list[JobResult]:
        return [r for r in self.results if r.status == status]

    @property
    def failed(self) -> list[JobResult]:
        return self.by_status("failed")

    @property
    def invalid(self) -> list[JobResult]:
        return self.by_status("invalid")

    @property
    def exit_code(self) -> int:
        """2 if a job's config is invalid (nothing ran), 1 if a job failed, else 0."""
        return 2 if self.invalid else 1 if self.failed else 0

    def summary(self) -> str:
        counts = collections.Counter(r.status for r in self.results)
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no jobs"


def _results_path(root: str, job: Job) -> str:
    return os.path.join(root, job.name, RESULTS_FILE)


def is_done(root: str, job: Job) -> bool:
    """The job's workdir holds the completion marker (its run wrote results, report and
    figures); a workdir with ``results.json`` only was interrupted and runs again."""
    return os.path.isfile(os.path.join(root, job.name, COMPLETE_FILE))


def _mark_complete(workdir: str) -> None:
    _write_json(os.path.join(workdir, COMPLETE_FILE),
                {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": [RESULTS_FILE],
                 "split_from_merged_job": True})


def _write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=repr)
        f.write("\n")
    os.replace(tmp, path)


_LAUNCH_HEADER = "=== launch "


def tail(path: str, lines: int = _TAIL_LINES) -> str:
    """The last `lines` lines of a job log written since its latest launch ("" if none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    latest = text.rfind(_LAUNCH_HEADER)
    if latest >= 0:
        text = text[latest:]
    return "\n".join(text.splitlines()[-lines:])


def split_per_seed(root: str, merged: Job) -> str:
    """Writes per-seed results of a finished vmap-merged job (see module docstring).

    Returns "" on success, else a note saying why the results stay merged.
    """
    with open(_results_path(root, merged)) as f:
        results = json.load(f)
    per_seed = results.get(PER_SEED_KEY) if isinstance(results, dict) else None
    if per_seed is None:
        return f"results.json has no {PER_SEED_KEY!r} list; recorded as one merged row"
    if (not isinstance(per_seed, list) or len(per_seed) != len(merged.seed_jobs)
            or not all(isinstance(r, dict) for r in per_seed)):
        return (f"results.json {PER_SEED_KEY!r} should be a list of {len(merged.seed_jobs)} dicts "
                f"aligned with seeds={merged.seeds}; recorded as one merged row")
    for i, seed_job in enumerate(merged.seed_jobs):
        workdir = os.path.join(root, seed_job.name)
        os.makedirs(workdir, exist_ok=True)
        _write_json(os.path.join(workdir, JOB_FILE),
                    {"name": seed_job.name, "overrides": seed_job.overrides,
                     "merged_into": merged.name})
        _write_json(os.path.join(workdir, RESULTS_FILE),
                    jobs_lib.seed_results(results, i, len(merged.seed_jobs)))
        _mark_complete(workdir)
    job_file = os.path.join(root, merged.name, JOB_FILE)
    meta = {}
    if os.path.isfile(job_file):
        with open(job_file) as f:
            meta = json.load(f)
    meta["split"] = True
    _write_json(job_file, meta)
    return ""


# -- validation ----------------------------------------------------------------
def _load_config_module(path: str) -> Any:
    name = "_launch_config_" + "".join(c if c.isalnum() else "_" for c in path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import config file {path!r}; it must be a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses (and pickling) look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def build_config(spec: str, overrides: Mapping[str, Any], cwd: str) -> Any:
    """The config a job runs with: ``get_config(variant)`` of the file ``spec`` (relative to
    ``cwd``) with ``overrides`` applied as ``--config.<key>=<value>`` would apply them.

    Raises:
        ValueError: the file, the variant or an overridden field does not exist, or a
            value has the wrong type (the message names it).
    """
    path, _, variant = spec.partition(":")
    full = os.path.join(cwd, path)
    if not os.path.isfile(full):
        raise ValueError(f"config file {path!r} not found under {cwd}")
    try:
        module = _load_config_module(full)
        config = module.get_config(variant) if variant else module.get_config()
    except Exception as e:  # pylint: disable=broad-except
        raise ValueError(f"--config={spec}: {type(e).__name__}: {e}") from None
    for key, value in overrides.items():
        parts = key.split(".")
        node = config
        for i, part in enumerate(parts):
            if not hasattr(node, "keys") or part not in node:
                where = ".".join(parts[:i]) or "the config"
                raise ValueError(f"--config.{key}: {where} has no field {part!r}")
            if i < len(parts) - 1:
                node = node[part]
        old = node[parts[-1]]
        if isinstance(old, tuple) and not isinstance(value, tuple):
            value = (value,)  # config_flags parses "1" for a tuple field as (1,)
        try:
            node[parts[-1]] = value
        except (TypeError, ValueError) as e:
            raise ValueError(f"--config.{key}={value!r}: {e}") from None
    return config


def _experiment_validate(experiment: str, cwd: str) -> Callable[[Any], Any] | None:
    """``validate`` of the module ``<package>.experiment`` for the entry ``<package>.main``,
    or None when there is none."""
    package = experiment.rpartition(".")[0]
    if not package:
        return None
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(f"{package}.experiment")
    except ModuleNotFoundError as e:
        if e.name and (e.name == f"{package}.experiment" or f"{package}.experiment".startswith(
                e.name + ".")):
            return None
        raise
    finally:
        if added:
            sys.path.remove(cwd)
    return getattr(module, "validate", None)


def validate_jobs(sweep: Sweep, jobs: Sequence[Job], cwd: str) -> dict[str, str]:
    """Build and validate every job's config; returns ``{job name: why it is invalid}``
    (empty when every job is valid). Nothing is run or written."""
    validate = _experiment_validate(sweep.experiment, cwd)
    invalid = {}
    for job in jobs:
        try:
            config = build_config(job.config or sweep.config, job.overrides, cwd)
            if validate is not None:
                validate(config)
        except Exception as e:  # pylint: disable=broad-except
            invalid[job.name] = str(e) or type(e).__name__
    return invalid


def plan(sweep: Sweep, root: str, mode: str = "processes") -> tuple[list[Job], list[Job]]:
    """Returns (jobs to run, jobs already finished) for `mode`; reads, never writes, `root`."""
    if mode not in MODES:
        raise SweepError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    jobs = jobs_lib.plan_jobs(sweep.jobs)
    if mode == "processes":
        return ([j for j in jobs if not is_done(root, j)],
                [j for j in jobs if is_done(root, j)])
    for j in jobs:
        value = j.overrides.get(jobs_lib.SEEDS_KEY)
        if (value is not None and jobs_lib.SEED_KEY in j.overrides
                and not (isinstance(value, tuple) and len(value) == 1)):
            raise SweepError(
                f"--mode=vmap replaces {jobs_lib.SEEDS_KEY!r} by the swept {jobs_lib.SEED_KEY!r} "
                f"values, but job {j.name!r} sets {jobs_lib.SEEDS_KEY}={value!r}; sweep "
                f"{jobs_lib.SEED_KEY!r} with a one-network {jobs_lib.SEEDS_KEY}=(0,) (or run "
                "with --mode=processes)")
    to_run, done = [], []
    for base, group in jobs_lib.group_by_seed(jobs):
        done += [j for j in group if is_done(root, j)]
        remaining = [j for j in group if not is_done(root, j)]
        if len(remaining) == 1:
            to_run.append(remaining[0])  # no seed, or a single seed left: run it as is
        elif remaining:
            merged = jobs_lib.merge_seeds(base, remaining)
            if is_done(root, merged):  # finished; run_sweep (re)splits its results
                done.append(merged)
            else:
                to_run.append(merged)
    return to_run, done


@dataclasses.dataclass(frozen=True)
class Accelerators:
    """What `detect_accelerators` found: ``kind`` is "gpu", "tpu" or "cpu"; ``ids`` the
    GPU indices jobs may be given (empty for CPU and TPU)."""
    kind: str
    ids: tuple[str, ...] = ()


def detect_accelerators() -> Accelerators:
    """The machine's accelerators, found without importing JAX: the GPUs listed by
    ``nvidia-smi -L`` (restricted to ``CUDA_VISIBLE_DEVICES`` when set), else TPU chips
    (``/dev/accel*``, ``/dev/vfio/[0-9]*``), else none."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = tuple(v.strip() for v in visible.split(",") if v.strip() and v.strip() != "-1")
        if ids:
            return Accelerators("gpu", ids)
    else:
        try:
            out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=20, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        n = sum(line.startswith("GPU ") for line in out.splitlines())
        if n:
            return Accelerators("gpu", tuple(str(i) for i in range(n)))
    import glob  # pylint: disable=import-outside-toplevel

    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return Accelerators("tpu")
    return Accelerators("cpu")


def default_parallel(accelerators: Accelerators) -> int:
    """Jobs at once when neither ``--parallel`` nor the sweep says: one per GPU, one on a
    TPU host, one per CPU core otherwise."""
    if accelerators.kind == "gpu":
        return len(accelerators.ids)
    if accelerators.kind == "tpu":
        return 1
    return os.cpu_count() or 1


class DevicePool:
    """Hands each starting job a GPU (the least busy) and the environment that goes
    with it; :meth:`release` when the job ends. A no-op without GPUs."""

    def __init__(self, accelerators: Accelerators, parallel: int):
        self.ids = list(accelerators.ids) if accelerators.kind == "gpu" else []
        self.busy = {i: 0 for i in self.ids}
        self.per_device = -(-parallel // len(self.ids)) if self.ids else 0

    def acquire(self, base_env: Mapping[str, str]) -> tuple[str | None, dict[str, str]]:
        if not self.ids:
            return None, {}
        device = min(self.ids, key=lambda i: (self.busy[i], self.ids.index(i)))
        self.busy[device] += 1
        env = {"CUDA_VISIBLE_DEVICES": device}
        if self.per_device > 1:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{int(100 / self.per_device) / 100:.2f}"
        # The user's own settings win (CUDA_VISIBLE_DEVICES set means: these ids).
        return device, {k: v for k, v in env.items()
                        if k == "CUDA_VISIBLE_DEVICES" or k not in base_env}

    def release(self, device: str | None) -> None:
        if device is not None:
            self.busy[device] -= 1


def _job_env(cwd: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (cwd, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def check_config_files(sweep: Sweep, cwd: str) -> None:
    """Every config file the sweep names exists under the project root `cwd`."""
    for spec in sweep.configs():
        config_path = spec.partition(":")[0]
        if not os.path.isfile(os.path.join(cwd, config_path)):
            raise SweepError(
                f"config file {config_path!r} of sweep {sweep.name!r} not found under {cwd}; "
                "run from the project root or pass cwd=")


def prepare(sweep: Sweep, root: str, *, mode: str, cwd: str, python: str | None,
            log: Callable[[str], None], split: bool = True,
            where: str = "") -> tuple[list[Job], list[JobResult]]:
    """What every executor does before running anything: check the config files, plan
    the jobs (finished ones skipped) and validate every job to run.

    Returns ``(jobs to run, results)``: ``results`` holds the skipped jobs, or, when any
    job is invalid, only the invalid ones (status ``"invalid"``; nothing may then run)."""
    check_config_files(sweep, cwd)
    to_run, done = plan(sweep, root, mode)
    invalid = validate_jobs(sweep, to_run, cwd)
    if invalid:
        results = []
        for job in to_run:
            if job.name in invalid:
                workdir = os.path.join(root, job.name)
                results.append(JobResult(job, workdir, "invalid",
                                         jobs_lib.command(sweep, job, workdir, python),
                                         note=invalid[job.name]))
        log(f"error: sweep {sweep.name}: {len(invalid)} of {len(to_run)} job(s) to run have an "
            "invalid config; nothing was run. Fix the sweep file (or the config) and rerun:")
        for r in results:
            log(f"  invalid  {r.job.name}: {r.note}")
        return to_run, results
    results = [JobResult(j, os.path.join(root, j.name), "skipped",
                         jobs_lib.command(sweep, j, os.path.join(root, j.name), python))
               for j in done]
    log(f"sweep {sweep.name}: {len(sweep.jobs)} jobs, mode={mode}, {len(to_run)} to run "
        f"({len(done)} already finished), {where + ', ' if where else ''}root={root}")
    for r in results:
        if r.job.is_merged and split:
            try:  # in case a previous run stopped before splitting
                r.note = split_per_seed(root, r.job)
            except (OSError, ValueError) as e:
                r.note = f"cannot split {RESULTS_FILE}: {e}"
        log(f"  skipped  {r.job.name}  (complete)")
    return to_run, results


def write_job_file(sweep: Sweep, job: Job, workdir: str, mode: str, argv: Sequence[str],
                   **extra: Any) -> None:
    """``<workdir>/job.json``: the job's overrides and command (and `extra` keys)."""
    meta = {"name": job.name, "overrides": job.overrides, "mode": mode,
            "experiment": sweep.experiment, "config": job.config or sweep.config,
            "command": shlex.join(argv), **extra}
    if job.is_merged:
        meta["seed_jobs"] = [j.name for j in job.seed_jobs]
    _write_json(os.path.join(workdir, JOB_FILE), meta)


def open_log(workdir: str, argv: Sequence[str]):
    """``<workdir>/log.txt`` opened for appending, with a header line for this launch."""
    # pylint: disable-next=consider-using-with
    logfile = open(os.path.join(workdir, LOG_FILE), "ab")
    logfile.write(f"{_LAUNCH_HEADER}{time.strftime('%Y-%m-%d %H:%M:%S')}: "
                  f"{shlex.join(argv)}\n".encode())
    logfile.flush()
    return logfile


def run_sweep(
    sweep: Sweep | str,
    root: str,
    *,
    parallel: int | None = None,
    mode: str = "processes",
    dry_run: bool = False,
    cwd: str | None = None,
    python: str | None = None,
    env: dict[str, str] | None = None,
    aggregate: bool | None = None,
    log: Callable[[str], None] | None = None,
    poll_seconds: float = 0.02,
) -> RunReport:
    """Runs every unfinished job of `sweep` under `root` and (optionally) aggregates.

    Args:
        sweep: a `Sweep`, or a sweep file spec ``path.py[:arg]``.
        root: sweep root directory; one workdir per job is made under it.
        parallel: maximum number of concurrent subprocesses (default: the sweep's
            ``parallel``, else one per GPU, or per CPU core without GPUs).
        mode: "processes" or "vmap" (see module docstring).
        dry_run: print the plan and commands; run and write nothing.
        cwd: project root the jobs run in (config paths are relative to it and
            it is put on PYTHONPATH); default: the current directory.
        python: interpreter for the jobs (default: this one).
        env: extra environment variables for the jobs.
        aggregate: write <root>/results.csv and summary.md after the run (default:
            the sweep's ``aggregate``).
        log: progress printer (default: print to stdout).

    Returns:
        A `RunReport`; ``report.exit_code`` is 1 if any job failed. A failing job
        never stops the others.
    """
    log = log or (lambda msg: print(msg, flush=True))
    if isinstance(sweep, str):
        sweep = load_sweep(sweep)
    if mode not in MODES:
        raise SweepError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    accelerators = detect_accelerators()
    parallel = parallel or sweep.parallel or default_parallel(accelerators)
    if parallel < 1:
        raise SweepError(f"parallel must be >= 1, got {parallel}")
    aggregate = sweep.aggregate if aggregate is None else aggregate
    cwd = os.path.abspath(cwd or os.getcwd())
    root = os.path.abspath(root)
    to_run, results = prepare(sweep, root, mode=mode, cwd=cwd, python=python, log=log,
                              split=not dry_run, where=f"parallel={parallel}")
    if any(r.status == "invalid" for r in results):
        return RunReport(results)

    if dry_run:
        for job in to_run:
            workdir = os.path.join(root, job.name)
            argv = jobs_lib.command(sweep, job, workdir, python)
            results.append(JobResult(job, workdir, "dry_run", argv))
            log(f"  would run  {job.name}\n    {shlex.join(argv)}")
        return RunReport(results)

    results += _execute(sweep, to_run, root, parallel=parallel, mode=mode, cwd=cwd,
                        python=python, env=_job_env(cwd, env), log=log, poll_seconds=poll_seconds,
                        devices=DevicePool(accelerators, parallel))
    report = RunReport(results)
    log(f"sweep {sweep.name}: {report.summary()}")
    for r in report.failed:
        log(f"FAILED {r.job.name} (exit code {r.returncode}{'; ' + r.note if r.note else ''}); "
            f"log: {os.path.join(r.workdir, LOG_FILE)}")
    if aggregate:
        aggregate_lib.aggregate(root, log=log)
    return report


_PR_SET_PDEATHSIG = 1


def _child_setup(runner_pid: int) -> None:
    """In the forked job before it starts: its own process group (so stopping the runner
    stops the job and everything it started), and on Linux SIGTERM when the runner dies."""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        except (OSError, AttributeError):
            pass
        if os.getppid() != runner_pid:  # the runner died before prctl took effect
            os._exit(1)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _execute(sweep: Sweep, to_run: Sequence[Job], root: str, *, parallel: int, mode: str,
             cwd: str, python: str | None, env: dict[str, str],
             log: Callable[[str], None], poll_seconds: float,
             devices: DevicePool | None = None) -> list[JobResult]:
    """Runs `to_run` with at most `parallel` live subprocesses; returns their results."""
    pending = collections.deque(to_run)
    running: dict[subprocess.Popen, tuple[Job, list[str], float, Any]] = {}
    device_of: dict[subprocess.Popen, str | None] = {}
    devices = devices or DevicePool(Accelerators("cpu"), parallel)
    finished: list[JobResult] = []
    total = len(to_run)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.popleft()
                workdir = os.path.join(root, job.name)
                os.makedirs(workdir, exist_ok=True)
                argv = jobs_lib.command(sweep, job, workdir, python)
                write_job_file(sweep, job, workdir, mode, argv)
                logfile = open_log(workdir, argv)
                device, device_env = devices.acquire(env)
                proc = subprocess.Popen(argv, cwd=cwd, env={**env, **device_env}, stdout=logfile,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=functools.partial(_child_setup,
                                                                     os.getpid()))
                running[proc] = (job, argv, time.monotonic(), logfile)
                device_of[proc] = device
                log(f"  started  {job.name}" + (f"  (GPU {device})" if device else ""))
            for proc in [p for p in running if p.poll() is not None]:
                job, argv, start, logfile = running.pop(proc)
                devices.release(device_of.pop(proc))
                logfile.close()
                result = _finish(root, job, argv, proc.returncode, start, time.monotonic())
                finished.append(result)
                _log_result(log, result, len(finished), total)
            if running:
                time.sleep(poll_seconds)
    except BaseException:
        if running:
            log(f"interrupted: stopping {len(running)} running job(s); rerun to continue")
        for proc in running:
            _signal_group(proc, signal.SIGTERM)
        for proc, (_, _, _, logfile) in running.items():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            logfile.close()
        raise
    return finished


def _finish(root: str, job: Job, argv: list[str], returncode: int, start: float,
            end: float) -> JobResult:
    workdir = os.path.join(root, job.name)
    result = JobResult(job, workdir, "ok", argv, returncode, start, end)
    if returncode != 0:
        result.status = "failed"
    elif not is_done(root, job):
        result.status = "failed"
        result.note = f"exited 0 but wrote no {COMPLETE_FILE} (the completion marker)"
    elif job.is_merged:
        try:
            result.note = split_per_seed(root, job)
        except (OSError, ValueError) as e:  # unreadable results.json
            result.status, result.note = "failed", f"cannot read {RESULTS_FILE}: {e}"
    if result.status == "failed":
        result.log_tail = tail(os.path.join(workdir, LOG_FILE))
    return result


def _log_result(log: Callable[[str], None], r: JobResult, i: int, total: int) -> None:
    line = f"  [{i}/{total}] {r.status:<7} {r.job.name}  ({r.seconds:.1f}s)"
    if r.note:
        line += f"  {r.note}"
    if r.status == "failed":
        indented = "\n".join("    | " + l for l in r.log_tail.splitlines())
        line += (f"\n    exit code {r.returncode}; last lines of "
                 f"{os.path.join(r.workdir, LOG_FILE)}:\n{indented}")
    log(line)
