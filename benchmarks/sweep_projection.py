r"""Projected training time of the packed disentangling sweep on this machine.

Run from the repository root::

    python -m benchmarks.sweep_projection                      # all 27 programs; prints
    python -m benchmarks.sweep_projection --only=fig5 --steps=50
    python -m benchmarks.device_check --sweep                  # the same, in the device check

The packed sweep (``launch/sweeps/disentangle_packed.py``: the networks behind Figs. 2, 3
and 5-8 of Vafidis et al. (2025), 390 networks in 27 compiled programs) runs one job
per program, one after another. This module builds each program exactly as that job's
``training.fit`` builds it (``experiments.disentangle.experiment.fit_args`` and
``training.chunk_program``: the same initial states, member placement over the devices
and ``member_block``; on a CPU the ``"auto"`` probe runs, or its cached choice is used),
compiles a chunk of ``--steps`` training steps (every program's compilation in
parallel, ``--compile_threads`` at a time), then times ``--repeats`` calls of each
program in turn (median). A program's projected time is its compilation plus its full
budget (1e5 steps; 2e4 for the transformer) at the measured rate; the sweep's is the
sum. Not included: process start, evaluation (the full protocol: about 10-30 % of a
job at 2,000 steps on a 2-core CPU, a few percent at the full budget,
``docs/benchmarks/sweep_packing.md``) and checkpoint writes.

On a 2-core AVX2 EPYC this gave 5.55 h packed against 5.91 h per figure (0.94), within
5 % of the whole-job projection of ``benchmarks/sweep_packing.py`` (5.63 h against 6.03
h); on an accelerator it gives the sweep's time on one device without running it.
Cost: 71 min on that CPU, most of it the ``member_block`` probes (about a minute per
program on a fresh cache); on a GPU the compilations (in parallel) and a few seconds
per program.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import tempfile
import time
from typing import Sequence

from absl import app, flags


SWEEPS = ("per-figure", "packed")


def define_flags() -> None:
    """The command's flags (defined only when run as a command; ``device_check`` defines
    its own)."""
    flags.DEFINE_enum("sweep", "both", ["both", *SWEEPS], "Which sweep's programs: the "
                      "per-figure runs (launch/sweeps/disentangle_panels.py), the packed "
                      "programs (launch/sweeps/disentangle_packed.py) or both.")
    flags.DEFINE_string("only", "", "One panel's programs only (e.g. fig5).")
    flags.DEFINE_integer("steps", 200, "Training steps per timed call.", lower_bound=1)
    flags.DEFINE_integer("repeats", 3, "Timed calls per program (median).", lower_bound=1)
    flags.DEFINE_integer("compile_threads", 0, "Programs compiled at once (0: one per core, "
                         "at most 8).", lower_bound=0)
    flags.DEFINE_bool("fresh_cache", True, "Probe member_block on a fresh autotune cache, as "
                      "on a new machine (--nofresh_cache: use the machine's cached choices).")
    flags.DEFINE_string("out", None, "Markdown page; default docs/benchmarks/"
                        "sweep_projection.md for both sweeps' every program, none otherwise; "
                        "'' disables.")


DEFAULT_OUT = os.path.join("docs", "benchmarks", "sweep_projection.md")


def programs(sweep: str, only: str = "") -> list:
    """``(config, program, label)`` of every program of ``sweep`` (``"packed"`` or
    ``"per-figure"``), or of one panel's: for the per-figure sweep each run's own
    programs (``config.part_config``: the run's grid and seeds, as its job runs them),
    labelled ``run/program``."""
    from experiments.disentangle import config as config_lib
    from experiments.disentangle import grid
    from launch.sweeps import disentangle_packed as packed
    from launch.sweeps import disentangle_panels as panels

    config = config_lib.get_config(packed.VARIANT)
    if sweep == "packed":
        wanted = {job.name for job in packed.get_sweep(only).jobs} if only else None
        return [(config, p, name) for name, p in grid.programs_of(config).items()
                if wanted is None or name in wanted]
    if sweep != "per-figure":
        raise ValueError(f"sweep must be one of {SWEEPS}, got {sweep!r}")
    runs = [job.name for job in panels.get_sweep(only).jobs] if only else list(config.parts)
    out = []
    for run in runs:
        run_config = config_lib.part_config(config, run)
        out += [(run_config, p, f"{run}/{name}")
                for name, p in grid.programs_of(run_config).items()]
    return out


def _interleaved(lists: Sequence[list]) -> list:
    """The items of ``lists`` taken in turn (a, b, a, b, ..., then the longer's rest)."""
    out = []
    for i in range(max(map(len, lists), default=0)):
        out += [items[i] for items in lists if i < len(items)]
    return out


def project(sweeps: Sequence[str] = ("packed",), only: str = "", *, steps: int = 200,
            repeats: int = 3, compile_threads: int = 0, log=print) -> dict:
    """Build, compile and time every program of ``sweeps``; per sweep ``{"rows",
    "total_s", "setup_s", "compile_s"}``, with ``"steps"`` and ``"threads"``.

    Each row: program (``run/program`` for a per-figure run), networks, member_block,
    full-budget steps, setup seconds (initial states and, on a CPU without a cached
    choice, the ``member_block`` probe), compile seconds, steps/s and network-steps/s of
    the timed calls, and the projected seconds: setup + compile + full budget at the
    measured rate. The programs are built and timed with the sweeps' programs in turn,
    so a change of the machine's load hits both sweeps alike."""
    import jax

    from benchmarks import common
    from experiments.disentangle import experiment
    from gbi_jax import training

    todo = _interleaved([[(sweep, *item) for item in programs(sweep, only)]
                         for sweep in sweeps])
    built = []
    for sweep, config, program, label in todo:
        args, _ = experiment.fit_args(config, program)
        t0 = time.perf_counter()
        prog = training.chunk_program(
            init_fn=args["init_fn"], loss_fn=args["loss_fn"], tx=args["tx"],
            seeds=args["seeds"], member_data=args["member_data"], chunk_size=steps,
            member_block=args["member_block"], name=args["name"])
        built.append((sweep, label, program, args["num_steps"], prog, time.perf_counter() - t0))
        log(f"[{sweep}: {label}] {len(program.members)} networks, member_block "
            f"{prog.member_block} ({prog.member_block_note or 'set'})")
    threads = compile_threads or min(8, common.usable_cores())
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        compile_times = list(pool.map(lambda b: b[4].compile(), built))
    out = {sweep: {"rows": []} for sweep in sweeps}
    for (sweep, label, program, full, prog, setup_s), compile_s in zip(built, compile_times):
        seconds = common.median_time(lambda: jax.block_until_ready(prog.run()),
                                     repeats=repeats)
        rate = steps / seconds
        row = {"program": label, "networks": len(program.members),
               "member_block": prog.member_block, "full_steps": int(full), "setup_s": setup_s,
               "compile_s": compile_s, "steps_per_s": rate,
               "network_steps_s": rate * len(program.members),
               "projected_s": setup_s + compile_s + full / rate}
        out[sweep]["rows"].append(row)
        log(f"[{sweep}: {label}] {rate:,.1f} steps/s, projected {row['projected_s']:.0f} s")
    for res in out.values():
        rows = res["rows"]
        res.update(total_s=sum(r["projected_s"] for r in rows),
                   setup_s=sum(r["setup_s"] for r in rows),
                   compile_s=sum(r["compile_s"] for r in rows),
                   networks=sum(r["networks"] for r in rows))
    return {"sweeps": out, "steps": steps, "threads": threads, "repeats": repeats}


def table(result: dict, sweep: str) -> str:
    """One sweep's per-program Markdown table."""
    from benchmarks import common

    rows = [[r["program"], str(r["networks"]), str(r["member_block"] or "all"),
             f"{r['full_steps']:,}", f"{r['setup_s']:.1f} s", f"{r['compile_s']:.1f} s",
             f"{r['steps_per_s']:,.1f}", f"{r['network_steps_s']:,.0f}",
             f"{r['projected_s'] / 60:.1f} min"]
            for r in result["sweeps"][sweep]["rows"]]
    return common.markdown_table(
        ["program", "networks", "member_block", "full steps", "setup", "compile", "steps/s",
         "network-steps/s", "projected training"], rows)


def summary(result: dict) -> str:
    """The totals: one line per sweep, and the packed / per-figure ratio when both ran."""
    sweeps = result["sweeps"]
    lines = []
    for sweep, res in sweeps.items():
        lines.append(f"- {sweep}: {len(res['rows'])} programs, {res['networks']} networks: "
                     f"**{res['total_s'] / 3600:.2f} h** projected training (setup "
                     f"{res['setup_s'] / 60:.1f} min, compilation {res['compile_s'] / 60:.1f} "
                     "min of it)")
    if len(sweeps) == 2:
        ratio = sweeps["packed"]["total_s"] / sweeps["per-figure"]["total_s"]
        lines.append(f"- **packed / per-figure: {ratio:.2f}**")
    return "\n".join(lines)


def page(result: dict, info: dict, command: str, seconds: float) -> str:
    """The Markdown page of a run of both sweeps."""
    lines = [
        "# Disentangling panels: projected training time at the full budget",
        "",
        f"Written by `{command}` (`benchmarks/sweep_projection.py`; its docstring gives the "
        f"rules) in {seconds / 60:.0f} min. Every program of both sweeps is built as its "
        "job's `training.fit` builds it, compiled, and timed on calls of "
        f"{result['steps']} training steps (median of {result['repeats']}); its projected "
        "time is its setup (the `member_block` probe on a CPU, on a fresh cache) and "
        "compilation plus the full budget (1e5 steps, 2e4 for the transformer) at that "
        "rate. Process starts, evaluation and checkpoint writes are not included; "
        "[sweep_packing.md](sweep_packing.md) measures whole jobs at 2,000 steps. Pages for "
        "all benchmarks: [README.md](README.md).",
        "",
        "## Result",
        "",
        summary(result),
        "",
    ]
    for sweep in result["sweeps"]:
        spec = ("launch/sweeps/disentangle_packed.py" if sweep == "packed" else
                "launch/sweeps/disentangle_panels.py")
        lines += [f"## {sweep} (`{spec}`)", "", table(result, sweep), ""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from benchmarks import common

    f = flags.FLAGS
    t0 = time.perf_counter()
    info = common.machine_info()
    cache_dir = tempfile.TemporaryDirectory() if f.fresh_cache else None
    if cache_dir is not None:
        os.environ["GBI_JAX_AUTOTUNE_CACHE"] = os.path.join(cache_dir.name, "autotune.json")
    sweeps = SWEEPS if f.sweep == "both" else (f.sweep,)
    result = project(sweeps, f.only, steps=f.steps, repeats=f.repeats,
                     compile_threads=f.compile_threads)
    for sweep in sweeps:
        print(f"\n{sweep}:\n\n{table(result, sweep)}", flush=True)
    print("\n" + summary(result), flush=True)
    out = f.out if f.out is not None else (DEFAULT_OUT if f.sweep == "both" and not f.only
                                           else "")
    if out:
        command = "python -m benchmarks.sweep_projection " + " ".join(
            a for a in sys.argv[1:] if a.startswith("--"))
        info["load average at end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        common.write_page(out, page(result, info, command.strip(),
                                    time.perf_counter() - t0))
        print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    from experiments.host_devices import HOST_DEVICES_ENV, request_host_devices

    # As a disentangling job on a new machine: no persistent compilation cache, and one
    # host device per core unless the job's variables say otherwise.
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    request_host_devices("auto", envs=("DISENTANGLE_HOST_DEVICES", HOST_DEVICES_ENV))
    define_flags()
    app.run(main)
