r"""Run a sweep on a SLURM cluster as one array job (through ``submitit``).

Usage (from the project root; ``pip install -e '.[slurm]'``)::

    python -m launch.run --sweep=launch/sweeps/gbi_toy_seeds.py --executor=slurm \
        --slurm_partition=gpu --gpus_per_job=1 --cpus_per_job=8 --timeout_min=240
    python -m launch.run --sweep=launch/sweeps/gbi_toy_seeds.py --status   # one line per job
    python -m launch.run --sweep=launch/sweeps/gbi_toy_seeds.py --retry    # resubmit the failed
    python -m launch.run --sweep=launch/sweeps/gbi_toy_seeds.py --cancel   # scancel the sweep
    python -m launch.aggregate --root=workdirs/sweeps/gbi_toy_seeds        # table once done

Submission validates every job's config first (as the local executor does; nothing is
submitted if one is invalid), skips jobs whose workdir holds ``complete.json``, and
submits the rest as one array job. Array element *i* runs exactly the command the local
executor would run for job *i*, on the same workdir, with stdout+stderr appended to
``<workdir>/log.txt``. Each element is a ``submitit`` *checkpointable* job: when SLURM
preempts it or its time runs out, the experiment is stopped with SIGTERM (its last
checkpoint stays intact) and the element is requeued; the requeued element is the same
command on the same workdir, so it resumes from that checkpoint and ends with the
results an uninterrupted run gives.

Code snapshot: the jobs do not run from your checkout. The submission records the
commit (``git rev-parse HEAD``) and extracts it under ``<root>/slurm/code/<id>/``; the
jobs run there, so a requeued job never runs code edited after submission. A checkout
with uncommitted changes is refused unless ``--allow_dirty`` (its modified and
untracked files are then copied into the snapshot and the record says so).

Records, under ``<root>/slurm/`` (written atomically): ``submissions.jsonl`` (one line
per submission: SLURM job id, commit, snapshot, options, the workdir of every array
element) and submitit's own files (``submitit/``: the job pickles and SLURM's
stdout/stderr per element). ``--status`` joins them with the scheduler (``sacct``) and
each workdir's ``complete.json``: a job is *finished* (complete.json present),
*running*, *pending* (queued or requeued), *failed* (the scheduler ended it without
complete.json: error, cancel, time-out, node failure) or *not submitted*. Job states
come from SLURM accounting (``slurmdbd``); without it a job in the queue reads
*pending* and one that left it without ``complete.json`` *failed*.

Options (``SlurmOptions`` below holds the defaults): ``--slurm_partition`` (the
cluster's default partition), ``--timeout_min`` (60), ``--cpus_per_job`` (1),
``--gpus_per_job`` (0), ``--mem_gb`` (SLURM's default), ``--array_parallelism`` (64
elements at once), ``--tasks_per_job`` (1; more runs each job as that many
``jax.distributed`` processes via ``srun``, the experiment then gets ``--distributed``
and finds its peers from SLURM's environment), ``--slurm_setup`` (shell lines run before
each element, e.g. ``module load cuda``). Note that ``submitit`` treats every signal as a
time-out when ``timeout_min < 10``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from typing import Any, Callable, Mapping, Sequence

from gbi_jax import workdir as workdir_lib
from launch import jobs as jobs_lib
from launch import runner
from launch.jobs import COMPLETE_FILE, LOG_FILE, Job
from launch.sweep import Sweep

SLURM_DIR = "slurm"
RECORD_FILE = "submissions.jsonl"
STATES = ("finished", "running", "pending", "failed", "not submitted", "unknown")
_SCHEDULER_STATES = {
    "PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending", "RESIZING": "pending", "SUSPENDED": "pending",
    "CONFIGURING": "running", "RUNNING": "running", "COMPLETING": "running",
    "STAGE_OUT": "running", "SIGNALING": "running", "PREEMPTED": "pending",
}
_STOP_SECONDS = 60  # SIGTERM to the experiment, then SIGKILL after this long


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
    """How each array element is scheduled (``launch.run`` flags of the same names)."""
    slurm_partition: str | None = None
    timeout_min: int = 60
    cpus_per_job: int = 1
    gpus_per_job: int = 0
    mem_gb: float | None = None
    array_parallelism: int = 64
    tasks_per_job: int = 1
    slurm_setup: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("timeout_min", "cpus_per_job", "array_parallelism", "tasks_per_job"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise runner.SweepError(f"--{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.gpus_per_job, bool) or not isinstance(self.gpus_per_job, int) \
                or self.gpus_per_job < 0:
            raise runner.SweepError(
                f"--gpus_per_job must be an integer >= 0, got {self.gpus_per_job!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise runner.SweepError(f"--mem_gb must be > 0, got {self.mem_gb!r}")

    def executor_parameters(self, code: str | None = None) -> dict[str, Any]:
        """``submitit.SlurmExecutor.update_parameters`` keywords. With `code` (the
        snapshot), the job script changes into it after the ``slurm_setup`` lines, so
        submitit's own process (which loads `JobCommand`) runs the snapshot's code too."""
        setup = list(self.slurm_setup) + ([f"cd {shlex.quote(code)}"] if code else [])
        params: dict[str, Any] = dict(
            time=self.timeout_min, cpus_per_task=self.cpus_per_job, nodes=1,
            ntasks_per_node=self.tasks_per_job, array_parallelism=self.array_parallelism,
            setup=setup)
        if self.slurm_partition:
            params["partition"] = self.slurm_partition
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.mem_gb is not None:
            params["mem"] = f"{int(self.mem_gb * 1024)}MB"
        return params


def _submitit():
    try:
        import submitit  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise runner.SweepError(
            "--executor=slurm needs submitit; install it with pip install -e '.[slurm]'") from e
    return submitit


def require_slurm() -> None:
    """A clear error where the SLURM client commands are missing."""
    for tool in ("sbatch", "sacct", "scancel"):
        if shutil.which(tool) is None:
            raise runner.SweepError(
                f"--executor=slurm needs the SLURM command {tool!r} on PATH; run on a login "
                "node of the cluster (or start a local one: .ci/slurm.sh up DIR, then "
                "export SLURM_CONF=DIR/slurm.conf)")


# --------------------------------------------------------------------------------------
# The array element.


class JobCommand:
    """One array element: the experiment's command, its log, its stop-and-requeue.

    submitit calls the instance on the node; on preemption or time-out it calls
    :meth:`checkpoint` from its signal handler, which stops the experiment (SIGTERM to
    its process group, SIGKILL after a minute) and hands back the same command for
    the requeued element.
    """

    def __init__(self, argv: Sequence[str], workdir: str, cwd: str, env: Mapping[str, str]):
        self.argv = list(argv)
        self.workdir = workdir
        self.cwd = cwd
        self.env = dict(env)
        self._proc: subprocess.Popen | None = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_proc"] = None
        return state

    def __call__(self) -> int:
        env = {**os.environ, **self.env}
        os.makedirs(self.workdir, exist_ok=True)
        with runner.open_log(self.workdir, self.argv) as logfile:
            # pylint: disable-next=consider-using-with
            self._proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdout=logfile,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True)
            returncode = self._proc.wait()
        self._proc = None
        if returncode != 0:
            raise RuntimeError(f"{self.argv[2]} exited with status {returncode}; last lines of "
                               f"{os.path.join(self.workdir, LOG_FILE)}:\n"
                               f"{runner.tail(os.path.join(self.workdir, LOG_FILE))}")
        if not os.path.exists(os.path.join(self.workdir, COMPLETE_FILE)):
            raise RuntimeError(f"the job exited 0 but wrote no {COMPLETE_FILE}")
        return returncode

    def stop(self) -> None:
        """Stop the running experiment and wait for it (its checkpoint stays intact).

        Runs inside submitit's signal handler, while :meth:`__call__` is inside
        ``Popen.wait`` (which holds the Popen's wait lock), so the child is reaped here
        with ``os.waitpid`` directly."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        for sig, seconds in ((signal.SIGTERM, _STOP_SECONDS), (signal.SIGKILL, _STOP_SECONDS)):
            try:
                os.killpg(proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            if _reap(proc, seconds):
                return

    def checkpoint(self, *args, **kwargs):
        del args, kwargs
        self.stop()
        return _submitit().helpers.DelayedSubmission(self)


def _reap(proc: subprocess.Popen, seconds: float) -> bool:
    """Wait up to `seconds` for `proc` to exit, without ``Popen.wait``; True once reaped."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


# --------------------------------------------------------------------------------------
# Code snapshot.


def _git(cwd: str, *args: str) -> str:
    return subprocess.run(["git", "-C", cwd, *args], check=True, capture_output=True,
                          text=True).stdout


def dirty_files(cwd: str) -> list[str]:
    """Tracked files with uncommitted changes and untracked, not ignored, files."""
    out = _git(cwd, "status", "--porcelain", "--untracked-files=all")
    return [line[3:].split(" -> ")[-1] for line in out.splitlines() if line.strip()]


def snapshot(cwd: str, root: str, allow_dirty: bool) -> dict[str, Any]:
    """Extract the checkout's commit (plus, with `allow_dirty`, its uncommitted files)
    under ``<root>/slurm/code/<id>``; returns ``{"commit", "dirty", "code"}``."""
    try:
        commit = _git(cwd, "rev-parse", "HEAD").strip()
    except (OSError, subprocess.CalledProcessError) as e:
        raise runner.SweepError(
            f"--executor=slurm runs jobs from a snapshot of a git commit, but {cwd} is not a "
            "git checkout with a commit; run from the project's git checkout") from e
    dirty = dirty_files(cwd)
    if dirty and not allow_dirty:
        shown = ", ".join(dirty[:5]) + (f" and {len(dirty) - 5} more" if len(dirty) > 5 else "")
        raise runner.SweepError(
            f"the checkout has uncommitted changes ({shown}); commit them, or pass "
            "--allow_dirty to snapshot them too")
    digest = hashlib.sha256()
    for path in sorted(dirty):
        digest.update(path.encode())
        full = os.path.join(cwd, path)
        if os.path.isfile(full):
            with open(full, "rb") as f:
                digest.update(f.read())
    snap_id = commit[:12] + (f"-dirty-{digest.hexdigest()[:8]}" if dirty else "")
    code = os.path.join(root, SLURM_DIR, "code", snap_id)
    if not os.path.isdir(code):
        tmp = f"{code}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        archive = subprocess.run(["git", "-C", cwd, "archive", "--format=tar", commit],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        for path in dirty:
            src, dst = os.path.join(cwd, path), os.path.join(tmp, path)
            if os.path.isfile(src):
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copy2(src, dst)
            elif os.path.lexists(dst):
                os.remove(dst)  # deleted in the checkout
        os.replace(tmp, code)
    return {"commit": commit, "dirty": dirty, "code": code}


# --------------------------------------------------------------------------------------
# Records.


def record_path(root: str) -> str:
    return os.path.join(root, SLURM_DIR, RECORD_FILE)


def read_records(root: str) -> list[dict[str, Any]]:
    """Every submission of the sweep, oldest first (a torn last line is ignored)."""
    try:
        with open(record_path(root)) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _append_record(root: str, record: Mapping[str, Any]) -> None:
    path = record_path(root)
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    workdir_lib.Workdir(os.path.dirname(path)).write_text(
        RECORD_FILE, old + json.dumps(record, sort_keys=True) + "\n")


def latest_submission(root: str) -> dict[str, dict[str, Any]]:
    """``{job name: {"name", "workdir", "job_id"}}`` of each job's newest submission."""
    return {element["name"]: element for record in read_records(root)
            for element in record.get("jobs", [])}


# --------------------------------------------------------------------------------------
# Scheduler states.


def scheduler_states(job_ids: Sequence[str]) -> dict[str, str]:
    """``{array element id: SLURM state}`` from ``sacct`` (pending array ranges expanded)."""
    bases = sorted({j.split("_")[0] for j in job_ids})
    if not bases:
        return {}
    try:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(bases)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_sacct(out)


def parse_sacct(text: str) -> dict[str, str]:
    """``sacct -X -n -P -o JobID,State`` lines to ``{element id: state}``; a pending range
    ``123_[0-2,5%4]`` gives one entry per element. The last line of an element wins
    (a requeued element is listed once per start)."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        job_id, state = line.split("|", 1)
        state = state.split()[0] if state.strip() else "UNKNOWN"
        if "_[" in job_id:
            base, rng = job_id.split("_[", 1)
            for part in rng.rstrip("]").split("%")[0].split(","):
                lo, _, hi = part.partition("-")
                for i in range(int(lo), int(hi or lo) + 1):
                    states[f"{base}_{i}"] = state
        else:
            states[job_id] = state
    return states


def job_state(root: str, job: Job, element: Mapping[str, Any] | None,
              states: Mapping[str, str]) -> str:
    """One of `STATES` for `job` (see the module docstring)."""
    if runner.is_done(root, job):
        return "finished"
    if element is None:
        return "not submitted"
    # Elements that never started are listed under the array's own id once it ends
    # (e.g. "17|CANCELLED" after scancel of pending elements).
    state = states.get(element["job_id"]) or states.get(element["job_id"].split("_")[0])
    if state is None:
        return "unknown"
    return _SCHEDULER_STATES.get(state, "failed")


@dataclasses.dataclass
class JobStatus:
    name: str
    state: str
    job_id: str | None
    log: str


def status(sweep: Sweep, root: str) -> list[JobStatus]:
    """The state of every job of the sweep (one per planned job, in sweep order)."""
    root = os.path.abspath(root)
    jobs = jobs_lib.plan_jobs(sweep.jobs)
    latest = latest_submission(root)
    states = scheduler_states([e["job_id"] for e in latest.values()])
    out = []
    for job in jobs:
        element = latest.get(job.name)
        out.append(JobStatus(job.name, job_state(root, job, element, states),
                             element["job_id"] if element else None,
                             os.path.join(root, job.name, LOG_FILE)))
    unknown = [r for r in out if r.state == "unknown"]
    if unknown:  # no accounting record: the queue says whether the job still lives
        queued = queued_jobs()
        for r in unknown:
            if queued is not None:
                r.state = "pending" if r.job_id in queued else "failed"
    return out


def queued_jobs() -> set[str] | None:
    """Element ids in the SLURM queue (``squeue``, arrays expanded), None if unreadable."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {line.strip() for line in out.splitlines() if line.strip()}


def format_status(rows: Sequence[JobStatus]) -> str:
    width = max([len(r.name) for r in rows] + [4])
    lines = [f"{'job':<{width}}  {'state':<13}  {'slurm id':<12}  log"]
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.state:<13}  {r.job_id or '-':<12}  {r.log}")
    counts = {s: sum(r.state == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Submit / retry / cancel / wait.


def submit(sweep: Sweep, root: str, options: SlurmOptions, *, cwd: str | None = None,
           python: str | None = None, allow_dirty: bool = False, only: Sequence[str] | None = None,
           dry_run: bool = False,
           log: Callable[[str], None] | None = None) -> tuple[list[runner.JobResult], str | None]:
    """Submit the sweep's unfinished jobs (or, with `only`, those of these names) as one
    array job. Returns ``(results, slurm job id)``: the results hold the skipped jobs, or
    the invalid ones (then nothing was submitted and the id is None)."""
    log = log or (lambda msg: print(msg, flush=True))
    cwd = os.path.abspath(cwd or os.getcwd())
    root = os.path.abspath(root)
    to_run, results = runner.prepare(sweep, root, mode="processes", cwd=cwd, python=python,
                                     log=log, where="executor=slurm")
    if any(r.status == "invalid" for r in results):
        return results, None
    if only is not None:
        to_run = [j for j in to_run if j.name in set(only)]
    if not to_run:
        log("nothing to submit: every job is finished")
        return results, None
    if dry_run:
        for job in to_run:
            argv = _argv(sweep, job, root, python, options)
            log(f"  would submit  {job.name}\n    {' '.join(argv)}")
        return results, None
    require_slurm()
    submitit = _submitit()
    snap = snapshot(cwd, root, allow_dirty)
    folder = os.path.join(root, SLURM_DIR, "submitit")
    executor = submitit.SlurmExecutor(folder=os.path.join(folder, "%j"), max_num_timeout=1000)
    executor.update_parameters(job_name=f"gbi:{sweep.name}", signal_delay_s=2 * _STOP_SECONDS + 10,
                               **options.executor_parameters(snap["code"]))
    env = {"PYTHONPATH": snap["code"], "PYTHONUNBUFFERED": "1"}
    submitted = []
    with executor.batch():
        for job in to_run:
            workdir = os.path.join(root, job.name)
            os.makedirs(workdir, exist_ok=True)
            argv = _argv(sweep, job, root, python, options)
            runner.write_job_file(sweep, job, workdir, "slurm", argv, commit=snap["commit"],
                                  code=snap["code"])
            submitted.append((job, workdir, executor.submit(JobCommand(argv, workdir,
                                                                       snap["code"], env))))
    job_ids = [s[2].job_id for s in submitted]
    array_id = job_ids[0].split("_")[0]
    _append_record(root, {
        "slurm_job": array_id, "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": snap["commit"], "dirty": snap["dirty"], "code": snap["code"],
        "options": dataclasses.asdict(options),
        "jobs": [{"name": j.name, "workdir": w, "job_id": s.job_id} for j, w, s in submitted]})
    log(f"submitted {len(submitted)} job(s) as SLURM array job {array_id} (commit "
        f"{snap['commit'][:12]}{', with uncommitted changes' if snap['dirty'] else ''}); "
        f"follow with: python -m launch.run --sweep=... --root={root} --status")
    return results, array_id


def _argv(sweep: Sweep, job: Job, root: str, python: str | None,
          options: SlurmOptions) -> list[str]:
    argv = jobs_lib.command(sweep, job, os.path.join(root, job.name), python)
    if options.tasks_per_job > 1:
        argv.append("--distributed")
    return argv


def failed_jobs(sweep: Sweep, root: str) -> list[str]:
    return [r.name for r in status(sweep, root) if r.state == "failed"]


def cancel(sweep: Sweep, root: str, log: Callable[[str], None]) -> int:
    """scancel the sweep's unfinished elements; returns how many were cancelled."""
    require_slurm()
    rows = [r for r in status(sweep, root) if r.state in ("running", "pending", "unknown")]
    ids = [r.job_id for r in rows if r.job_id]
    if ids:
        subprocess.run(["scancel", *ids], check=False)
    log(f"cancelled {len(ids)} job(s)" + (": " + ", ".join(ids) if ids else ""))
    return len(ids)


def wait(sweep: Sweep, root: str, *, poll_seconds: float = 5.0,
         timeout: float | None = None) -> list[JobStatus]:
    """Block until no job of the sweep is running or pending; returns the final status."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        rows = status(sweep, root)
        if not any(r.state in ("running", "pending", "unknown") for r in rows):
            return rows
        if deadline is not None and time.monotonic() > deadline:
            return rows
        time.sleep(poll_seconds)
