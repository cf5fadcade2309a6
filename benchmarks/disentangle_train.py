r"""Training throughput of the disentangling RNN: gbi_jax (vmapped networks) vs PyTorch peers.

Run from the repository root (PyTorch from ``pip install -e '.[bench]'``; ``make bench``)::

    python -m benchmarks.disentangle_train          # 4-8 min; docs/benchmarks/disentangle_train.md
    python -m benchmarks.disentangle_train --quick  # ~1 min, prints only
    python -m benchmarks.disentangle_train --profile --steps=100   # per-op time of a step

The run prints the estimated time of its timed rounds once every program is compiled and
warmed up.

The work (one training step of one network of Vafidis et al. 2025, Fig. 1)
--------------------------------------------------------------------------
A batch of 16 trials of the D = 2 task is generated (latent ``U[-1/2, 1/2]^2``, 20
noisy samples with sigma = 0.2, a fixation and a decision step: 22 steps, fixation input
1 except at the decision step), passed through the network's frozen random encoder
``2 -> 100 -> 100 -> 40`` (ReLU), then through the ReLU RNN (41 -> 64, alpha = 1) step by
step and a 24-output readout; sigmoid + BCE with 0.5 targets before the decision step and
the 24 labels at it; one Adam (lr 1e-3) update. ``--members`` (26) networks are trained.

Variants
--------
``jax_vmapped``  gbi_jax: the exact program of ``experiments/disentangle`` Fig. 1
    (``benchmarks.disentangle_train_work.jax_runner``): the networks vmapped, the member
    axis split over ``--devices`` host devices (default: one per usable core) as
    ``training.fit`` does, each device running its networks in cache blocks of at most
    ``member_block``: the Fig. 1 config's (``--member_block``; ``auto`` on CPU: the block
    ``training.fit`` picks on this machine, measured once and cached). The same program
    at every block of ``--member_blocks`` (full runs: none, 2, 4, 5, 7, 13 per device) is
    timed in the same rounds (rows ``jax block=<b>``), showing which is best here.
``torch_batched_*``  the PyTorch peer a skilled user would write
    (``benchmarks.disentangle_torch.BatchedRNNs``): all M networks at once with stacked
    ``[M, in, out]`` weights and ``torch.baddbmm``, one fused ``torch.optim.Adam`` over
    the stacks, the loss the sum of each network's mean BCE. Timed in one process with
    1 thread and with all threads (``_1thread``, ``_allthreads``), and in one process
    per core (``_per_core``: ``benchmarks.common.ProcessPool``, 1 thread each, each
    training its ``M/P`` networks, started together, timed to the last one done). With
    ``--torch_compile`` (full runs) also with the loss through ``torch.compile``
    (``_compiled_*``).
``torch_1thread`` / ``torch_allthreads``  one network in the authors' style (``nn.Linear``
    layers, a Python time loop, ``nn.BCELoss``): the reference of how the authors train.

Reported: network-steps/s of every variant; the per-network ratio jax_vmapped / the
best PyTorch batched program in one process, the whole-machine ratio jax_vmapped /
``torch_batched_per_core``, and jax_vmapped / the best batched variant of all; each
variant's achieved matmul GFLOP/s and its share of the measured peaks
(``benchmarks.common.Peaks``: fp32 and, where the CPU has bfloat16 instructions, bf16).

FLOP count: 24,285,696 matmul FLOPs per network-step (the breakdown is in
``benchmarks/disentangle_torch.py``), cross-checked against ``torch.utils.flop_counter``
on the PyTorch peer and against the matmul FLOPs in the gbi_jax program's jaxpr
(``common.matmul_flops``), whose extra terms are listed on the page.

Timing is interleaved round-robin (``benchmarks.common.interleaved_medians``), every
variant run once first (compile / warm-up), so load changes on the shared machine hit
all alike; the ratios, not the absolute rates, are the result. Steps per timed call:
``--steps`` (400) for gbi_jax, ``--torch_steps`` (100) for PyTorch, the same in
``--quick`` (shorter calls under-read the rate), which runs fewer rounds and only the
configured block.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

from absl import app, flags

from benchmarks import common
from experiments.host_devices import request_host_devices

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join("docs", "benchmarks", "disentangle_train.md")
FULL_BLOCKS = ("none", "2", "4", "5", "7", "13")

_QUICK, _OUT = common.define_run_flags(
    "Short run: 3 rounds, only the configured member_block, no torch.compile; prints only "
    "(unless --out is given).", os.path.join(REPO_ROOT, DEFAULT_OUT),
    "Markdown results file (full runs, or --quick with --out given; '' disables).")
_MEMBERS = flags.DEFINE_integer("members", 26, "Networks trained (every variant).")
_DEVICES = flags.DEFINE_integer("devices", None, "Host devices for JAX (default: usable cores).")
_STEPS = flags.DEFINE_integer("steps", 400, "gbi_jax training steps per timed call.")
_TORCH_STEPS = flags.DEFINE_integer("torch_steps", 100, "PyTorch training steps per timed "
                                    "call.")
_REPEATS = flags.DEFINE_integer("repeats", None, "Timed rounds (default: 5; 3 with --quick).")
_TOP = flags.DEFINE_integer("top", 30, "Ops listed by --profile.")
_MEMBER_BLOCK = flags.DEFINE_string(
    "member_block", None, "Networks per cache block and device of jax_vmapped: an integer, "
    "'none' (or 0: one vmap) or 'auto' (default: the Fig. 1 config's runtime.member_block).")
_MEMBER_BLOCKS = flags.DEFINE_list(
    "member_blocks", None, "Blocks also timed side by side (default: "
    f"{','.join(FULL_BLOCKS)} in full runs, none with --quick).")
_TORCH_COMPILE = flags.DEFINE_bool(
    "torch_compile", None, "Also time the batched PyTorch peer through torch.compile "
    "(default: on in full runs, off with --quick; about 30 s of compiling).")
_PER_CORE = flags.DEFINE_bool("per_core", True, "Time torch_batched_per_core.")
_PROFILE = flags.DEFINE_bool(
    "profile", False, "Print where one gbi_jax training step spends its time (per XLA op) "
    "instead of timing against PyTorch.")


def request_devices(devices: int | None, profile: bool) -> None:
    """Sets ``XLA_FLAGS`` for the host devices (and op tracing); call before JAX starts."""
    request_host_devices(devices or "auto", envs=())
    if profile:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_enable_xprof_traceme=true").strip()


def parse_block(value):
    """``--member_block`` / ``--member_blocks`` entry: ``None`` (one vmap), an int or
    ``"auto"``."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("none", "0", ""):
        return None
    if v == "auto":
        return "auto"
    return int(v)


def block_label(block) -> str:
    return "none" if block is None else str(block)


def profile_text(prof: dict, members: int, steps: int) -> str:
    """The ``--profile`` report: per-op time of one training step."""
    step_ms = prof["wall_s"] / steps * 1e3
    table = common.plain_table(
        ["op", "ms/step", "% step", "calls/step", "result shape", "JAX source"],
        [[r["op"], f"{r['ms'] / steps:.3f}", f"{100 * r['ms'] / steps / step_ms:.1f}",
          f"{r['count'] / steps:g}", r["shape"], r["source"][-60:]] for r in prof["rows"]])
    per_dev = prof["padded"] // prof["devices"]
    sizes = "/".join(str(b) for b in prof["blocks"])
    return (f"{prof['padded']} networks ({per_dev} per device on {prof['devices']} device(s), "
            f"blocks of {sizes}), "
            f"{steps} steps traced: {step_ms:.2f} ms per step (with profiling on), "
            f"{members * steps / prof['wall_s']:,.0f} network-steps/s. Per op and device "
            f"(loops include their bodies):\n{table}")


# --------------------------------------------------------------------------
# The report.
# --------------------------------------------------------------------------
BATCHED_ONE_PROCESS = ("torch_batched_1thread", "torch_batched_allthreads",
                       "torch_batched_compiled_1thread", "torch_batched_compiled_allthreads")
BATCHED = BATCHED_ONE_PROCESS + ("torch_batched_per_core",)
AUTHORS = ("torch_1thread", "torch_allthreads")

WHAT = {
    "jax_vmapped": "gbi_jax, Fig. 1 program, configured member_block",
    "jax_single": "gbi_jax, one network",
    "torch_batched_1thread": "PyTorch stacked weights, 1 process, 1 thread",
    "torch_batched_allthreads": "PyTorch stacked weights, 1 process, all threads",
    "torch_batched_per_core": "PyTorch stacked weights, 1 process per core (M/P networks each)",
    "torch_batched_compiled_1thread": "as torch_batched_1thread, loss via torch.compile",
    "torch_batched_compiled_allthreads": "as torch_batched_allthreads, loss via torch.compile",
    "torch_1thread": "PyTorch authors' style, one network, 1 thread",
    "torch_allthreads": "PyTorch authors' style, one network, all threads",
}


def ratios(res: dict) -> list[tuple[str, str]]:
    """The headline ratios ``[(name, value)]``."""
    rate = res["rate"]
    jax_rate = rate["jax_vmapped"]
    out = []
    k1, v1 = common.fastest(rate, BATCHED_ONE_PROCESS)
    out.append(("per-network ratio gbi_jax / best PyTorch batched in one process",
                f"{jax_rate / v1:.2f}x (vs {k1})"))
    if "torch_batched_per_core" in rate:
        out.append(("whole-machine ratio gbi_jax / PyTorch batched, one process per core",
                    f"{jax_rate / rate['torch_batched_per_core']:.2f}x"))
    kb, vb = common.fastest(rate, BATCHED)
    out.append(("gbi_jax / best PyTorch batched of all", f"{jax_rate / vb:.2f}x (vs {kb})"))
    ka, va = common.fastest(rate, AUTHORS)
    out.append(("gbi_jax / PyTorch authors' style (one network)",
                f"{jax_rate / va:.1f}x (vs {ka})"))
    return out


def report_text(res: dict) -> str:
    """The markdown page: network-steps/s per variant, ratios, blocks, FLOP count."""
    rate, peaks, flops = res["rate"], res["peaks"], res["flops"]
    _, best_batched = common.fastest(rate, BATCHED)
    per_step = flops["per_network_step"]
    bf16 = peaks.bf16 is not None
    header = ["variant", "what", "network-steps/s", "vs best PyTorch batched", "GFLOP/s",
              "% of fp32 peak"] + (["% of bf16 peak"] if bf16 else [])
    order = ["jax_vmapped", "jax_single", *BATCHED, *AUTHORS]
    rows = []
    for k in order:
        if k not in rate:
            continue
        cells = common.share_cells(rate[k] * per_step, peaks)
        rows.append([k, WHAT[k], f"{rate[k]:,.0f}", f"{rate[k] / best_batched:.2f}x"]
                    + cells[:2] + (cells[2:] if bf16 else []))
    blocks = res.get("blocks", {})
    block_md = ""
    if blocks:
        fastest = max(blocks.values())
        b_rows = []
        for label, v in blocks.items():
            mark = " (configured)" if label == res["block_label"] else ""
            b_rows.append([f"{label}{mark}", res["block_sizes"].get(label, ""), f"{v:,.0f}",
                           f"{v / fastest:.2f}", f"{v / best_batched:.2f}x",
                           common.share_cells(v * per_step, peaks)[0]])
        fastest_label = max(blocks, key=blocks.get)
        block_md = (
            "\n## gbi_jax cache blocking (`member_block`)\n\n"
            "The same program with each device's networks run in sequential blocks of at most "
            "`member_block` (none: one vmap over the device's networks), timed in the same "
            "rounds:\n\n"
            + common.markdown_table(["member_block", "blocks per device", "network-steps/s",
                                     "relative to fastest", "vs best PyTorch batched",
                                     "GFLOP/s"], b_rows)
            + f"\n\nFastest here: **{fastest_label}**. The configured value is "
            f"`{res['block_config']}` ({res['block_how']}).\n")
    jax_terms = "\n".join(f"| {k} | {v:+,} |" for k, v in flops["jax_terms"].items()
                          if k != "total")
    flop_rows = "\n".join(f"| {k} | {v:,} |" for k, v in flops["parts"].items()
                          if k != "total")
    agree = lambda a, b: "equal" if abs(a - b) < 0.5 else f"differs by {a - b:+,.0f}"  # noqa
    quick = res["quick"]
    rat = ratios(res)
    counted = per_step - flops["first_layer"]
    return (
        "# Disentangling RNN training: gbi_jax vs PyTorch\n\n"
        "Written by `python -m benchmarks.disentangle_train"
        f"{' --quick' if quick else ''}` (`benchmarks/disentangle_train.py`; its docstring "
        "gives the work, the variants and the timing rules). Every variant is timed "
        "round-robin in the same rounds, so a load change hits all alike: the ratios are "
        "the result, absolute rates drift with the machine's load. Pages for all "
        "benchmarks: [README.md](README.md).\n\n"
        f"{res['members']} networks per variant ({res['padded']} after padding to the "
        f"{res['devices']} host device(s) of gbi_jax), {res['steps']} steps per timed call "
        f"for gbi_jax and {res['torch_steps']} for PyTorch, median of {res['repeats']} "
        f"rounds; timing took {res['seconds']:.0f} s, the whole run {res['elapsed']:.0f} s "
        f"(estimated {res['estimate_s']:.0f} s after warm-up).\n\n"
        "## Ratios\n\n" + "\n".join(f"- **{k}: {v}**" for k, v in rat) + "\n\n"
        "## Network-steps/s\n\n"
        + common.markdown_table(header, rows) + "\n\n"
        f"GFLOP/s: {per_step:,} matmul FLOPs per network-step times network-steps/s. "
        f"Peaks: {peaks.describe()}.\n"
        + block_md +
        "\n## FLOP count of one network-step\n\n"
        "| part | matmul FLOPs |\n|---|---|\n" + flop_rows
        + f"\n| **total** | **{per_step:,}** |\n\n"
        f"`torch.utils.flop_counter` on one step of the PyTorch peer: "
        f"{flops['torch_counted']:,.0f} ({agree(flops['torch_counted'], counted)} with the "
        f"total less the elementwise first encoder layer, {counted:,}).\n\n"
        f"The gbi_jax program's jaxpr (`common.matmul_flops`) has "
        f"{flops['jax_jaxpr']:,.0f} matmul FLOPs per network-step; the terms that differ "
        "from the count above:\n\n| term | FLOPs |\n|---|---|\n" + jax_terms
        + f"\n| **predicted jaxpr count** | **{flops['jax_terms']['total']:,}** |\n\n"
        f"(predicted vs jaxpr: {agree(flops['jax_jaxpr'], flops['jax_terms']['total'])}). "
        "Every variant's GFLOP/s uses the count above, the work the model needs.\n\n"
        "## Checks\n\n"
        f"- stacked loss: max |gradient of a network in the stack - its gradient alone| = "
        f"{res['grad_err']:.1e} (3 networks, same weights and batch)\n\n"
        "## Machine\n\n" + "\n".join(f"- {k}: {v}" for k, v in res["info"].items()) + "\n"
        f"- load average at end: {res['load_end']}\n")


# --------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------
def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    request_devices(_DEVICES.value, _PROFILE.value)
    import jax

    from benchmarks import disentangle_torch as dtorch
    from benchmarks import disentangle_train_work as work
    from gbi_jax import training

    t_start = time.perf_counter()
    quick = _QUICK.value
    steps, torch_steps = _STEPS.value, _TORCH_STEPS.value
    repeats = _REPEATS.value or (3 if quick else 5)
    members = _MEMBERS.value
    block_config = (work.fig1_member_block() if _MEMBER_BLOCK.value is None
                    else parse_block(_MEMBER_BLOCK.value))
    if _PROFILE.value:
        print(profile_text(work.profile(members, steps, block_config, _TOP.value), members,
                           steps))
        return 0
    extra_blocks = [parse_block(b) for b in (
        _MEMBER_BLOCKS.value if _MEMBER_BLOCKS.value is not None
        else ([] if quick else FULL_BLOCKS))]
    torch_compile = _TORCH_COMPILE.value if _TORCH_COMPILE.value is not None else not quick
    cores = common.usable_cores()

    info = common.machine_info({"members": str(members), "host devices (gbi_jax)":
                                str(jax.device_count())})
    print("== machine ==\n" + "\n".join(f"  {k}: {v}" for k, v in info.items()), flush=True)
    peaks = common.measure_peaks(2048, repeats=5)
    print(f"peaks: {peaks.describe()}", flush=True)

    block, how = work.resolve_member_block(members, block_config)
    print(f"configured member_block {block_label(block_config)} -> {block_label(block)}"
          f" ({how})", flush=True)
    fns, block_fns, block_sizes = {}, {}, {}
    jax_many, padded = work.jax_runner(members, steps, block)
    fns["jax_vmapped"] = jax_many
    per_dev = padded // jax.device_count()

    def canonical(b):  # blocks that give the same program (>= per-device networks: none)
        return None if b is None or b >= per_dev else b

    timed_blocks = {canonical(block): "jax_vmapped"}
    for b in extra_blocks:
        b = block if b == "auto" else b
        if canonical(b) not in timed_blocks:
            name = f"jax block={block_label(b)}"
            timed_blocks[canonical(b)] = name
            fns[name] = work.jax_runner(members, steps, b)[0]
    if extra_blocks:
        for b in [block] + [block if x == "auto" else x for x in extra_blocks]:
            block_fns[block_label(b)] = timed_blocks[canonical(b)]
            block_sizes[block_label(b)] = "/".join(
                str(y - x) for x, y in training.member_blocks(per_dev, canonical(b))) + (
                " (= none)" if b is not None and canonical(b) is None else "")
    if jax.device_count() == 1:
        fns["jax_single"] = work.jax_runner(1, steps)[0]
    fns["torch_batched_1thread"] = dtorch.batched_runner(members, torch_steps, 1)
    fns["torch_batched_allthreads"] = dtorch.batched_runner(members, torch_steps, cores)
    if torch_compile:
        try:
            fns["torch_batched_compiled_1thread"] = dtorch.batched_runner(
                members, torch_steps, 1, compile=True)
            fns["torch_batched_compiled_allthreads"] = dtorch.batched_runner(
                members, torch_steps, cores, compile=True)
        except Exception as e:  # noqa: BLE001 - no compiler here: report and go on
            print(f"torch.compile unavailable: {e!r}", flush=True)
    fns["torch_1thread"] = work.torch_runner(torch_steps, 1)
    fns["torch_allthreads"] = work.torch_runner(torch_steps, cores)
    pool = (common.ProcessPool({"batched": (dtorch.batched_builder,
                                            (members, torch_steps))}) if _PER_CORE.value
            else None)
    try:
        if pool is not None:
            fns["torch_batched_per_core"] = pool.fn("batched")
        # warm-up (compile) and one timed call each: the estimate of the timed rounds
        first = {}
        for k, fn in list(fns.items()):
            try:
                common.median_time(fn, repeats=1, warmup=1)
            except Exception as e:  # noqa: BLE001 - torch.compile can fail at first call
                if "compiled" not in k:
                    raise
                print(f"{k}: torch.compile failed ({e!r}); dropped", flush=True)
                del fns[k]
                continue
            first[k] = common.median_time(fn, repeats=1, warmup=0)
        estimate_s = repeats * sum(first.values())
        print(f"{len(fns)} variants compiled and warmed up in "
              f"{time.perf_counter() - t_start:.0f} s; estimated timing: {estimate_s:.0f} s "
              f"({repeats} rounds)", flush=True)
        t0 = time.perf_counter()
        med = common.interleaved_medians(fns, repeats=repeats, warmup=0)
        seconds = time.perf_counter() - t0
    finally:
        if pool is not None:
            pool.close()
    rate = {}
    for k, t in med.items():
        if k.startswith("jax"):
            rate[k] = (1 if k == "jax_single" else members) * steps / t
        else:
            rate[k] = (members if k.startswith("torch_batched") else 1) * torch_steps / t
    blocks = {label: rate[name] for label, name in block_fns.items()}
    flops = {"per_network_step": dtorch.FLOPS_PER_NETWORK_STEP,
             "parts": dtorch.network_step_flops(),
             "first_layer": dtorch.FIRST_ENCODER_LAYER_FLOPS,
             "torch_counted": dtorch.torch_counted_flops(1),
             "jax_jaxpr": jax_many.matmul_flops() / (padded * steps),
             "jax_terms": dtorch.jax_program_flops_explained()}
    res = {"rate": {k: v for k, v in rate.items() if not k.startswith("jax block=")},
           "blocks": blocks, "block_sizes": block_sizes, "block_label": block_label(block),
           "block_config": block_label(block_config), "block_how": how, "peaks": peaks,
           "flops": flops, "quick": quick, "members": members, "padded": padded,
           "devices": jax.device_count(), "steps": steps, "torch_steps": torch_steps,
           "repeats": repeats, "seconds": seconds, "estimate_s": estimate_s,
           "grad_err": dtorch.check_loss_matches_per_network(),
           "info": info, "load_end": ", ".join(f"{x:.2f}" for x in os.getloadavg())}
    res["elapsed"] = time.perf_counter() - t_start
    text = report_text(res)
    print(text)
    if _OUT.value and (not quick or flags.FLAGS["out"].present):  # --quick: only if given
        common.write_page(_OUT.value, text)
        print(f"wrote {_OUT.value}")
    return 0


if __name__ == "__main__":
    app.run(main)
