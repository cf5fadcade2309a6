r"""``per_example(chunk_size="auto")`` against every fixed chunk size, on this machine.

Run from the repository root (``make bench`` runs it too)::

    python -m benchmarks.chunk_size          # 8-16 min on 2 cores; docs/benchmarks/chunk_size.md
    python -m benchmarks.chunk_size --quick  # N = 1,000 and 10,000, one-step only; prints only

The work is that of ``benchmarks/inference.py``: the MLP decoder (10 -> 256 -> 256 ->
784, frozen weights) and one latent per example, in two programs: one-step inference
(``one_step_batch`` with its defaults: for this latent-only decoder forward mode, the
decoder and its K tangents once per chunk) and 50 steps of iterative
inference (``optimize_batch`` with momentum SGD), each jitted, at N latents. One-step
runs three ways: keeping every field of the result, keeping only the predictions with
``outputs=("prediction",)``, and keeping only the predictions without saying so.

Per program and N, ``chunk_size="auto"`` (the library's default; on CPU the probe of
``gbi_jax.inference.auto_chunk_size``, run here on a fresh cache so its cost and choice
are this run's) is timed round-robin against one ``vmap`` (``None``) and the fixed chunk
sizes ``--chunks`` (default 125, 250, 500, 1,000, 2,000: the probe's candidates and one
more). Every setting is timed in units of about 0.2 s, round-robin, median of
``--repeats``. The table gives the probe's choice, the first call's wall time
(compilation and probe), ``auto``'s latents/s and its speed relative to the fastest
fixed setting, the chosen size's own fixed-setting speed relative to it (the quality of
the choice, free of the re-measurement), and every setting's speed relative to that
one. ``500 again`` is the 500-latent setting compiled a second time: the gap between
it and ``500`` is how far apart two programs doing identical work land, the
resolution of the comparison.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
from typing import Sequence

from absl import app, flags

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_SIZES = flags.DEFINE_string("sizes", "1000,10000", "Comma-separated latent counts N.")
_CHUNKS = flags.DEFINE_string("chunks", "125,250,500,1000,2000",
                              "Fixed chunk sizes timed beside 'auto' and one vmap.")
_STEPS = flags.DEFINE_integer("steps", 50, "Steps of the iterative program.")
_REPEATS = flags.DEFINE_integer("repeats", 15, "Timed calls per setting (median).")
_QUICK, _OUT = flags.DEFINE_bool("quick", False, "One-step programs only; prints only."), \
    flags.DEFINE_string("out", None, "Markdown page; default docs/benchmarks/chunk_size.md "
                        "for a full run, none for --quick; '' disables.")
DEFAULT_OUT = os.path.join("docs", "benchmarks", "chunk_size.md")
PREDICTIONS_NAMED = 'one-step, outputs=("prediction",)'
PREDICTIONS_UNNAMED = "one-step, predictions kept, outputs not named"
CONTROL = 500


def build(model, steps: int, lr: float):
    """``program -> chunk -> jitted fn(params, batch)``: one-step inference returning
    every field of its result; returning only the predictions with
    ``outputs=("prediction",)`` (the probe times that smaller program); returning only the
    predictions of the full result (XLA drops the rest when it compiles the caller, but
    the probe, which cannot see that, times every field); and iterative inference."""
    import jax
    import optax

    import gbi_jax.inference as gbi
    from benchmarks import inference_work as work

    example_loss = work._example_loss(model)
    opt = optax.sgd(lr, momentum=work.MOMENTUM)

    def one_step(chunk, keep_all=True, name_outputs=False):
        @jax.jit
        def f(params, batch):
            z0 = gbi.max_entropy_latent(work.K)
            res = gbi.one_step_batch(functools.partial(example_loss, params), z0, batch,
                                     chunk_size=chunk,
                                     outputs=("prediction",) if name_outputs else None)
            return res if keep_all else res.prediction
        return f

    def iterative(chunk):
        @jax.jit
        def f(params, batch):
            z0 = gbi.max_entropy_latent(work.K)
            return gbi.optimize_batch(functools.partial(example_loss, params), z0, batch,
                                      opt, steps, chunk_size=chunk)[0]
        return f

    return {"one-step": one_step,
            PREDICTIONS_NAMED: functools.partial(one_step, keep_all=False, name_outputs=True),
            PREDICTIONS_UNNAMED: functools.partial(one_step, keep_all=False),
            f"iterative ({steps} steps)": iterative}


def _unit(call, seconds: float = 0.2):
    """A timed unit of ``call``: as many calls as take about ``seconds`` (at least one);
    returns the seconds per call, so short calls are timed as reliably as long ones."""
    call()
    t = time.perf_counter()
    call()
    reps = max(1, int(seconds / max(time.perf_counter() - t, 1e-6)))

    def unit():
        t0 = time.perf_counter()
        for _ in range(reps):
            call()
        return (time.perf_counter() - t0) / reps

    unit.self_timed = True
    return unit


def measure(programs, params, targets, sizes, chunks, repeats):
    """Per program and N: ``{program, n, rates: {setting: latents/s}, chosen, probe_s}``."""
    import jax

    from benchmarks import common
    from gbi_jax import inference

    rows = []
    for name, make in programs.items():
        for n in sizes:
            batch = {"inputs": targets[0][:n], "x": targets[1][:n]}
            settings = {"auto": "auto", "None": None}
            settings.update({str(c): c for c in chunks if c < n})
            # The same setting compiled a second time: how far apart two programs that
            # do identical work land on this machine (the resolution of the table).
            settings[f"{CONTROL} again"] = CONTROL
            fns = {k: make(v) for k, v in settings.items()}
            # Forget this process's choices, so that a program sharing an earlier row's
            # per-example function reads that choice from the cache file and names it.
            inference._AUTO_CHOICES.clear()
            before = {}
            t0 = time.perf_counter()
            jax.block_until_ready(fns["auto"](params, batch))  # compile + probe (fresh cache)
            first_s = time.perf_counter() - t0
            new = [v for k, v in inference._AUTO_CHOICES.items() if k not in before]
            if n < inference.AUTO_MIN_BATCH:
                chosen = None
            else:
                chosen = new[0] if new else "?"
                if chosen is None and n > inference.PROBE_MAX_LATENTS:
                    chosen = inference.PROBE_MAX_LATENTS
            t = common.interleaved_medians(
                {k: _unit(lambda f=f: jax.block_until_ready(f(params, batch)))
                 for k, f in fns.items()}, repeats=repeats)
            rates = {k: n / v for k, v in t.items()}
            rows.append({"program": name, "n": n, "rates": rates, "chosen": chosen,
                         "first_s": first_s})
            print(f"  {name} N={n:,}: auto chose {chosen!r} (first call {first_s:.1f} s); "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()), flush=True)
    return rows


def table(rows) -> tuple[list[str], list[list[str]]]:
    """Header and rows: per program and N, the probe's choice, auto / best fixed, and every
    setting's speed relative to the fastest fixed one."""
    settings = []
    for r in rows:
        settings += [k for k in r["rates"] if k not in settings and k != "auto"]
    header = ["program", "N", "auto chose", "first call (s)", "auto latents/s",
              "auto / best fixed", "chosen size / best fixed"] + [f"{k}" for k in settings]
    out = []
    for r in rows:
        fixed = {k: v for k, v in r["rates"].items() if k != "auto" and "again" not in k}
        best = max(fixed.values())
        same = fixed.get(str(r["chosen"]))  # the chosen size's own fixed-setting column
        out.append([r["program"], f"{r['n']:,}", str(r["chosen"]), f"{r['first_s']:.1f}",
                    f"{r['rates']['auto']:,.0f}", f"{r['rates']['auto'] / best:.3f}",
                    "-" if same is None else f"{same / best:.3f}"]
                   + [f"{r['rates'][k] / best:.2f}" if k in r["rates"] else "-"
                      for k in settings])
    return header, out


def main(argv: Sequence[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # A fresh cache: the probe runs in this process, so its cost and choice are measured.
    cache_dir = tempfile.mkdtemp(prefix="gbi_jax_chunk_bench_")
    os.environ["GBI_JAX_AUTOTUNE_CACHE"] = os.path.join(cache_dir, "autotune.json")
    import jax

    from benchmarks import common
    from benchmarks import inference_work as work

    t_start = time.perf_counter()
    command = "python -m benchmarks.chunk_size " + " ".join(sys.argv[1:])
    info = common.machine_info()
    print("\n".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    sizes = [int(x) for x in _SIZES.value.split(",") if x.strip()]
    chunks = [int(x) for x in _CHUNKS.value.split(",") if x.strip()]
    model = work.make_model()
    params = model.init(jax.random.PRNGKey(0), jax.numpy.zeros((0,)),
                        jax.numpy.zeros((work.K,)))
    targets = work.make_targets(model, params, max(sizes), 0.05, 0)
    programs = build(model, _STEPS.value, 0.01)
    if _QUICK.value:
        programs = {k: v for k, v in programs.items() if k.startswith("one-step")}
    rows = measure(programs, params, targets, sizes, chunks, _REPEATS.value)
    header, body = table(rows)
    print(common.plain_table(header, body))
    elapsed = time.perf_counter() - t_start
    out = _OUT.value
    if out is None:
        out = "" if _QUICK.value else os.path.join(REPO_ROOT, DEFAULT_OUT)
    if out:
        common.write_page(out, page(header, body, info, command, elapsed))
        print(f"wrote {out}")
    return 0


def page(header, body, info, command, elapsed) -> str:
    from benchmarks import common
    from gbi_jax import inference

    return "\n".join([
        "# Chunk size of per-example inference: the probe against every fixed setting",
        "",
        f"Command: `{command.strip()}` ({elapsed / 60:.1f} min on this machine). Rewritten by "
        "every full run; `make bench` runs it.",
        "",
        "`per_example`, and with it `one_step_batch`, `optimize_batch` and "
        "`exhaustive_batch`, runs large batches as a loop over chunks of `vmap` on CPU "
        "(cache blocking). With `chunk_size=\"auto\"` (the default) the chunk size is the "
        "fastest of " + ", ".join(str(c) for c in inference.PROBE_CHUNKS) + " and one "
        "`vmap`, timed on stand-in latents of the same per-example program the first time "
        "it is traced on a machine, then cached (`gbi_jax.inference.auto_chunk_size`): on "
        f"as many latents as the batch has (at most {inference.PROBE_MAX_LATENTS:,}), or "
        f"on fewer (at least {inference.PROBE_MIN_LATENTS:,}) where one call would take "
        f"longer than {inference.PROBE_CALL_S} s. Here the cache starts empty, so *first "
        "call* includes the probe and the compilation. The work is the decoder of "
        "[inference.md](inference.md): one-step inference (forward mode, as "
        "`grad_mode=\"auto\"` picks for this decoder) and 50 steps of iterative "
        "inference. *one-step* keeps every field of the result; "
        f"*{PREDICTIONS_NAMED}* keeps only the predictions and says so, so the probe "
        "times that smaller program; "
        f"*{PREDICTIONS_UNNAMED}* keeps the same predictions of the full result (XLA "
        "drops the rest when it compiles the caller), while the probe times the program "
        "of every field. *chosen size / best "
        "fixed* is the chosen size's own column (the same "
        "program as *auto*, timed as a fixed setting); the columns after it: each fixed "
        "setting's speed relative to the fastest fixed one (1.00 = fastest; `None` = one "
        "`vmap`).",
        "",
        common.markdown_table(header, body),
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()),
        "",
    ])


if __name__ == "__main__":
    app.run(main)
