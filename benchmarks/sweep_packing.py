r"""Machine time of the disentangling panels: per-figure runs against packed programs.

Run from the repository root::

    python -m benchmarks.sweep_packing              # both sweeps; docs/benchmarks/sweep_packing.md
    python -m benchmarks.sweep_packing --only=fig5  # one panel's jobs; prints only

Both sweeps train the same 405 network rows behind Figs. 2, 3 and 5-8 of Vafidis et al.
(2025): ``launch/sweeps/disentangle_panels.py`` as 28 runs (a figure's networks in one
workdir, each static setting one program: 49 programs) and
``launch/sweeps/disentangle_packed.py`` as one job per program (27 programs, 390
networks: twins merged, shared networks trained once). Each sweep runs here exactly as
``launch.run`` runs it (one job after another, each its own process, on a fresh
autotune cache and without a persistent compilation cache, so compilation and the
``member_block`` probe are paid as on a new machine), with ``--steps`` training steps
per program (every core, the transformer too) instead of the papers' 1e5 (2e4 for the
transformer) and the full evaluation protocol.

Measured per sweep: machine time (wall) and CPU time (user + system of the jobs), and
per program the training rate after compilation (``perf/steps_per_sec`` of its
TensorBoard events). The full-budget time of a job is projected as its measured time
plus its programs' remaining steps at their measured rates. The rows of the two sweeps
are compared value by value: a packed network has its run's initialisation, data and
evaluation keys, and differs only where float rounding differs (XLA's CPU kernels for
another number of networks per device), amplified by training.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
from typing import Sequence

from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def define_flags() -> None:
    """The command's flags (defined only when run as a command, so tests and other
    benchmarks can import this module)."""
    flags.DEFINE_integer("steps", 2000, "Training steps of every program (more than "
                         "train.chunk_size, so the rate after compilation is measured).")
    flags.DEFINE_string("only", "", "One panel's jobs only (e.g. fig5); prints only.")
    flags.DEFINE_string("root", "", "Where the workdirs go (default: a temporary directory, "
                        "removed at the end).")
    flags.DEFINE_string("out", None, "Markdown page; default docs/benchmarks/sweep_packing.md "
                        "for a run of every job, none with --only; '' disables.")


DEFAULT_OUT = os.path.join("docs", "benchmarks", "sweep_packing.md")
SWEEPS = {"per-figure runs": "launch/sweeps/disentangle_panels.py",
          "packed programs": "launch/sweeps/disentangle_packed.py"}
ROW_VALUES = ("ood_r2", "id_r2", "angles", "accuracy", "final_loss")


def reduced(sweep, steps: int):
    """``sweep`` with every job training ``steps`` steps (transformer included)."""
    import dataclasses

    from launch.sweep import Run

    jobs = [Run(j.name, {**j.overrides, "train.steps": steps, "train.transformer_steps": steps},
                config=j.config) for j in sweep.jobs]
    return dataclasses.replace(sweep, jobs=jobs)


def full_steps(program: str) -> int:
    from experiments.disentangle import config as config_lib

    train = config_lib.get_config("fig1").train
    return int(train.transformer_steps if program.startswith("transformer") else train.steps)


def run_one(label: str, spec: str, root: str, steps: int) -> dict:
    """Run one sweep under ``root``; its timings, projections and rows."""
    from gbi_jax import tensorboard
    from launch import runner
    from launch.sweep import load_sweep

    sweep = reduced(load_sweep(spec), steps)
    os.makedirs(root, exist_ok=True)
    env = {"GBI_JAX_AUTOTUNE_CACHE": os.path.join(root, "autotune.json"),
           "JAX_ENABLE_COMPILATION_CACHE": "false"}
    lines: list[str] = []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    report = runner.run_sweep(sweep, root, cwd=REPO_ROOT, env=env, aggregate=False,
                              log=lines.append)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if report.exit_code:
        sys.stderr.write("\n".join(lines[-40:]) + "\n")
        raise RuntimeError(f"{label}: {report.summary()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    jobs, rows, programs = [], {}, 0
    for r in report.results:
        with open(os.path.join(r.workdir, "results.json")) as f:
            res = json.load(f)
        extra = 0.0
        for name, t in res["timing"].items():
            scalars = tensorboard.read_scalars(os.path.join(r.workdir, "tensorboard", name))
            rate = scalars["mean"]["perf/steps_per_sec"][-1][1]
            extra += (full_steps(name) - t["steps"]) / rate
            programs += 1
        jobs.append({"job": r.job.name, "wall_s": r.seconds, "projected_s": r.seconds + extra,
                     "programs": len(res["timing"]),
                     "networks": sum(t["networks"] for t in res["timing"].values()),
                     "train_s": sum(t["train_s"] for t in res["timing"].values()),
                     "eval_s": sum(t["eval_s"] for t in res["timing"].values())})
        for row in res["rows"]:
            rows[row_key(row, r.job.name)] = row
    print(f"{label}: {len(jobs)} jobs, {programs} programs, wall {wall:.0f} s, "
          f"CPU {cpu:.0f} s", flush=True)
    return {"label": label, "spec": spec, "wall_s": wall, "cpu_s": cpu, "jobs": jobs,
            "programs": programs, "rows": rows}


def row_key(row: dict, job: str) -> tuple:
    from experiments.disentangle.grid import DYNAMIC, STATIC

    return (row.get("part", job),) + tuple(row[k] for k in STATIC + DYNAMIC + ("seed",))


def compare_rows(a: dict, b: dict) -> tuple[int, int, float]:
    """(rows of ``a`` found in ``b``, of them exactly equal, largest difference)."""
    import numpy as np

    found = equal = 0
    worst = 0.0
    for key, row in a.items():
        other = b.get(key)
        if other is None:
            continue
        found += 1
        diffs = [float(np.max(np.abs(np.asarray(row[k], float) - np.asarray(other[k], float))))
                 for k in ROW_VALUES]
        worst = max(worst, *diffs)
        equal += all(d == 0 for d in diffs)
    return found, equal, worst


def networks_trained(res: dict) -> int:
    return sum(j["networks"] for j in res["jobs"])


def hours(s: float) -> str:
    return f"{s / 3600:.2f} h"


def page(results: Sequence[dict], cmp: tuple, steps: int, info: dict, command: str) -> str:
    from benchmarks import common

    base, packed = results
    head = ["sweep", "jobs", "programs", "networks trained", "rows",
            f"wall at {steps:,} steps", f"CPU at {steps:,} steps", "projected wall, full budget"]
    body = [[r["label"], str(len(r["jobs"])), str(r["programs"]), str(networks_trained(r)),
             str(len(r["rows"])), hours(r["wall_s"]), hours(r["cpu_s"]),
             hours(sum(j["projected_s"] for j in r["jobs"]))] for r in results]
    proj = [sum(j["projected_s"] for j in r["jobs"]) for r in results]
    found, equal, worst = cmp
    lines = [
        "# Disentangling panels: per-figure runs vs packed programs",
        "",
        f"Written by `{command}` (`benchmarks/sweep_packing.py`; its docstring gives the "
        "rules). Both sweeps train the networks behind Figs. 2, 3 and 5-8 with the full "
        "evaluation protocol, each job in its own process as `launch.run` runs it, on fresh "
        "caches. Training is cut to "
        f"{steps:,} steps per program; the full-budget column adds each program's remaining "
        "steps (1e5, 2e4 for the transformer) at the rate it ran at after compiling. Pages "
        "for all benchmarks: [README.md](README.md).",
        "",
        "## Result",
        "",
        f"- **packed / per-figure machine time at {steps:,} steps: "
        f"{packed['wall_s'] / base['wall_s']:.2f}** (CPU time "
        f"{packed['cpu_s'] / base['cpu_s']:.2f})",
        f"- **projected at the full budget: {hours(proj[1])} against {hours(proj[0])} "
        f"({proj[1] / proj[0]:.2f})**",
        f"- rows compared: {found} of {len(base['rows'])}; exactly equal: {equal} "
        f"(largest difference {worst:.3g})",
        "",
        common.markdown_table(head, body),
        "",
        "## Jobs",
        "",
    ]
    for r in results:
        lines += [f"### {r['label']} (`{r['spec']}`)", ""]
        lines.append(common.markdown_table(
            ["job", "programs", "networks", "wall", "train", "evaluate", "projected, full"],
            [[j["job"], str(j["programs"]), str(j["networks"]), f"{j['wall_s']:.0f} s",
              f"{j['train_s']:.0f} s", f"{j['eval_s']:.0f} s", f"{j['projected_s'] / 60:.1f} min"]
             for j in r["jobs"]]))
        lines.append("")
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    del argv
    sys.path.insert(0, REPO_ROOT)
    os.chdir(REPO_ROOT)
    from benchmarks import common
    from launch.sweep import load_sweep

    FLAGS = flags.FLAGS  # pylint: disable=invalid-name
    only, steps = FLAGS.only, FLAGS.steps
    from experiments.disentangle import config as config_lib

    chunk = config_lib.get_config("fig1").train.chunk_size
    if steps <= chunk:
        sys.stderr.write(f"--steps: must be more than train.chunk_size ({chunk}: the rate is "
                         f"measured from the second chunk on), got {steps}\n")
        return 2
    for spec in SWEEPS.values():
        try:
            load_sweep(f"{spec}:{only}" if only else spec)  # a bad --only fails here
        except ValueError as e:
            sys.stderr.write(f"--only: {e}\n")
            return 2
    root = FLAGS.root or tempfile.mkdtemp(prefix="sweep_packing_")
    info = common.machine_info()
    t0 = time.perf_counter()
    results = []
    try:
        for i, (label, spec) in enumerate(SWEEPS.items()):
            spec = f"{spec}:{only}" if only else spec
            results.append(run_one(label, spec, os.path.join(root, f"sweep{i}"), steps))
    finally:
        if not FLAGS.root:
            shutil.rmtree(root, ignore_errors=True)
    cmp = compare_rows(results[1]["rows"], results[0]["rows"])
    base, packed = results
    print(f"packed / per-figure: wall {packed['wall_s'] / base['wall_s']:.2f}, "
          f"CPU {packed['cpu_s'] / base['cpu_s']:.2f}; rows compared {cmp[0]}, equal {cmp[1]}, "
          f"largest difference {cmp[2]:.3g}; {time.perf_counter() - t0:.0f} s in all")
    out = FLAGS.out if FLAGS.out is not None else ("" if only else DEFAULT_OUT)
    if out:
        command = "python -m benchmarks.sweep_packing" + (
            f" --steps={steps}" if steps != FLAGS["steps"].default else "")
        common.write_page(out, page(results, cmp, steps, info, command))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
