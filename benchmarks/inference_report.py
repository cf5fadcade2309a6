"""The report of ``benchmarks.inference``: console tables and ``docs/benchmarks/inference.md``.

Formats the numbers of ``benchmarks.inference_work`` (rates in latents/s, FLOP/s, times
in seconds); nothing here times anything. `markdown` is the results page
(`common.write_page` writes it, keeping an existing page's hand-written notes).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from benchmarks import common
from benchmarks.inference_work import (BWD_FLOPS, FLOPS_PER_LATENT_STEP, FWD_FLOPS, HIDDEN, K,
                                       MOMENTUM, OUT, TOLERANCE, Settings)


# The iterative variants: key, short label, long label.
ITERATIVE = [
    ("a", "(a)", "(a) gbi_jax jit(optimize_batch)"),
    ("b", "(b)", "(b) torch per-example*"),
    ("c", "(c)", "(c) torch batched"),
    ("c2", "(c')", "(c') torch.func.vmap"),
    ("c_mp", "(c-pc)", "(c-pc) torch batched, 1 process per core"),
    ("a2", "(a')", "(a') jax summed [N,K]"),
    ("a3", "(a*)", "(a*) jax chunked"),
    ("a_bf16", "(a-bf16)", "(a-bf16) gbi_jax bf16 matmuls"),
]
TORCH_BATCHED = ("c", "c2", "c_mp")      # candidates of "best torch" (iterative)
# The one-step variants: key, label. "best torch" (one-step) is the fastest PyTorch one.
ONE_STEP = [
    ("os_a", "gbi_jax one_step_batch (grad_mode auto)"),
    ("os_a_rev", "gbi_jax grad_mode reverse"),
    ("os_bf16", "gbi_jax bf16 matmuls"),
    ("os_c", "torch batched autograd"),
    ("os_c_mp", "torch batched autograd, 1 process per core"),
    ("os_c2", "torch.func vmap(grad), shared latent"),
    ("os_c2_mp", "torch.func vmap(grad), shared latent, 1 process per core"),
    ("os_c3", "torch.func vmap(jacfwd), shared latent"),
]
TORCH_ONE_STEP = ("os_c", "os_c_mp", "os_c2", "os_c2_mp", "os_c3")
LABEL = {k: short for k, short, _ in ITERATIVE}
LABEL.update(os_a="jax", os_a_rev="jax reverse", os_bf16="jax bf16", os_c="torch autograd",
             os_c_mp="torch autograd per core", os_c2="torch.func grad",
             os_c2_mp="torch.func grad per core", os_c3="torch.func jacfwd")


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 100 else f"{r:,.1f}"


def with_thr(r: dict, v: str) -> str:
    if v not in r:
        return "-"
    if f"{v}_thr" in r:
        return f"{fmt_rate(r[v])} ({r[v + '_thr']}t)"
    if v.endswith("_mp"):
        return f"{fmt_rate(r[v])} ({r.get('procs', '?')}x1t)"
    return fmt_rate(r[v])


def peaks_of(r: dict) -> common.Peaks:
    """The run's `common.Peaks` at this N (built from the fp32 numbers if only those)."""
    if "peaks" in r:
        return r["peaks"]
    return common.Peaks(n=0, fp32_jax=r["peak_jax"], fp32_torch=r["peak_torch"])


def machine_lines(info: dict[str, str]) -> list[str]:
    return ["== machine =="] + [f"  {k}: {v}" for k, v in info.items()]


def check_lines(chk: dict[str, Any], s: Settings) -> list[str]:
    """The correctness section printed before the timing."""
    return [
        "\n== correctness (float32) ==",
        f"  decoder output max |jax - torch| over 16 random latents: {chk['dec_err']:.2e}"
        f" (output scale {chk['out_scale']:.2f})",
        f"  final latents after {s.steps} steps, {chk['m']} examples: "
        + ", ".join(f"max{k} = {v:.2e}" for k, v in chk["errs"].items())
        + f" (latent scale {chk['latent_scale']:.2f})",
        f"  argmax(final z) == true class for {chk['accuracy']:.0%}"
        f" of the {chk['m']} checked examples",
        f"  all within {TOLERANCE:g}: {chk['correct']}",
    ]


def estimate_line(est: dict[str, Any]) -> str:
    per = ", ".join(f"N={n:,}: {v / 60:.1f}" for n, v in est["per_n"].items())
    return (f"estimated wall time of this run: {est['total_s'] / 60:.1f} min ({per} min; "
            f"calibrated in {est['calibration_s']:.0f} s on {est['n_cal']:,} latents; "
            "scales with the machine's load)")


def iter_flops(r: dict, v: str, s: Settings) -> float:
    return r[v] * s.steps * FLOPS_PER_LATENT_STEP


def size_line(r: dict[str, Any], s: Settings) -> str:
    """One line per N, printed as soon as that N is timed."""
    peaks = peaks_of(r)
    bk, bv = common.fastest(r, TORCH_BATCHED)
    ok, ov = common.fastest(r, TORCH_ONE_STEP)
    parts = [f"N={r['n']:>6}:"]
    for k, short, _ in ITERATIVE:
        if k in r:
            parts.append(f"{short} {with_thr(r, k)}")
    line = "  ".join(parts)
    line += (f"\n    (a) {common.share(iter_flops(r, 'a', s), peaks)};"
             f" best torch {LABEL[bk]} {common.share(iter_flops(r, bk, s), peaks)}")
    line += f"\n    (a)/best torch {r['a'] / bv:.2f}x  (a)/(b) {r['a'] / r['b']:.1f}x"
    if "a3" in r:
        line += f"  (a*)/best torch {r['a3'] / bv:.2f}x"
    if "a_bf16" in r:
        line += (f"  (a-bf16)/best torch {r['a_bf16'] / bv:.2f}x (argmax agrees with (a) "
                 f"{r['bf16_agree']:.1%}, max|z - z_a| {r['bf16_err']:.1e})")
    line += ("\n    one-step: " + "  ".join(f"{LABEL[k]} {with_thr(r, k)}"
                                            for k, _ in ONE_STEP if k in r)
             + f" | jax/best torch ({LABEL[ok]}) {r['os_a'] / ov:.2f}x, jax reverse/best "
             f"torch {r['os_a_rev'] / ov:.2f}x (predictions agree {r['os_agree']:.1%}, "
             f"accuracy {r['os_acc']:.1%})")
    line += f"\n    peaks: {peaks.describe()}"
    return line


def gemm_header(thread_opts: Sequence[int]) -> list[str]:
    return (["GEMM [M,k]x[k,n]", "jitted jnp.dot"] +
            [f"torch.mm ({thr}t)" for thr in thread_opts] + ["jax / best torch"])


def gemm_rows(timings: Sequence[dict], thread_opts: Sequence[int]) -> list[list[str]]:
    """GFLOP/s of each matmul (`inference_work.gemm_timings`) and the JAX / PyTorch ratio."""
    rows = []
    for g in timings:
        t, fl = g["t"], g["flops"]
        best_t = min(t[f"t{thr}"] for thr in thread_opts)
        rows.append([f"{g['direction']} [{g['n']},{g['k_in']}]x[{g['k_in']},{g['k_out']}]",
                     f"{fl / t['jax'] / 1e9:.0f}"]
                    + [f"{fl / t[f't{thr}'] / 1e9:.0f}" for thr in thread_opts]
                    + [f"{best_t / t['jax']:.2f}x"])
    return rows


def _present(results: Sequence[dict], k: str) -> bool:
    return any(k in r for r in results)


def iterative_table(results: Sequence[dict], s: Settings) -> tuple[list[str], list[list[str]]]:
    """Latents/s of every variant, the best PyTorch and the ratios to it."""
    cols = [(k, long) for k, _, long in ITERATIVE
            if k in ("a", "b", "c") or (k == "c2" and s.torch_func) or (k == "a2" and s.diag)
            or (k == "a3" and s.chunk) or _present(results, k)]
    header = ["N"] + [f"{long} {s.chunk}" if k == "a3" else long for k, long in cols] + \
        ["best torch", "(a)/best torch", "(a)/(b)"] + \
        (["(a*)/best torch"] if s.chunk else []) + \
        (["(a-bf16)/best torch"] if _present(results, "a_bf16") else [])
    rows = []
    for r in results:
        bk, bv = common.fastest(r, TORCH_BATCHED)
        rows.append(
            [f"{r['n']:,}"] + [with_thr(r, k) for k, _ in cols]
            + [f"{LABEL[bk]} {fmt_rate(bv)}", f"{r['a'] / bv:.2f}x", f"{r['a'] / r['b']:.1f}x"]
            + ([f"{r['a3'] / bv:.2f}x" if "a3" in r else "-"] if s.chunk else [])
            + ([f"{r['a_bf16'] / bv:.2f}x" if "a_bf16" in r else "-"]
               if _present(results, "a_bf16") else []))
    return header, rows


def flops_table(results: Sequence[dict], s: Settings) -> tuple[list[str], list[list[str]]]:
    """Achieved matmul GFLOP/s of every variant and its share of the fp32 / bf16 peaks."""
    bf16 = any(peaks_of(r).bf16 for r in results)
    header = ["N", "variant", "GFLOP/s", "% of fp32 peak"] + (["% of bf16 peak"] if bf16 else [])
    rows = []
    for r in results:
        peaks = peaks_of(r)
        variants = [(k, short, r[k] * s.steps) for k, short, _ in ITERATIVE if k in r]
        rates = [(short, r[k] * s.steps * FLOPS_PER_LATENT_STEP) for k, short, _ in ITERATIVE
                 if k in r]
        rates += [(f"one-step {LABEL[k]}", r[k] * r["os_flops"][k] / r["n"])
                  for k, _ in ONE_STEP if k in r and k in r.get("os_flops", {})]
        for label, flops_per_s in rates:
            cells = common.share_cells(flops_per_s, peaks)
            rows.append([f"{r['n']:,}", label] + cells[:2] + (cells[2:] if bf16 else []))
    return header, rows


def peaks_table(results: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """The matmul peaks measured in each N's rounds, GFLOP/s."""
    g = lambda x: "-" if x is None else f"{x / 1e9:,.0f}"  # noqa: E731
    header = ["N", "fp32 peak", "fp32 jnp.dot", "fp32 torch.mm", "fp32 1-thread torch.mm per "
              "core, summed", "bf16 peak", "bf16 jnp.dot (fp32 acc.)", "bf16 torch.mm"]
    rows = []
    for r in results:
        p = peaks_of(r)
        rows.append([f"{r['n']:,}", g(p.fp32), g(p.fp32_jax), g(p.fp32_torch),
                     g(p.fp32_per_core), g(p.bf16), g(p.bf16_jax), g(p.bf16_torch)])
    return header, rows


def one_step_table(results: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    """Latents/s of every one-step variant, the ratios of gbi_jax (its default and
    reverse mode) to the best PyTorch, and the predictions' agreement."""
    cols = [(k, label) for k, label in ONE_STEP if _present(results, k)]
    bf16 = _present(results, "os_bf16")
    header = (["N"] + [label for _, label in cols]
              + ["best torch", "jax/best torch", "jax reverse/best torch"]
              + (["bf16/best torch"] if bf16 else [])
              + ["predictions = jax (all other variants)", "accuracy vs true class"])
    rows = []
    for r in results:
        ok, ov = common.fastest(r, TORCH_ONE_STEP)
        agree = [r[k] for k in ("os_agree", "os_rev_agree", "os_mp_agree", "os_c2_agree",
                                "os_c3_agree", "os_c2_mp_agree", "os_bf16_agree") if k in r]
        rows.append([f"{r['n']:,}"] + [with_thr(r, k) for k, _ in cols]
                    + [LABEL[ok], f"{r['os_a'] / ov:.2f}x", f"{r['os_a_rev'] / ov:.2f}x"]
                    + ([f"{r['os_bf16'] / ov:.2f}x" if "os_bf16" in r else "-"] if bf16 else [])
                    + [f"{min(agree):.1%}", f"{r['os_acc']:.1%}"])
    return header, rows


def agreement_table(results: Sequence[dict]) -> Optional[tuple[list[str], list[list[str]]]]:
    """Per N: the per-core and bf16 variants against (a), on all N latents."""
    mp, bf16 = _present(results, "c_mp_err"), _present(results, "bf16_err")
    if not (mp or bf16):
        return None
    header = ["N"] + (["max abs(z(c-pc) - z(a))", "one-step per core = jax"] if mp else []) + \
        (["argmax z(a-bf16) = argmax z(a)", "max abs(z(a-bf16) - z(a))",
          "(a-bf16) accuracy vs true class", "one-step bf16 = fp32"] if bf16 else [])
    rows = []
    for r in results:
        row = [f"{r['n']:,}"]
        if mp:
            row += ([f"{r['c_mp_err']:.1e}", f"{r['os_mp_agree']:.1%}"] if "c_mp_err" in r
                    else ["-", "-"])
        if bf16:
            row += ([f"{r['bf16_agree']:.2%}", f"{r['bf16_err']:.1e}", f"{r['bf16_acc']:.1%}",
                     f"{r['os_bf16_agree']:.2%}"] if "bf16_err" in r else ["-"] * 4)
        rows.append(row)
    return header, rows


def notes(results: Sequence[dict], s: Settings) -> list[str]:
    sub = min(s.per_example_subset, max(r["n"] for r in results))
    return [
        f"* (b) is timed on {sub} latents per N and the per-latent rate extrapolated: it does "
        "not depend on N.",
        f"PyTorch thread count per in-process variant (marked (Nt)) is the faster of "
        f"{s.thread_opts} in a probe of {min(3, s.steps)} steps (3 rounds, round-robin); probe "
        "medians in ms: " +
        "; ".join(f"N={r['n']:,}: " + ", ".join(f"{k} {1e3 * v:.1f}"
                                                for k, v in r["probe"].items())
                  for r in results) + ".",
        "Rounds per N (median): " + ", ".join(f"N={r['n']:,}: {r['repeats']}"
                                              for r in results) + ".",
    ]


def ratios(results: Sequence[dict], s: Settings) -> tuple[int, list[tuple[str, str]]]:
    """``(N, [(name, value)])``: the headline ratios at the largest N."""
    big = max(results, key=lambda r: r["n"])
    bk, bv = common.fastest(big, TORCH_BATCHED)
    ok, ov = common.fastest(big, TORCH_ONE_STEP)
    peaks = peaks_of(big)
    out = [
        ("(a)/best torch", f"{big['a'] / bv:.2f}x (best torch: {LABEL[bk]})"),
        ("(a)/(b)", f"{big['a'] / big['b']:.1f}x"),
        ("(a)/(c)", f"{big['a'] / big['c']:.2f}x"),
    ]
    if "c_mp" in big:
        out.append(("(a)/(c-pc)", f"{big['a'] / big['c_mp']:.2f}x"))
    out.append(("(a) share of the matmul peak",
                f"{iter_flops(big, 'a', s) / peaks.fp32:.0%} of {peaks.fp32 / 1e9:.0f} GFLOP/s "
                "fp32 peak" + (f", {iter_flops(big, 'a', s) / peaks.bf16:.0%} of "
                               f"{peaks.bf16 / 1e9:.0f} GFLOP/s bf16 peak" if peaks.bf16
                               else "")))
    out.append(("best torch share of the fp32 peak",
                f"{iter_flops(big, bk, s) / peaks.fp32:.0%}"))
    if "a3" in big:
        out.append(("(a*)/best torch", f"{big['a3'] / bv:.2f}x, "
                    f"{iter_flops(big, 'a3', s) / peaks.fp32:.0%} of fp32 peak"))
    if "a_bf16" in big:
        out.append(("(a-bf16)/best torch",
                    f"{big['a_bf16'] / bv:.2f}x; argmax agrees with (a) on "
                    f"{big['bf16_agree']:.2%} of {big['n']:,} latents, max final-latent "
                    f"error {big['bf16_err']:.1e}"))
    out.append(("one-step jax/best torch", f"{big['os_a'] / ov:.2f}x (best torch: "
                f"{LABEL[ok]})"))
    out.append(("one-step jax reverse mode/best torch", f"{big['os_a_rev'] / ov:.2f}x"))
    if "os_bf16" in big:
        out.append(("one-step jax-bf16/best torch", f"{big['os_bf16'] / ov:.2f}x"))
    return big["n"], out


def console_text(results: Sequence[dict], s: Settings, elapsed: float, load_end: str,
                 est: Optional[dict] = None) -> str:
    """The tables printed at the end of a run."""
    header, rows = iterative_table(results, s)
    fl_header, fl_rows = flops_table(results, s)
    os_header, os_rows = one_step_table(results)
    n, rat = ratios(results, s)
    lines = [f"\n== iterative inference, {s.steps} steps, latents/s (median, round-robin) ==",
             common.plain_table(header, rows), *notes(results, s),
             "\n== achieved matmul rate ==", common.plain_table(fl_header, fl_rows),
             "\n== one-step inference, latents/s ==", common.plain_table(os_header, os_rows)]
    agree = agreement_table(results)
    if agree:
        lines += ["\n== agreement with (a) on all N latents ==", common.plain_table(*agree)]
    lines.append(f"\n== ratios at N = {n:,} ==")
    lines += [f"  {name}: {val}" for name, val in rat]
    lines.append(f"\ntotal wall time {elapsed:.0f} s"
                 + (f" (estimated {est['total_s']:.0f} s)" if est else "")
                 + f"; load average at end {load_end}")
    return "\n".join(lines)


def markdown(*, results: Sequence[dict], s: Settings, chk: dict[str, Any],
             gemm: Sequence[dict], info: dict[str, str], command: str, elapsed: float,
             load_end: str) -> str:
    """The results page (everything above `common.NOTES_MARKER`)."""
    header, rows = iterative_table(results, s)
    fl_header, fl_rows = flops_table(results, s)
    pk_header, pk_rows = peaks_table(results)
    os_header, os_rows = one_step_table(results)
    agree = agreement_table(results)
    n, rat = ratios(results, s)
    nmax = max(r["n"] for r in results)
    gemm_table = gemm_rows(gemm, s.thread_opts)
    procs = results[0].get("procs", s.nprocs)
    md = [
        "# Latent inference: gbi_jax vs PyTorch",
        "",
        "Written by `python -m benchmarks.inference` (`benchmarks/inference.py`; its",
        "docstring gives the exact work, the FLOP count and the timing rules). Every variant",
        "is timed round-robin in the same rounds, so a load change hits all alike: the",
        "ratios are the result, absolute rates drift with the machine's load. Pages for",
        "all benchmarks: [README.md](README.md).",
        "",
        "Reproduce from the repository root (PyTorch from `pip install -e '.[bench]'`):",
        "",
        "```",
        command.strip(),
        "```",
        "",
        "## Machine",
        "",
        *[f"- {k}: {v}" for k, v in info.items()],
        f"- load average at end: {load_end}",
        f"- matmul peaks: {s.peak_n}x{s.peak_n} products timed in the same rounds as each N "
        "(table below); the fp32 peak is the fastest of jitted `jnp.dot`, `torch.mm` and "
        f"{procs} processes each running a 1-thread `torch.mm` (rates summed); the bf16 peak "
        "(bfloat16 operands, float32 accumulation) the faster of `jnp.dot` and `torch.mm`, "
        "where the CPU has bfloat16 instructions",
        f"- total wall time of the run: {elapsed:.0f} s",
        "",
        "## Setup",
        "",
        f"- decoder `MLP(hidden={HIDDEN}, out_features={OUT}, z_injection=\"concat\")`, "
        f"K = {K}, latent fed as probabilities, input features empty (`[..., 0]`)",
        f"- loss per example `sum((decoder(z) - x)^2)`, targets = decoder(one-hot class) + "
        f"N(0, {s.noise}^2) noise; weights frozen",
        f"- SGD lr = {s.lr}, momentum = {MOMENTUM}, S = {s.steps} steps, "
        f"latents start at 1/K; float32 everywhere except (a-bf16)",
        f"- matmul FLOPs per latent per step: forward {FWD_FLOPS:,} + backward (input "
        f"gradients only) {BWD_FLOPS:,} = {FLOPS_PER_LATENT_STEP:,}",
        f"- correctness: decoder outputs max |jax - torch| = {chk['dec_err']:.1e}; final latents "
        + ", ".join(f"max{k} = {v:.1e}" for k, v in chk["errs"].items())
        + f" on {chk['m']} examples (tolerance {TOLERANCE:g}: "
        f"{'ok' if chk['correct'] else 'EXCEEDED'})",
        "",
        f"## Iterative inference ({s.steps} steps), latents/s",
        "",
        "Best torch is the fastest of (c), (c') and (c-pc), the batched PyTorch programs a "
        "skilled user would choose between.",
        "",
        common.markdown_table(header, rows),
        "",
        *[note + "\n" for note in notes(results, s)],
        f"(c-pc) runs (c) in {procs} processes with one PyTorch thread each (one per core), "
        "each on its share of the N latents, started together; its time is from the common "
        "start to the last process done.",
        "",
        *([f"(a*) is the same work as (a) with `optimize_batch(..., chunk_size={s.chunk})`: "
           f"a loop over chunks of {s.chunk} latents, each chunk running all S steps "
           "while its activations stay in cache, instead of the default chunks of (a) "
           "(`chunk_size=\"auto\"`: the size a probe picks for this machine, see "
           "[chunk_size.md](chunk_size.md)).",
           ""] if s.chunk else []),
        *(["(a-bf16) is (a) with `matmul_dtype=\"bfloat16\"`: the decoder's matrix products "
           "take bfloat16 operands with float32 accumulation; latents, gradients and "
           "optimiser state stay float32. Its agreement with (a) is in the table below.", ""]
          if _present(results, "a_bf16") else []),
        *(["(a') is a diagnostic: `gbi.optimize` on the whole `[N, K]` latent with the "
           "loss summed over examples (same updates, no vmap).", ""] if s.diag else []),
        "## Achieved matmul rate",
        "",
        f"Matmul FLOPs done per second ({FLOPS_PER_LATENT_STEP:,} per latent and step for "
        "the iterative variants; one-step variants: their own count per call, see below) "
        "and their share of the peaks measured in the same rounds:",
        "",
        common.markdown_table(fl_header, fl_rows),
        "",
        "Peaks per N, GFLOP/s:",
        "",
        common.markdown_table(pk_header, pk_rows),
        "",
        *([f"## The six GEMMs of one step at N = {nmax:,}, GFLOP/s", "",
           "Each matmul of (a)/(c) timed alone (round-robin), in each library's own "
           "weight layout:", "",
           common.markdown_table(gemm_header(s.thread_opts), gemm_table), ""]
          if gemm_table else []),
        "## One-step inference, latents/s",
        "",
        "The gradient of every example's loss at the shared uniform latent, prediction "
        "argmax of the negative gradient. gbi_jax's default (`grad_mode=\"auto\"`) "
        "chooses forward mode here: the decoder depends on the latent alone, so its "
        f"forward pass and {K} tangents run once per chunk and each example keeps only "
        "the elementwise tangents of its squared error "
        "(`gbi_jax.inference.choose_grad_mode`); `grad_mode=\"reverse\"` does the "
        "forward pass once and one backward pass per example. The PyTorch peers: batched "
        "autograd on an `[N, K]` latent (forward and backward per example), and "
        "`torch.func` from one shared latent, which like gbi_jax runs the forward pass once "
        "(`vmap(grad)`) or the forward pass and its tangents once (`vmap(jacfwd)`). Matmul "
        "FLOPs per call are counted for each variant (gbi_jax: on its jaxpr) in the "
        "achieved-rate table above.",
        "",
        common.markdown_table(os_header, os_rows),
        "",
        *(["## Agreement with (a), all N latents", "",
           common.markdown_table(*agree), ""] if agree else []),
        f"## Ratios (N = {n:,})",
        "",
        *[f"- {name}: {val}" for name, val in rat],
        "",
    ]
    return "\n".join(md)


