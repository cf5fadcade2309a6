"""The report of ``benchmarks.inference``: console tables and ``benchmarks/RESULTS.md``.

Formats the numbers of ``benchmarks.inference_work`` (rates in latents/s, FLOP/s, times
in seconds); nothing here times anything. `markdown` is the results page; `write_page`
writes it and keeps the hand-written notes below `NOTES_MARKER` of an existing page.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from benchmarks import common
from benchmarks.inference_work import (BWD_FLOPS, FLOPS_PER_LATENT_STEP, FWD_FLOPS, HIDDEN, K,
                                       MOMENTUM, OUT, TOLERANCE, Settings)

NOTES_MARKER = "<!-- hand-written notes below are kept when the benchmark rewrites this file -->"


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}" if r >= 100 else f"{r:,.1f}"


def with_thr(r: dict, v: str) -> str:
    return f"{fmt_rate(r[v])} ({r[v + '_thr']}t)"


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


def size_line(r: dict[str, Any]) -> str:
    """One line per N, printed as soon as that N is timed."""
    best_c = max(r["c"], r.get("c2", 0.0))
    return (f"N={r['n']:>6}: (a) {r['a']:,.0f}/s [{r['a_flops'] / 1e9:.1f} GFLOP/s = "
            f"{r['a_flops'] / r['peak']:.0%} of peak {r['peak'] / 1e9:.0f}]"
            f"  (b) {with_thr(r, 'b')}  (c) {with_thr(r, 'c')}"
            + (f"  (c') {with_thr(r, 'c2')}" if "c2" in r else "")
            + (f"  (a') {fmt_rate(r['a2'])}" if "a2" in r else "")
            + (f"  (a*) {fmt_rate(r['a3'])}" if "a3" in r else "")
            + f"  | (a)/(b) {r['a'] / r['b']:.1f}x  (a)/(c) {r['a'] / r['c']:.2f}x"
            f"  (a)/max(c,c') {r['a'] / best_c:.2f}x"
            f"  | one-step: jax {fmt_rate(r['os_a'])} torch {with_thr(r, 'os_c')}"
            f" (predictions agree {r['os_agree']:.1%}, accuracy {r['os_acc']:.1%})")


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


def iterative_table(results: Sequence[dict], s: Settings) -> tuple[list[str], list[list[str]]]:
    header = ["N", "(a) gbi_jax jit(vmap(optimize))", "(b) torch per-example*",
              "(c) torch batched", "(c') torch.func.vmap"] + \
        (["(a') jax summed [N,K]"] if s.diag else []) + \
        ([f"(a*) jax chunked {s.chunk}"] if s.chunk else []) + \
        ["(a)/(b)", "(a)/(c)", "(a)/max(c,c')", "(a) GFLOP/s", "(a) % of peak",
         "(a*)/(c)", "(a*) % of peak",
         "(c) GFLOP/s", "peak jnp.dot / torch.mm GFLOP/s"]
    rows = []
    for r in results:
        best_c = max(r["c"], r.get("c2", 0.0))
        rows.append(
            [f"{r['n']:,}", fmt_rate(r["a"]), with_thr(r, "b"), with_thr(r, "c"),
             with_thr(r, "c2") if "c2" in r else "-"]
            + ([fmt_rate(r["a2"])] if s.diag else [])
            + ([fmt_rate(r["a3"]) if "a3" in r else "-"] if s.chunk else [])
            + [f"{r['a'] / r['b']:.1f}x", f"{r['a'] / r['c']:.2f}x",
               f"{r['a'] / best_c:.2f}x", f"{r['a_flops'] / 1e9:.1f}",
               f"{r['a_flops'] / r['peak']:.0%}",
               f"{r['a3'] / r['c']:.2f}x" if "a3" in r else "-",
               f"{r['a3'] * FLOPS_PER_LATENT_STEP * s.steps / r['peak']:.0%}"
               if "a3" in r else "-", f"{r['c_flops'] / 1e9:.1f}",
               f"{r['peak_jax'] / 1e9:.0f} / {r['peak_torch'] / 1e9:.0f}"])
    return header, rows


def one_step_table(results: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["N", "gbi_jax jit(one_step_batch)", "torch batched", "jax/torch",
              "predictions agree", "accuracy vs true class", "jax GFLOP/s"]
    rows = [[f"{r['n']:,}", fmt_rate(r["os_a"]), with_thr(r, "os_c"),
             f"{r['os_a'] / r['os_c']:.2f}x", f"{r['os_agree']:.1%}", f"{r['os_acc']:.1%}",
             f"{r['os_a'] * FLOPS_PER_LATENT_STEP / 1e9:.1f}"] for r in results]
    return header, rows


def notes(results: Sequence[dict], s: Settings) -> list[str]:
    sub = min(s.per_example_subset, max(r["n"] for r in results))
    return [
        f"* (b) is timed on {sub} latents per N and the per-latent rate extrapolated: it does "
        "not depend on N.",
        f"PyTorch thread count per variant (marked (Nt)) is the faster of {s.thread_opts} in a "
        f"probe of {min(3, s.steps)} steps (3 rounds, round-robin); probe medians in ms: " +
        "; ".join(f"N={r['n']:,}: " + ", ".join(f"{k} {1e3 * v:.1f}"
                                                for k, v in r["probe"].items())
                  for r in results) + ".",
        "Rounds per N (median): " + ", ".join(f"N={r['n']:,}: {r['repeats']}"
                                              for r in results) + ".",
    ]


def ratios(results: Sequence[dict], s: Settings) -> tuple[int, list[tuple[str, str]]]:
    """``(N, [(name, value)])``: the headline ratios at the largest N."""
    big = max(results, key=lambda r: r["n"])
    best_big = max(big["c"], big.get("c2", 0.0))
    out = [
        ("(a)/(b)", f"{big['a'] / big['b']:.1f}x"),
        ("(a)/(c)", f"{big['a'] / big['c']:.2f}x"),
        ("(a)/max(c, c')", f"{big['a'] / best_big:.2f}x"),
        ("(a) share of the matmul peak",
         f"{big['a_flops'] / big['peak']:.0%} of {big['peak'] / 1e9:.0f} GFLOP/s "
         f"({big['a_flops'] / big['peak_jax']:.0%} of jnp.dot's "
         f"{big['peak_jax'] / 1e9:.0f} GFLOP/s)"),
    ]
    if "a3" in big:
        a3_fl = big["a3"] * s.steps * FLOPS_PER_LATENT_STEP
        out.append(("chunked (a*)", f"(a*)/(b) {big['a3'] / big['b']:.1f}x, (a*)/(c) "
                    f"{big['a3'] / big['c']:.2f}x, {a3_fl / 1e9:.1f} GFLOP/s = "
                    f"{a3_fl / big['peak']:.0%} of peak"))
    return big["n"], out


def console_text(results: Sequence[dict], s: Settings, elapsed: float, load_end: str) -> str:
    """The tables printed at the end of a run."""
    header, rows = iterative_table(results, s)
    os_header, os_rows = one_step_table(results)
    n, rat = ratios(results, s)
    lines = [f"\n== iterative inference, {s.steps} steps, latents/s (median, round-robin) ==",
             common.plain_table(header, rows), *notes(results, s),
             "\n== one-step inference, latents/s ==", common.plain_table(os_header, os_rows),
             f"\n== ratios at N = {n:,} =="]
    lines += [f"  {name}: {val}" for name, val in rat]
    lines.append(f"\ntotal wall time {elapsed:.0f} s; load average at end {load_end}")
    return "\n".join(lines)


def markdown(*, results: Sequence[dict], s: Settings, chk: dict[str, Any],
             gemm: Sequence[dict], info: dict[str, str], command: str, elapsed: float,
             load_end: str) -> str:
    """The results page (everything above `NOTES_MARKER`)."""
    header, rows = iterative_table(results, s)
    os_header, os_rows = one_step_table(results)
    n, rat = ratios(results, s)
    nmax = max(r["n"] for r in results)
    gemm_table = gemm_rows(gemm, s.thread_opts)
    md = [
        "# Benchmark results: latent inference, gbi_jax vs PyTorch",
        "",
        "Written by `benchmarks/inference.py`; its docstring gives the exact work, the",
        "FLOP count and the timing rules. Absolute rates drift on shared machines; the",
        "ratios, measured side by side and round-robin in one process run, are the result.",
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
        f"- matmul peak: {s.peak_n}x{s.peak_n} float32 product, jitted `jnp.dot` and "
        "`torch.mm`, timed in the same round-robin as each N (column \"peak\"); the "
        "peak used is the larger of the two",
        f"- total wall time of the run: {elapsed:.0f} s",
        "",
        "## Setup",
        "",
        f"- decoder `MLP(hidden={HIDDEN}, out_features={OUT}, z_injection=\"concat\")`, "
        f"K = {K}, latent fed as probabilities, input features empty (`[..., 0]`)",
        f"- loss per example `sum((decoder(z) - x)^2)`, targets = decoder(one-hot class) + "
        f"N(0, {s.noise}^2) noise; weights frozen",
        f"- SGD lr = {s.lr}, momentum = {MOMENTUM}, S = {s.steps} steps, "
        f"latents start at 1/K; float32 everywhere",
        f"- matmul FLOPs per latent per step: forward {FWD_FLOPS:,} + backward (input "
        f"gradients only) {BWD_FLOPS:,} = {FLOPS_PER_LATENT_STEP:,}",
        f"- correctness: decoder outputs max |jax - torch| = {chk['dec_err']:.1e}; final latents "
        + ", ".join(f"max{k} = {v:.1e}" for k, v in chk["errs"].items())
        + f" on {chk['m']} examples (tolerance {TOLERANCE:g}: "
        f"{'ok' if chk['correct'] else 'EXCEEDED'})",
        "",
        f"## Iterative inference ({s.steps} steps), latents/s",
        "",
        common.markdown_table(header, rows),
        "",
        *[note + "\n" for note in notes(results, s)],
        *([f"(a*) is the same work as (a), scheduled by the benchmark as `lax.map` over "
           f"chunks of {s.chunk} latents, each chunk running `jit(vmap(optimize))`'s "
           "S steps while its activations stay in cache (a JAX-side optimisation, not "
           "the gbi_jax default).", ""] if s.chunk else []),
        *(["(a') is a diagnostic: `gbi.optimize` on the whole `[N, K]` latent with the "
           "loss summed over examples (same updates, no vmap).", ""] if s.diag else []),
        "",
        *([f"## The six GEMMs of one step at N = {nmax:,}, GFLOP/s", "",
           "Each matmul of (a)/(c) timed alone (round-robin), in each library's own "
           "weight layout:", "",
           common.markdown_table(gemm_header(s.thread_opts), gemm_table), ""]
          if gemm_table else []),
        "## One-step inference, latents/s",
        "",
        common.markdown_table(os_header, os_rows),
        "",
        f"## Ratios (N = {n:,})",
        "",
        *[f"- {name}: {val}" for name, val in rat],
        "",
    ]
    return "\n".join(md)


def write_page(path: str, md: str) -> None:
    """Writes `md` to `path`, keeping an existing page's notes below `NOTES_MARKER`."""
    notes_md = ""
    if os.path.exists(path):
        with open(path) as f:
            old_md = f.read()
        if NOTES_MARKER in old_md:
            notes_md = old_md[old_md.index(NOTES_MARKER):]
    with open(path, "w") as f:
        f.write(md)
        f.write("\n" + (notes_md or NOTES_MARKER + "\n"))
