r"""Latent-inference throughput: gbi_jax vs PyTorch, same model and work, one process.

Run from the repository root (PyTorch from ``pip install -e '.[bench]'``; ``make bench``)::

    python -m benchmarks.inference            # a few minutes, writes benchmarks/RESULTS.md
    python -m benchmarks.inference --quick    # ~1 minute smoke run, prints only

The timed work is ``benchmarks/inference_work.py``, the tables and the results page
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

(a)  gbi_jax ``jax.jit(optimize_batch(...))`` = ``jit(vmap(optimize))`` with
     ``optax.sgd(lr, momentum=0.5)``.
(a') optional diagnostic (``--diag``): gbi_jax ``optimize`` on the whole ``[N, K]``
     latent with the loss summed over examples (mathematically the same updates).
(a*) the same work as (a) scheduled by the benchmark as ``lax.map`` over chunks of
     ``--chunk`` (250) latents, each chunk running all S steps of ``jit(vmap(optimize))``
     (cache blocking; a JAX-side optimisation, reported separately from (a)).
(b)  PyTorch, per example in the style of the authors' code: one latent at a time,
     a ``[K]`` tensor with ``requires_grad``, ``torch.optim.SGD(momentum=0.5)``,
     S steps of zero_grad/forward/backward/step. Its rate does not depend on N, so a
     subset of ``--per_example_subset`` latents is timed and the per-latent rate is
     extrapolated to every N.
(c)  PyTorch batched: all N latents as one ``[N, K]`` leaf with ``requires_grad``,
     the same SGD, loss summed over examples (per-example gradients independent).
(c') PyTorch ``torch.func.vmap(torch.func.grad(per_example_loss))`` with the same
     momentum-SGD arithmetic written out in place.

One-step inference (one forward+backward at the uniform latent, argmax of -grad):
gbi_jax ``jit(one_step_batch)`` vs PyTorch batched autograd.

FLOP count (matmul FLOPs only, stated exactly)
-----------------------------------------------
Layers (fan_in, fan_out): (10, 256), (256, 256), (256, 784); sum fan_in*fan_out =
268,800. Per latent per step: forward 2 * 268,800 = 537,600 FLOPs. Backward needs
only input gradients (weights frozen): dh2 = dy W3^T (2*784*256), dh1 = dh2 W2^T
(2*256*256), dz = dh1 W1^T (2*256*10) = 537,600 FLOPs, i.e. exactly 1x forward.
Total 1,075,200 FLOPs per latent per step (one-step inference: one such step).
Not counted: bias adds, ReLU and its mask, the squared error, the optimizer update
(about 5k elementwise ops per latent per step, < 0.5 %).

"Matmul peak" is measured in the same run: the median FLOP/s of a float32
``--peak_n`` (2048) square product, with jitted ``jnp.dot`` and with ``torch.mm``;
the machine's peak is the larger of the two.

Timing: for each N, every variant (and the two peak matmuls) is first run once to
warm up (compile / allocate) and then timed round-robin, ``--repeats`` rounds, each
number being the median; so a change of load on a shared machine hits all
variants alike and the ratios stay meaningful. JAX results are
``block_until_ready``-ed (PyTorch CPU ops are synchronous). Both libraries use the
same cores: XLA's CPU client uses all the process's cores for its intra-op thread
pool, and PyTorch runs with ``torch.set_num_threads(--torch_threads)`` (default: the
process's core count). Because OpenMP barriers stall badly when other processes
share the cores (the per-example loop (b) is overhead-bound and gains nothing from
threads anyway), every PyTorch variant is also probed with 1 thread (3 steps, 3 rounds,
round-robin) and timed with the faster setting (probe times are printed; turn this
off with ``--torch_fixed_threads``). (b) is probed on 2
latents. For N >= 5000 the number of rounds is ``max(3, --repeats - 2)``.
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
_DIAG = flags.DEFINE_bool(
    "diag", False, "Also time diagnostic variant (a'): optimize on [N,K] with a summed loss.")
_CHUNK = flags.DEFINE_integer(
    "chunk", 250, "Latents per chunk of variant (a*) (lax.map over chunks of "
    "jit(vmap(optimize))), timed when N is a larger multiple; 0 = off.")
_TORCH_FIXED = flags.DEFINE_bool(
    "torch_fixed_threads", False, "Time PyTorch only with --torch_threads threads (default: "
    "also with 1 thread, reporting the faster).")
_NO_GEMM = flags.DEFINE_bool(
    "no_gemm_table", False, "Skip the per-GEMM JAX vs PyTorch table at the largest N.")
_SHOW_DOTS = flags.DEFINE_bool(
    "show_dots", False, "Print the dot ops of the compiled (a) program at the largest N.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and targets.")
_QUICK, _OUT = common.define_run_flags(
    "Short run: sizes 100,1000, 3 repeats, 5 per-example latents, 1024 peak matmul.", None,
    "Markdown results file; default benchmarks/RESULTS.md for a full run, none for --quick; "
    "'' disables.")

def settings_from_flags():
    """The `inference_work.Settings` and output path of the flags (``--quick`` applied)."""
    from benchmarks.inference_work import Settings

    sizes, repeats = _SIZES.value, _REPEATS.value
    per_example, peak_n = _PER_EXAMPLE.value, _PEAK_N.value
    if _QUICK.value:
        sizes = "100,1000"
        repeats = min(repeats, 3)
        per_example = min(per_example, 5)
        peak_n = min(peak_n, 1024)
    out = _OUT.value
    if out is None:
        out = "" if _QUICK.value else os.path.join(REPO_ROOT, "benchmarks", "RESULTS.md")
    s = Settings(sizes=tuple(int(x) for x in sizes.split(",") if x.strip()), steps=_STEPS.value,
                 lr=_LR.value, noise=_NOISE.value, repeats=repeats,
                 per_example_subset=per_example, torch_threads=_TORCH_THREADS.value,
                 peak_n=peak_n, check=_CHECK.value, torch_func=not _NO_TORCH_FUNC.value,
                 diag=_DIAG.value, chunk=_CHUNK.value, torch_fixed_threads=_TORCH_FIXED.value,
                 seed=_SEED.value)
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
    info = common.machine_info({"torch threads": str(threads)})
    print("\n".join(report.machine_lines(info)))

    st = work.setup(s)
    chk = work.check(st, s)
    print("\n".join(report.check_lines(chk, s)))

    jax_mm, mm_flops = common.jax_matmul_fn(s.peak_n)
    torch_mm, _ = common.torch_matmul_fn(s.peak_n)
    results = []
    for n in s.sizes:
        results.append(work.measure_size(st, s, n, (jax_mm, torch_mm, mm_flops)))
        print(report.size_line(results[-1]), flush=True)

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
    print(report.console_text(results, s, elapsed, load_end))
    if out:
        report.write_page(out, report.markdown(results=results, s=s, chk=chk, gemm=gemm,
                                               info=info, command=command, elapsed=elapsed,
                                               load_end=load_end))
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    app.run(main)
