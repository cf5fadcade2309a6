r"""A short check of whatever accelerator (or CPU) this machine has.

Run from the repository root::

    python -m benchmarks.device_check --out=docs/benchmarks/device_check_gpu.md  # < 5 min on a GPU
    python -m benchmarks.device_check --quick --notests   # a smaller version, about 1 min on 2 CPU cores

What it runs, in one process (plus one pytest subprocess):

1. The test suite's fast part on this machine: ``pytest -q -m "not slow and not slurm"``
   on ``--test_files`` (the library tests: inference, training, models, losses,
   analysis), so numerics are checked where the speed is measured.
2. Latent inference (the work of ``benchmarks.inference``: an MLP decoder 10 -> 256 ->
   256 -> 784, one latent per example): iterative GBI (``--latent_steps`` SGD steps on
   every latent at once, ``inference.optimize_batch``) and one-step GBI
   (``inference.one_step_batch``) at ``--sizes`` latents (1k / 10k / 100k). Reported:
   latents/s and FLOP/s (1,075,200 matmul FLOPs per latent and step).
3. Training: the Fig. 1 disentangling RNN program (``benchmarks.disentangle_train_work``:
   ``--members`` networks vmapped, sharded over the devices, with the platform's
   ``member_block``) for ``--train_steps`` steps. Reported: network-steps/s and FLOP/s
   (the program's matmul FLOPs, ``benchmarks.common.matmul_flops``: 26.4 M per
   network-step).

4. With ``--sweep``: the packed disentangling sweep (``launch/sweeps/disentangle_packed.py``,
   390 networks in 27 programs) projected at its full budget on this machine
   (``benchmarks.sweep_projection``: every program built as its job builds it, compiled
   in parallel, timed on ``--sweep_steps``-step calls): the hours one device needs for
   the sweep's training, without running it.

Every rate is also given as a fraction of the device's matmul peak measured in the same
run (one jitted float32 ``[n, n] @ [n, n]``, n = 8192 on an accelerator, 2048 on CPU; the
higher of a measurement before and one after the rates, so a load change on a shared
machine gives fewer fractions above 100%).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Sequence

from absl import app, flags

from benchmarks import common

_QUICK, _OUT = common.define_run_flags(
    "Small sizes (1k latents at most, 4 networks, 20 steps): a minute on a laptop CPU.", "",
    "Markdown file for the table ('' prints only).")
_SIZES = flags.DEFINE_list("sizes", ["1000", "10000", "100000"], "Latent counts timed.")
_LATENT_STEPS = flags.DEFINE_integer("latent_steps", 50, "Steps of iterative GBI.")
_MEMBERS = flags.DEFINE_integer("members", 26, "Networks trained together (Fig. 1: 26).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 200, "Training steps timed.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (median).")
_TESTS = flags.DEFINE_bool("tests", True, "Run the fast tests first.")
_SWEEP = flags.DEFINE_bool(
    "sweep", False, "Also project the packed disentangling sweep's training time on this "
    "machine (benchmarks.sweep_projection: its 27 programs compiled in parallel, then "
    "timed; with --quick one panel's 4 programs).")
_SWEEP_STEPS = flags.DEFINE_integer("sweep_steps", 200, "Steps per timed call of --sweep.",
                                    lower_bound=1)
_TEST_FILES = flags.DEFINE_list(
    "test_files", ["tests/test_inference.py", "tests/test_training.py", "tests/test_losses.py",
                   "tests/test_models_relu_rnn.py", "tests/test_models_recurrent.py",
                   "tests/test_analysis_metrics.py", "tests/test_analysis_theory.py"],
    "Test files of the fast part.")


def run_tests(files: Sequence[str]) -> dict:
    """The fast tests in a subprocess; ``{"ok", "summary", "seconds"}``."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "not slow and not slurm",
                        "-p", "no:cacheprovider", *files], capture_output=True, text=True,
                       timeout=600, check=False)
    lines = [l for l in r.stdout.strip().splitlines() if l.strip()]
    return {"ok": r.returncode == 0, "summary": lines[-1] if lines else r.stderr[-300:],
            "seconds": time.perf_counter() - t0}


def measure_inference(sizes: Sequence[int], steps: int, repeats: int) -> list[dict]:
    """Latents/s and FLOP/s of iterative and one-step GBI at each size."""
    import jax

    from benchmarks import inference_work as work
    from gbi_jax import inference as gbi

    model = work.make_model()
    params = model.init(jax.random.PRNGKey(0), jax.numpy.zeros((0,)),
                        jax.numpy.zeros((work.K,)))
    optimize, _, _, one_step = work.build_jax_fns(model, steps, 0.01)
    inputs, x, _ = work.make_targets(model, params, max(sizes), 0.05, 0)
    rows = []
    for n in sizes:
        batch = {"inputs": inputs[:n], "x": x[:n]}
        z0 = gbi.max_entropy_latent(work.K, (n,))
        t_iter = common.median_time(lambda: optimize(params, z0, batch).block_until_ready(),
                                    repeats=repeats)
        t_one = common.median_time(lambda: one_step(params, batch).block_until_ready(),
                                   repeats=repeats)
        rows.append({"n": n, "iter_latents_s": n / t_iter,
                     "iter_flops": n * steps * work.FLOPS_PER_LATENT_STEP / t_iter,
                     "one_latents_s": n / t_one,
                     "one_flops": n * work.FLOPS_PER_LATENT_STEP / t_one})
    return rows


def measure_training(members: int, steps: int, repeats: int) -> dict:
    """Network-steps/s of the Fig. 1 training program."""
    from benchmarks import disentangle_train_work as work

    block = work.fig1_member_block()
    run, padded = work.jax_runner(members, steps, member_block=block)
    seconds = common.median_time(run, repeats=repeats)
    return {"members": members, "padded": padded, "block": block,
            "network_steps_s": members * steps / seconds,
            "flops": run.matmul_flops() * members / padded / seconds}


def sweep_section(result: dict | None) -> str:
    """The ``--sweep`` projection's Markdown (empty without it)."""
    if result is None:
        return ""
    from benchmarks import sweep_projection

    return ("\n## Packed disentangling sweep, projected training at the full budget\n\n"
            + sweep_projection.summary(result) + "\n\n"
            + sweep_projection.table(result, "packed") + "\n")


def report(info: dict, tests: dict | None, peak: float, inference: list[dict], train: dict,
           *, steps: int, train_steps: int, seconds: float, command: str,
           sweep: dict | None = None) -> str:
    pct = lambda flops: f"{100 * flops / peak:.1f}%"  # noqa: E731
    inf = common.markdown_table(
        ["latents", "iterative latents/s", "iterative FLOP/s", "% of peak",
         "one-step latents/s", "one-step FLOP/s", "% of peak"],
        [[f"{r['n']:,}", f"{r['iter_latents_s']:,.0f}", f"{r['iter_flops']:.3g}",
          pct(r["iter_flops"]), f"{r['one_latents_s']:,.0f}", f"{r['one_flops']:.3g}",
          pct(r["one_flops"])] for r in inference])
    tests_line = ("- fast tests: skipped (--notests)" if tests is None else
                  f"- fast tests: {'passed' if tests['ok'] else 'FAILED'} "
                  f"({tests['summary']}; {tests['seconds']:.0f} s)")
    return (f"# Device check\n\n`{command}` ({seconds:.0f} s in all)\n\n"
            "Machine:\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n"
            f"- measured float32 matmul peak: {peak:.3g} FLOP/s\n{tests_line}\n\n"
            f"## Latent inference ({steps} iterative steps; MLP decoder 10-256-256-784)\n\n"
            f"{inf}\n\n## Training (Fig. 1 disentangling RNN program)\n\n"
            f"{train['members']} networks ({train['padded']} after padding to the devices), "
            f"cache blocks of {train['block'] or 'all'} per device, {train_steps} steps: "
            f"**{train['network_steps_s']:,.0f} network-steps/s**, "
            f"{train['flops']:.3g} matmul FLOP/s = {pct(train['flops'])} of peak\n"
            + sweep_section(sweep))


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    t0 = time.perf_counter()
    quick = _QUICK.value
    tests = run_tests(_TEST_FILES.value) if _TESTS.value else None
    import jax

    sizes = [int(s) for s in _SIZES.value]
    if quick:
        sizes = [n for n in sizes if n <= 1000] or [1000]
    steps = 10 if quick else _LATENT_STEPS.value
    members = 4 if quick else _MEMBERS.value
    train_steps = 20 if quick else _TRAIN_STEPS.value
    repeats = 2 if quick else _REPEATS.value
    accelerator = jax.default_backend() != "cpu"
    peak_n = 8192 if accelerator else 2048
    peak = common.jax_matmul_peak(peak_n, repeats=3 if quick else 7)
    inference = measure_inference(sizes, steps, repeats)
    train = measure_training(members, train_steps, repeats)
    peak = max(peak, common.jax_matmul_peak(peak_n, repeats=3 if quick else 7))
    sweep = None
    if _SWEEP.value:
        from benchmarks import sweep_projection

        sweep = sweep_projection.project(("packed",), "fig5" if quick else "",
                                         steps=10 if quick else _SWEEP_STEPS.value,
                                         repeats=1 if quick else 3)
    devices = jax.devices()
    info = common.machine_info({"backend": jax.default_backend(),
                                "devices": f"{len(devices)} x {devices[0].device_kind}"})
    command = "python -m benchmarks.device_check " + " ".join(argv_flags())
    text = report(info, tests, peak, inference, train, steps=steps, train_steps=train_steps,
                  seconds=time.perf_counter() - t0, command=command.strip(), sweep=sweep)
    print(text, flush=True)
    if _OUT.value:
        os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
        with open(_OUT.value, "w") as f:
            f.write(text)
    return 0 if tests is None or tests["ok"] else 1


def argv_flags() -> list[str]:
    return [a for a in sys.argv[1:] if a.startswith("--")]


if __name__ == "__main__":
    app.run(main)
