r"""Training throughput of the disentangling RNN: gbi_jax (vmapped seeds) vs a PyTorch peer.

Run from the repository root (PyTorch from ``pip install -e '.[bench]'``; ``make bench``)::

    python -m benchmarks.disentangle_train    # ~5 minutes, writes docs/disentangle/BENCHMARK.md
    python -m benchmarks.disentangle_train --quick   # ~1 minute, prints only
    python -m benchmarks.disentangle_train --profile --steps=100   # per-op time of a step

The work (one training step of one network of Vafidis et al. 2025)
-------------------------------------------------------------------
A batch of 16 trials of the D = 2 task is generated (latent ``U[-1/2, 1/2]^2``, 20
noisy samples with sigma = 0.2, a fixation and a decision step: 22 steps), passed
through the network's frozen random encoder ``2 -> 100 -> 100 -> 40`` (ReLU), then
through the ReLU RNN (41 -> 64, alpha = 1) step by step and a 24-output readout;
BCE with 0.5 targets before the decision step; one Adam (lr 1e-3) update.

(a) gbi_jax: the exact program of ``experiments/disentangle`` Fig. 1
    (``benchmarks.disentangle_train_work.jax_runner``), ``--members`` networks vmapped
    and, with ``--devices=2`` (default: usable cores), the member axis split over
    two host devices (one per core) as ``training.fit`` does, each device running
    its networks in cache blocks of at most ``runtime.member_block`` (5) networks.
    The row ``jax_vmapped_unblocked`` is the same program as one vmap over all the
    device's networks, timed in the same rounds (the blocking's own speed-up).
(b) PyTorch in the authors' style: one network (``torch_runner``). Timed with 1 thread
    and with all cores; the faster is the reference.

Reported: network-steps/s of each and the ratio (a)/(b). Timing is interleaved
round-robin (``benchmarks.common.interleaved_medians``) so load changes on the
shared machine hit both alike; the ratio, not the absolute rate, is the result.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from absl import app, flags

from benchmarks import common
from experiments.host_devices import request_host_devices

_QUICK, _OUT = common.define_run_flags(
    "Short run, print only.", "docs/disentangle/BENCHMARK.md",
    "Markdown results file (full runs only; '' disables).")
_MEMBERS = flags.DEFINE_integer("members", 26, "Networks vmapped (gbi_jax).")
_DEVICES = flags.DEFINE_integer("devices", None, "Host devices for JAX (default: usable cores).")
_STEPS = flags.DEFINE_integer("steps", None, "Training steps per timed call (default: 400; "
                              "100 with --quick).")
_REPEATS = flags.DEFINE_integer("repeats", None, "Timed rounds (default: 5; 2 with --quick).")
_TOP = flags.DEFINE_integer("top", 30, "Ops listed by --profile.")
_MEMBER_BLOCK = flags.DEFINE_integer(
    "member_block", None, "Networks per cache block and device (default: the Fig. 1 config's "
    "runtime.member_block); 0 = no blocking.")
_PROFILE = flags.DEFINE_bool(
    "profile", False, "Print where one gbi_jax training step spends its time (per XLA op) "
    "instead of timing against PyTorch.")


def request_devices(devices: int | None, profile: bool) -> None:
    """Sets ``XLA_FLAGS`` for the host devices (and op tracing); call before JAX starts."""
    request_host_devices(devices or "auto", envs=())
    if profile:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_enable_xprof_traceme=true").strip()


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


def report_text(rate: dict, *, quick: bool, members: int, padded: int, devices: int,
                block, steps: int, repeats: int, seconds: float, info: dict) -> str:
    """The markdown page: network-steps/s per variant and the ratio to PyTorch."""
    torch_best = max(rate["torch_1thread"], rate["torch_allthreads"])
    rows = [[k, f"{v:,.0f}", f"{v / torch_best:.1f}x"] for k, v in rate.items()]
    table = common.markdown_table(["variant", "network-steps/s", "vs best PyTorch"], rows)
    return (f"# Disentangling RNN training throughput (gbi_jax vs PyTorch)\n\n"
            f"`python -m benchmarks.disentangle_train{' --quick' if quick else ''}`; "
            f"{members} networks vmapped ({padded} after padding to the "
            f"{devices} host device(s); `jax_vmapped` runs each device's networks "
            f"in cache blocks of at most {block or padded} as `training.fit` does for Fig. 1, "
            f"`jax_vmapped_unblocked` as one vmap), {steps} steps per timed call, "
            f"median of {repeats} interleaved rounds (timing took {seconds:.0f}s).\n\n"
            f"{table}\n\n**Per-network ratio gbi_jax (vmapped) / PyTorch: "
            f"{rate['jax_vmapped'] / torch_best:.1f}x**\n\n"
            "Machine:\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n")


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    request_devices(_DEVICES.value, _PROFILE.value)
    import jax

    from benchmarks import disentangle_train_work as work

    quick = _QUICK.value
    steps = _STEPS.value or (100 if quick else 400)
    torch_steps = max(20, steps // 4)
    repeats = _REPEATS.value or (2 if quick else 5)
    members = _MEMBERS.value
    block = (work.fig1_member_block() if _MEMBER_BLOCK.value is None
             else _MEMBER_BLOCK.value or None)
    if _PROFILE.value:
        print(profile_text(work.profile(members, steps, block, _TOP.value), members, steps))
        return 0

    info = common.machine_info({"members (gbi_jax)": str(members)})
    jax_one, _ = work.jax_runner(1, steps) if jax.device_count() == 1 else (None, 1)
    jax_many, padded = work.jax_runner(members, steps, block)
    cores = len(os.sched_getaffinity(0))
    fns = {"jax_vmapped": jax_many, "torch_1thread": work.torch_runner(torch_steps, 1),
           "torch_allthreads": work.torch_runner(torch_steps, cores)}
    if block is not None:  # the same program without cache blocking, side by side
        fns["jax_vmapped_unblocked"] = work.jax_runner(members, steps, None)[0]
    if jax_one is not None:
        fns["jax_single"] = jax_one
    t0 = time.time()
    med = common.interleaved_medians(fns, repeats=repeats, warmup=1)
    rate = {
        "jax_vmapped": members * steps / med["jax_vmapped"],
        **({"jax_vmapped_unblocked": members * steps / med["jax_vmapped_unblocked"]}
           if "jax_vmapped_unblocked" in med else {}),
        "torch_1thread": torch_steps / med["torch_1thread"],
        "torch_allthreads": torch_steps / med["torch_allthreads"],
    }
    if "jax_single" in med:
        rate["jax_single"] = steps / med["jax_single"]
    text = report_text(rate, quick=quick, members=members, padded=padded,
                       devices=jax.device_count(), block=block, steps=steps, repeats=repeats,
                       seconds=time.time() - t0, info=info)
    print(text)
    if not quick and _OUT.value:
        os.makedirs(os.path.dirname(_OUT.value) or ".", exist_ok=True)
        with open(_OUT.value, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    app.run(main)
