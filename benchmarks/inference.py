r"""Latent-inference throughput: gbi_jax vs the PyTorch peers a user would pick.

Run from the repository root (PyTorch from ``pip install -e '.[bench]'``; ``make bench``)::

    python -m benchmarks.inference          # 3-5 min on 2 cores; docs/benchmarks/inference.md
    python -m benchmarks.inference --quick  # under 1 min, prints only

The run first prints its estimated wall time (from a calibration of a few steps of every
variant). The timed work is ``benchmarks/inference_work.py`` (PyTorch side:
``benchmarks/inference_torch.py``), the tables and the results page
``benchmarks/inference_report.py``.

The work
--------
A class-conditioned image decoder ``gbi_jax.models.MLP(hidden=(256, 256),
out_features=784, z_injection="concat")`` maps a latent ``z`` (K=10, fed directly
as probabilities, ``latent_activation="identity"``) concatenated with an *empty*
input feature vector (shape ``[..., 0]``, so the first layer is 10 -> 256) to a
784-d image. Every example ``i`` has its own target ``x_i`` (the decoder's output
at a random one-hot class plus Gaussian noise) and its own latent, started at the
max-entropy point ``1/K``. Loss per example: ``sum((decoder(z_i) - x_i) ** 2)``.
The weights are frozen (JAX: closed over, differentiated w.r.t. ``z`` only;
PyTorch: ``requires_grad_(False)``), so no weight gradients are computed by anyone.

Iterative inference: S steps (default 50) of SGD with momentum 0.5 on the latent.

(a)  gbi_jax ``jax.jit(optimize_batch(...))`` with ``optax.sgd(lr, momentum=0.5)`` and
     the library's defaults: ``vmap(optimize)`` over the latents, on CPU in chunks of
     the size ``chunk_size="auto"`` picks for this machine and N (a probe at the first
     trace, cached per machine: ``gbi_jax.inference.auto_chunk_size``;
     ``benchmarks/chunk_size.py`` compares it with every fixed size), one ``vmap`` over
     all N on accelerators and for N < 256.
(a') optional diagnostic (``--diag``): gbi_jax ``optimize`` on the whole ``[N, K]``
     latent with the loss summed over examples (mathematically the same updates).
(a*) the same work as (a) with ``chunk_size=--chunk`` (250) instead of the default:
     a loop over chunks of latents, each chunk running all S steps (cache blocking),
     timed where N is a larger multiple of the chunk.
(a-bf16) (a) with ``matmul_dtype="bfloat16"`` (``inference_work.build_bf16_fn``):
     bfloat16 operands, float32 accumulation for the frozen decoder's products. Timed
     with ``--bf16`` (default: where the CPU has bfloat16 instructions); its argmax
     agreement with (a) and max final-latent error are reported.
(b)  PyTorch, per example in the style of the authors' code: one latent at a time,
     a ``[K]`` tensor with ``requires_grad``, ``torch.optim.SGD(momentum=0.5)``,
     S steps of zero_grad/forward/backward/step. Its rate does not depend on N, so a
     subset of ``--per_example_subset`` latents is timed and the per-latent rate is
     extrapolated to every N.
(c)  PyTorch batched: all N latents as one ``[N, K]`` leaf with ``requires_grad``,
     the same SGD, loss summed over examples (per-example gradients independent).
(c') PyTorch ``torch.func.vmap(torch.func.grad(per_example_loss))`` with the same
     momentum-SGD arithmetic written out in place.
(c-pc) (c) in one process per core (``--procs``, default the usable cores), one
     PyTorch thread each, each on a contiguous ``1/P`` of the N latents
     (``benchmarks.common.ProcessPool``: spawned once per N, started together at a
     barrier, timed from it to the last process done). Its final latents are compared
     with (a) on all N.

"Best torch" is the fastest of (c), (c') and (c-pc); the headline ratio is
(a)/best torch.

One-step inference (every example's gradient at the shared uniform latent, argmax of
-grad): gbi_jax ``jit(one_step_batch)`` with its defaults (``chunk_size="auto"`` as (a),
``grad_mode="auto"``, which picks forward mode for this latent-only decoder: the decoder
and its K tangents run once per chunk, each example adds only the elementwise tangents of
its squared error), the same with ``grad_mode="reverse"`` (the forward pass once, one
backward pass per example), and with bf16 matmuls; against PyTorch batched autograd on an
``[N, K]`` latent (forward and backward per example), ``torch.func.vmap(grad(...),
in_dims=(None, None, 0))`` from one shared latent (forward once, like gbi_jax's reverse
mode) and ``torch.func.vmap(jacfwd(...))`` likewise (forward mode, like gbi_jax's
default), in one process, and the first two also in one process per core; ratio
jax/best torch. Each variant's matmul FLOPs per call are counted (gbi_jax: on its jaxpr;
PyTorch: ``inference_work.one_step_torch_flops``), so its achieved rate is its own work.

FLOP count (matmul FLOPs only, stated exactly)
-----------------------------------------------
Layers (fan_in, fan_out): (10, 256), (256, 256), (256, 784); sum fan_in*fan_out =
268,800. Per latent per step: forward 2 * 268,800 = 537,600 FLOPs. Backward needs
only input gradients (weights frozen): dh2 = dy W3^T (2*784*256), dh1 = dh2 W2^T
(2*256*256), dz = dh1 W1^T (2*256*10) = 537,600 FLOPs, i.e. exactly 1x forward.
Total 1,075,200 FLOPs per latent per step (one-step batched autograd: one such step).
Not counted: bias adds, ReLU and its mask, the squared error, the optimizer update
(about 5k elementwise ops per latent per step, < 0.5 %). Every variant's achieved
GFLOP/s is this count over its time, also as a share of the peaks.

Peaks (``benchmarks.common.Peaks``), timed in the same rounds as each N: float32
``--peak_n`` (2048) square products with jitted ``jnp.dot``, with ``torch.mm`` and with
one 1-thread ``torch.mm`` per core in the per-core processes (summed); the fp32 peak is
the fastest. Where (a-bf16) is timed, also ``jnp.dot`` of bfloat16 operands with
float32 accumulation and ``torch.mm`` of bfloat16 tensors; the bf16 peak is the faster.
On a CPU without bfloat16 instructions (``--bf16`` there) that "peak" is below the fp32
one: the products are converted and multiplied in float32.

Timing: for each N, every variant (and the peak matmuls) is first run once to
warm up (compile / allocate) and then timed round-robin, ``--repeats`` rounds, each
number being the median; so a change of load on a shared machine hits all
variants alike and the ratios stay meaningful. JAX results are
``block_until_ready``-ed (PyTorch CPU ops are synchronous). Both libraries use the
same cores: XLA's CPU client uses all the process's cores for its intra-op thread
pool, and in-process PyTorch runs with ``torch.set_num_threads(--torch_threads)``
(default: the process's core count). Because OpenMP barriers stall badly when other
processes share the cores (the per-example loop (b) is overhead-bound and gains nothing
from threads anyway), every in-process PyTorch variant is also probed with 1 thread (3
steps, 3 rounds, round-robin) and timed with the faster setting (probe times are
printed; turn this off with ``--torch_fixed_threads``). (b) is probed on 2 latents. For
N >= 5000 the number of rounds is ``max(3, --repeats - 2)``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Sequence

from absl import app, flags

from benchmarks import common

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SIZES = flags.DEFINE_string("sizes", "100,1000,10000", "Comma-separated numbers of latents N.")
_STEPS = flags.DEFINE_integer("steps", 50, "Optimisation steps S.")
_LR = flags.DEFINE_float("lr", 0.01, "SGD learning rate.")
_NOISE = flags.DEFINE_float("noise", 0.05, "Target noise std.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repeats (median).")
_PER_EXAMPLE = flags.DEFINE_integer(
    "per_example_subset", 20, "Latents timed for the per-example PyTorch loop (b), per N.")
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "torch.set_num_threads; 0 = the process's core count.")
_PEAK_N = flags.DEFINE_integer("peak_n", 2048, "Matmul size for the peak.")
_CHECK = flags.DEFINE_integer(
    "check", 5, "Examples whose final latents are compared across (a), (b), (c).")
_NO_TORCH_FUNC = flags.DEFINE_bool("no_torch_func", False, "Skip variant (c').")
_BF16 = flags.DEFINE_bool(
    "bf16", None, "Time (a-bf16), gbi_jax with bfloat16 matmuls (default: where the CPU has "
    "bfloat16 instructions).")
_PER_CORE = flags.DEFINE_bool(
    "per_core", True, "Time (c-pc) and one-step PyTorch in one process per core.")
_PROCS = flags.DEFINE_integer("procs", 0, "Processes of the per-core variants; 0 = usable "
                              "cores.")
_ESTIMATE = flags.DEFINE_bool(
    "estimate", True, "Print the estimated wall time first (a calibration of about 15 s).")
_ESTIMATE_ONLY = flags.DEFINE_bool(
    "estimate_only", False, "Print the estimated wall time of the run and stop.")
_DIAG = flags.DEFINE_bool(
    "diag", False, "Also time diagnostic variant (a'): optimize on [N,K] with a summed loss.")
_CHUNK = flags.DEFINE_integer(
    "chunk", 250, "Latents per chunk of variant (a*) (lax.map over chunks of "
    "the default chunks), timed when N is a larger multiple; 0 = off.")
_TORCH_FIXED = flags.DEFINE_bool(
    "torch_fixed_threads", False, "Time PyTorch only with --torch_threads threads (default: "
    "also with 1 thread, reporting the faster).")
_NO_GEMM = flags.DEFINE_bool(
    "no_gemm_table", False, "Skip the per-GEMM JAX vs PyTorch table at the largest N.")
_SHOW_DOTS = flags.DEFINE_bool(
    "show_dots", False, "Print the dot ops of the compiled (a) program at the largest N.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and targets.")
_QUICK, _OUT = common.define_run_flags(
    "Short run: sizes 100,1000, 3 repeats, 5 per-example latents (unless given); prints "
    "only.", None,
    "Markdown results file; default docs/benchmarks/inference.md for a full run, none for "
    "--quick; '' disables.")
DEFAULT_OUT = os.path.join("docs", "benchmarks", "inference.md")

def settings_from_flags():
    """The `inference_work.Settings` and output path of the flags (``--quick`` applied)."""
    from benchmarks.inference_work import Settings

    sizes, repeats = _SIZES.value, _REPEATS.value
    per_example, peak_n = _PER_EXAMPLE.value, _PEAK_N.value
    if _QUICK.value:  # flags given on the command line win
        given = lambda name: flags.FLAGS[name].present  # noqa: E731
        sizes = sizes if given("sizes") else "100,1000"
        repeats = repeats if given("repeats") else min(repeats, 3)
        per_example = per_example if given("per_example_subset") else min(per_example, 5)
    out = _OUT.value
    if out is None:
        out = "" if _QUICK.value else os.path.join(REPO_ROOT, DEFAULT_OUT)
    bf16 = _BF16.value
    if bf16 is None:
        bf16 = common.has_bf16()
    s = Settings(sizes=tuple(int(x) for x in sizes.split(",") if x.strip()), steps=_STEPS.value,
                 lr=_LR.value, noise=_NOISE.value, repeats=repeats,
                 per_example_subset=per_example, torch_threads=_TORCH_THREADS.value,
                 peak_n=peak_n, check=_CHECK.value, torch_func=not _NO_TORCH_FUNC.value,
                 diag=_DIAG.value, chunk=_CHUNK.value, torch_fixed_threads=_TORCH_FIXED.value,
                 seed=_SEED.value, bf16=bf16, per_core=_PER_CORE.value, procs=_PROCS.value)
    return s, out


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from benchmarks import common
    from benchmarks import inference_report as report
    from benchmarks import inference_work as work

    s, out = settings_from_flags()
    t_start = time.perf_counter()
    threads = work.init_torch(s)
    command = "python -m benchmarks.inference " + " ".join(sys.argv[1:])
    info = common.machine_info({"torch threads (in-process variants)": str(threads),
                                "processes of the per-core variants": str(s.nprocs)
                                if s.per_core else "off"})
    print("\n".join(report.machine_lines(info)))

    st = work.setup(s)
    est = None
    if _ESTIMATE.value or _ESTIMATE_ONLY.value:
        est = work.estimate(st, s, gemm=not _NO_GEMM.value)
        print("\n" + report.estimate_line(est), flush=True)
        if _ESTIMATE_ONLY.value:
            return 0
    chk = work.check(st, s)
    print("\n".join(report.check_lines(chk, s)))

    results = []
    for n in s.sizes:
        t_n = time.perf_counter()
        results.append(work.measure_size(st, s, n))
        took = time.perf_counter() - t_n
        print(report.size_line(results[-1], s)
              + f"\n    took {took:.0f} s"
              + (f" (estimated {est['per_n'][n]:.0f} s)" if est else ""), flush=True)

    gemm = []
    if not _NO_GEMM.value:
        gemm = work.gemm_timings(st.params, st.nmax, s.thread_opts, s.threads,
                                 max(s.repeats, 5))
        print(f"\n== the six GEMMs of one step at N = {st.nmax:,}, GFLOP/s (median) ==")
        print(common.plain_table(report.gemm_header(s.thread_opts),
                                 report.gemm_rows(gemm, s.thread_opts)))
    if _SHOW_DOTS.value:
        print("\n== dot ops in the compiled (a) program ==")
        for line in work.dot_ops(st, s, st.nmax):
            print("  " + line)

    elapsed = time.perf_counter() - t_start
    load_end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(report.console_text(results, s, elapsed, load_end, est))
    if out:
        common.write_page(out, report.markdown(results=results, s=s, chk=chk, gemm=gemm,
                                               info=info, command=command, elapsed=elapsed,
                                               load_end=load_end))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    app.run(main)
