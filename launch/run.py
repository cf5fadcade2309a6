r"""Run a sweep of an experiment as local jobs, skip finished ones, aggregate the results.

Usage (from the project root)::

    python -m launch.run --sweep=launch/sweeps/gbi_toy_seeds.py \
        --root=workdirs/sweeps/gbi_toy_seeds [--parallel=2] [--mode=processes|vmap] [--dry_run]
    python -m launch.aggregate --root=workdirs/sweeps/gbi_toy_seeds   # re-aggregate only
    python -m launch.run --sweep=launch/sweeps/disentangle_panels.py:fig5   # one figure's runs

A sweep file defines ``get_sweep()`` (``get_sweep(arg)`` with ``--sweep=file.py:arg``)
returning ``launch.sweep.Sweep(experiment=..., config=..., jobs=[...])``; build the
jobs with ``launch.sweep.product / zipit / sweep / fixed / chain``, e.g.
``product(sweep("seed", (0, 1, 2)), sweep("latent.lr", (0.1, 0.3)))``, or list
``launch.sweep.Run(name, overrides, config=...)`` s to name workdirs explicitly.

Each job runs ``python -m <experiment> --config=<config> --workdir=<root>/<name>
--config.<key>=<value> ...`` in its own workdir, named from its overrides
(``latent.lr=0.1,seed=0``) or by its `Run`, with stdout+stderr appended to
``<workdir>/log.txt``. Before any job starts, every job's config is built and
validated; if one is invalid (an unknown field, a bad value, a config variant that
does not exist) nothing runs, each invalid job is listed with the reason and the exit
status is 2 (``--dry_run`` reports them the same way). At most ``--parallel`` jobs run
at once (default: the sweep's ``parallel``, else one per GPU, or one per core without
GPUs, each job on its own GPU: see `launch.runner`; 1 for sweeps whose
jobs each use every core). ``--root`` defaults to the sweep's ``root``, else
``workdirs/sweeps/<sweep file stem>``. Jobs whose
workdir holds the completion marker ``complete.json`` (written by the experiment after
its results, report and figures) are skipped, so rerunning a sweep only runs what is
missing, interrupted or failed. A failed job is reported with the tail of its log and
does not stop the others; the exit status is 1 if any job failed. Ctrl-C, SIGTERM or
SIGHUP stops the running jobs (rerun to continue); see `launch.runner` for what
happens to the jobs when the runner is killed with SIGKILL. A bad command line or
sweep file ends with status 2 and one message (``--verbose`` adds the traceback).

``--mode=vmap`` merges jobs that differ only in ``seed`` into one job run with
``--config.seeds=(s0, s1, ...)`` (the experiment trains those seeds together with
vmap). If its results.json has ``per_seed``: a list of dicts aligned with
``seeds``, each seed gets its own ``<root>/<name with seed=s>/results.json``
(the shared top-level keys updated with its ``per_seed`` entry); otherwise the
merged job is one row with a ``seeds`` column.

``--executor=slurm`` submits the unfinished jobs as one SLURM array job instead (see
`launch.slurm` for the code snapshot, requeue on preemption and the records it keeps)::

    python -m launch.run --sweep=FILE --executor=slurm [--slurm_partition=P --timeout_min=60
        --cpus_per_job=1 --gpus_per_job=0 --array_parallelism=64 --tasks_per_job=1
        --slurm_setup="module load cuda" --allow_dirty --wait]
    python -m launch.run --sweep=FILE --status   # finished / running / pending / failed
    python -m launch.run --sweep=FILE --retry    # resubmit only the failed jobs
    python -m launch.run --sweep=FILE --cancel   # scancel the sweep's unfinished jobs

After the run, ``<root>/results.csv`` (one row per run: overrides + flattened
results) and ``<root>/summary.md`` (mean ± std over seeds per setting) are written,
unless the sweep turns aggregation off (``Sweep.aggregate``) or ``--noaggregate``.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from typing import NoReturn, Sequence

from absl import app, flags

from launch import aggregate as aggregate_lib
from launch import runner
from launch import slurm
from launch.sweep import load_sweep

_SWEEP = flags.DEFINE_string("sweep", None, "Sweep file, path/to/sweep.py[:arg].")
_ROOT = flags.DEFINE_string(
    "root", None,
    "Sweep root directory (default: the sweep's root, else workdirs/sweeps/<sweep file stem>).")
_PARALLEL = flags.DEFINE_integer(
    "parallel", None,
    "Maximum concurrent jobs (default: the sweep's parallel, else one per GPU, or one per "
    "CPU core without GPUs).",
    lower_bound=1)
_MODE = flags.DEFINE_enum("mode", "processes", runner.MODES,
                          "processes: one process per job; vmap: merge seeds into one job.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the jobs and commands; run nothing.")
_AGGREGATE = flags.DEFINE_bool(
    "aggregate", None,
    "Write results.csv and summary.md after the run (default: the sweep's aggregate).")

_EXECUTOR = flags.DEFINE_enum("executor", "local", ("local", "slurm"),
                              "local: processes on this machine; slurm: one SLURM array job.")
_STATUS = flags.DEFINE_bool("status", False,
                            "Print each job's state (finished/running/pending/failed) and log.")
_RETRY = flags.DEFINE_bool("retry", False, "Resubmit only the failed jobs to SLURM.")
_CANCEL = flags.DEFINE_bool("cancel", False, "Cancel the sweep's unfinished SLURM jobs.")
_WAIT = flags.DEFINE_bool("wait", False,
                          "With --executor=slurm or --retry: block until the jobs end, then "
                          "print their status and aggregate.")
_ALLOW_DIRTY = flags.DEFINE_bool(
    "allow_dirty", False,
    "Submit from a checkout with uncommitted changes (they are copied into the snapshot).")
_DEFAULTS = slurm.SlurmOptions()
_PARTITION = flags.DEFINE_string("slurm_partition", _DEFAULTS.slurm_partition,
                                 "SLURM partition (default: the cluster's default).")
_TIMEOUT = flags.DEFINE_integer("timeout_min", _DEFAULTS.timeout_min,
                                "Time limit of each job in minutes (then requeued).")
_CPUS = flags.DEFINE_integer("cpus_per_job", _DEFAULTS.cpus_per_job, "CPUs of each job.")
_GPUS = flags.DEFINE_integer("gpus_per_job", _DEFAULTS.gpus_per_job, "GPUs of each job.")
_MEM = flags.DEFINE_float("mem_gb", _DEFAULTS.mem_gb, "Memory of each job in GB.")
_ARRAY_PARALLELISM = flags.DEFINE_integer("array_parallelism", _DEFAULTS.array_parallelism,
                                          "At most this many array elements run at once.")
_TASKS = flags.DEFINE_integer(
    "tasks_per_job", _DEFAULTS.tasks_per_job,
    "jax.distributed processes per job (>1 adds --distributed to the experiment).")
_SETUP = flags.DEFINE_multi_string("slurm_setup", list(_DEFAULTS.slurm_setup),
                                   "Shell line run before each job (repeatable).")

_VERBOSE = flags.DEFINE_bool("verbose", False,
                             "Show the Python traceback of a bad sweep file as well.")

flags.mark_flag_as_required("sweep")


def _exit_on_signal(signum, frame):
    del frame
    raise SystemExit(128 + signum)  # unwinds through the runner, which stops its jobs


def _fail(message: str) -> NoReturn:
    print(f"error: {message}".rstrip(), file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """A bad command line exits with status 2 and one message."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        if "--verbose" in argv:
            traceback.print_exc()
        _fail(f"bad command line. {e}")


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        _fail(f"bad command line. Unexpected arguments: {argv[1:]}")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _exit_on_signal)
    try:
        sweep = load_sweep(_SWEEP.value)
    except Exception as e:  # pylint: disable=broad-except  # the sweep file is user code
        if _VERBOSE.value:
            traceback.print_exc()
        _fail(f"bad sweep {_SWEEP.value!r}. {type(e).__name__}: {e}")
    root = _ROOT.value or sweep.root or os.path.join(
        "workdirs", "sweeps", os.path.splitext(os.path.basename(_SWEEP.value.partition(":")[0]))[0])
    actions = [n for n, f in (("--status", _STATUS), ("--retry", _RETRY), ("--cancel", _CANCEL))
               if f.value]
    if len(actions) > 1:
        _fail(f"bad command line. {' and '.join(actions)} exclude each other; give one.")
    slurm_flags = [f"--{name}" for name in ("slurm_partition", "timeout_min", "cpus_per_job",
                                            "gpus_per_job", "mem_gb", "array_parallelism",
                                            "tasks_per_job", "slurm_setup", "allow_dirty", "wait")
                   if flags.FLAGS[name].present]
    if slurm_flags and _EXECUTOR.value != "slurm" and not (_RETRY.value or _CANCEL.value):
        _fail(f"bad command line. {', '.join(slurm_flags)} only apply with --executor=slurm "
              "(or --retry); add --executor=slurm.")
    if _EXECUTOR.value == "slurm" and _MODE.value != "processes":
        _fail("bad command line. --mode=vmap is local only; with --executor=slurm use "
              "--mode=processes (each array element is one job).")
    try:
        if actions:
            return _slurm_action(actions[0], sweep, root)
        if _EXECUTOR.value == "slurm":
            return _slurm_submit(sweep, root, only=None)
        report = runner.run_sweep(sweep, root, parallel=_PARALLEL.value, mode=_MODE.value,
                                  dry_run=_DRY_RUN.value, aggregate=_AGGREGATE.value)
    except runner.SweepError as e:
        if _VERBOSE.value:
            traceback.print_exc()
        _fail(f"bad sweep {_SWEEP.value!r}. {e}")
    return report.exit_code


def _options() -> slurm.SlurmOptions:
    return slurm.SlurmOptions(
        slurm_partition=_PARTITION.value, timeout_min=_TIMEOUT.value, cpus_per_job=_CPUS.value,
        gpus_per_job=_GPUS.value, mem_gb=_MEM.value,
        array_parallelism=_ARRAY_PARALLELISM.value, tasks_per_job=_TASKS.value,
        slurm_setup=tuple(_SETUP.value or ()))


def _slurm_submit(sweep, root: str, only) -> int:
    results, job_id = slurm.submit(sweep, root, _options(), allow_dirty=_ALLOW_DIRTY.value,
                                   only=only, dry_run=_DRY_RUN.value)
    if any(r.status == "invalid" for r in results):
        return 2
    if job_id is None or not _WAIT.value:
        return 0
    rows = slurm.wait(sweep, root)
    print(slurm.format_status(rows), flush=True)
    aggregate = sweep.aggregate if _AGGREGATE.value is None else _AGGREGATE.value
    if aggregate:
        aggregate_lib.aggregate(os.path.abspath(root), log=print)
    return 1 if any(r.state == "failed" for r in rows) else 0


def _slurm_action(action: str, sweep, root: str) -> int:
    if action == "--status":
        rows = slurm.status(sweep, root)
        print(slurm.format_status(rows), flush=True)
        return 1 if any(r.state == "failed" for r in rows) else 0
    if action == "--cancel":
        slurm.cancel(sweep, root, log=print)
        return 0
    failed = slurm.failed_jobs(sweep, root)
    if not failed:
        print("no failed jobs to retry", flush=True)
        return 0
    print(f"resubmitting {len(failed)} failed job(s): {', '.join(failed)}", flush=True)
    return _slurm_submit(sweep, root, only=failed)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
