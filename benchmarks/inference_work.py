"""The work timed by ``benchmarks.inference``: latent inference through one MLP decoder.

What is timed (see ``benchmarks/inference.py`` for the variants (a), (a'), (a*),
(a-bf16), (b), (c), (c'), (c-pc) and the timing rules): `setup` builds the decoder, its
PyTorch copy (``benchmarks.inference_torch``) and the targets; `check` compares the final
latents of every variant on a few examples; `estimate` predicts the run's wall time from
a short calibration; `measure_size` times every variant round-robin at one number of
latents N, with the matmul peaks; `gemm_timings` times each matmul of one step alone;
`dot_ops` lists the dots of the compiled (a) program. Each returns plain numbers;
``benchmarks.inference_report`` formats them.

FLOP count (matmul FLOPs only): layers (fan_in, fan_out) (10, 256), (256, 256), (256, 784);
forward 2 * 268,800 = 537,600 FLOPs per latent per step, the backward (input gradients
only, weights frozen) exactly as many: 1,075,200 FLOPs per latent per step.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import statistics
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from benchmarks.inference_torch import (batched_builder, decoder_from_layers,  # noqa: F401
                                        make_torch_func_batched,
                                        make_torch_func_one_step, one_step_builder,
                                        torch_batched, torch_decode, torch_one_step,
                                        torch_per_example, with_threads)
from gbi_jax import inference as gbi
from gbi_jax.models import MLP

K = 10
HIDDEN = (256, 256)
OUT = 784
MOMENTUM = 0.5
LAYER_DIMS = [(K, HIDDEN[0]), (HIDDEN[0], HIDDEN[1]), (HIDDEN[1], OUT)]
FWD_FLOPS = 2 * sum(fi * fo for fi, fo in LAYER_DIMS)       # 537,600
BWD_FLOPS = 2 * sum(fi * fo for fi, fo in LAYER_DIMS)       # input grads only
FLOPS_PER_LATENT_STEP = FWD_FLOPS + BWD_FLOPS               # 1,075,200
# One-step variants that share the latent-only work: the forward pass (and, in forward
# mode, its K tangents) once per call or process, then per latent the backward products
# (reverse) or none at all (forward: each example's tangents of the squared error are
# elementwise). gbi_jax's own programs are counted on their jaxprs instead.
ONE_STEP_TORCH = {"os_c": "autograd", "os_c2": "reverse", "os_c3": "forward"}
TOLERANCE = 1e-4  # max |difference| of final latents between variants


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to time (the command's flags, after ``--quick``)."""

    sizes: tuple[int, ...] = (100, 1000, 10000)
    steps: int = 50
    lr: float = 0.01
    noise: float = 0.05
    repeats: int = 5
    per_example_subset: int = 20
    torch_threads: int = 0  # 0 = the process's core count
    peak_n: int = 2048
    check: int = 5
    torch_func: bool = True
    diag: bool = False
    chunk: int = 250
    torch_fixed_threads: bool = False
    seed: int = 0
    bf16: bool = False      # time (a-bf16): gbi_jax with bfloat16 matmuls (build_bf16_fn)
    per_core: bool = True   # time (c-pc) and one-step torch in one process per core
    procs: int = 0          # processes of the per-core variants; 0 = usable cores

    @property
    def threads(self) -> int:
        return self.torch_threads or len(os.sched_getaffinity(0))

    @property
    def nprocs(self) -> int:
        return self.procs or common.usable_cores()

    @property
    def thread_opts(self) -> list[int]:
        """PyTorch thread counts probed per variant (the faster one is timed)."""
        return [self.threads] if self.torch_fixed_threads else sorted({1, self.threads})


# --------------------------------------------------------------------------
# Problem: decoder, weights, targets.
# --------------------------------------------------------------------------
def make_model() -> MLP:
    return MLP(hidden=HIDDEN, out_features=OUT, z_injection="concat")


def make_targets(model: MLP, params, n: int, noise: float, seed: int):
    """Targets x_i = decoder(onehot(c_i)) + noise; returns (inputs [n,0], x [n,784], labels)."""
    kc, kn = jax.random.split(jax.random.PRNGKey(seed + 1))
    labels = jax.random.randint(kc, (n,), 0, K)
    inputs = jnp.zeros((n, 0), jnp.float32)
    clean = model.apply(params, inputs, jax.nn.one_hot(labels, K, dtype=jnp.float32))
    x = clean + noise * jax.random.normal(kn, clean.shape, jnp.float32)
    return inputs, x, labels



# --------------------------------------------------------------------------
# JAX side.
# --------------------------------------------------------------------------
def _example_loss(model: MLP):
    """``(params, z, example) -> sum((decoder(z) - x)^2)`` for one example."""
    def example_loss(params, z, example):
        y = model.apply(params, example["inputs"], z)
        return jnp.sum((y - example["x"]) ** 2)
    return example_loss


def one_step_torch_flops(v: str, n: int, procs: int = 1) -> float:
    """Matmul FLOPs of one call of the PyTorch one-step variant ``v`` (``"os_c"``,
    ``"os_c2"``, ``"os_c3"``, or one of them with ``"_mp"``: ``procs`` processes, each
    repeating the shared work) on ``n`` latents."""
    mode = ONE_STEP_TORCH[v.removesuffix("_mp")]
    p = procs if v.endswith("_mp") else 1
    if mode == "autograd":
        return n * (FWD_FLOPS + BWD_FLOPS)
    if mode == "reverse":
        return p * FWD_FLOPS + n * BWD_FLOPS
    return p * (1 + K) * FWD_FLOPS


def build_one_step(model: MLP, grad_mode: str = "auto", matmul_dtype=None):
    """The jitted gbi_jax one-step program ``(params, batch) -> predictions`` from the
    shared max-entropy latent, ``one_step_batch(..., grad_mode=grad_mode,
    outputs=("prediction",))`` (the predictions are what it returns, so the
    ``chunk_size="auto"`` probe times that program) with the library's other defaults."""
    example_loss = _example_loss(model)

    @jax.jit
    def one_step(params, batch):
        z0 = gbi.max_entropy_latent(K)
        res = gbi.one_step_batch(functools.partial(example_loss, params), z0, batch,
                                 matmul_dtype=matmul_dtype, grad_mode=grad_mode,
                                 outputs=("prediction",))
        return res.prediction

    return one_step


def build_jax_fns(model: MLP, steps: int, lr: float, matmul_dtype=None):
    """The jitted gbi_jax programs ``(optimize_vmap, optimize_summed, optimize_chunked,
    one_step)`` of variants (a), (a'), (a*) and one-step inference (the library's
    defaults, ``grad_mode="auto"``: `build_one_step`); with
    ``matmul_dtype="bfloat16"`` every matrix product of the decoder's forward and
    input-gradient passes takes bfloat16 operands and accumulates in float32
    (``gbi_jax.precision.with_matmul_dtype``; latents, gradients and optimiser state
    stay float32): the (a-bf16) programs."""
    opt = optax.sgd(lr, momentum=MOMENTUM)
    example_loss = _example_loss(model)

    @jax.jit
    def optimize_vmap(params, z0, batch):                 # (a)
        z, _ = gbi.optimize_batch(functools.partial(example_loss, params), z0, batch,
                                  opt, steps, matmul_dtype=matmul_dtype)
        return z

    @jax.jit
    def optimize_summed(params, z0, batch):               # (a') diagnostic
        def loss(zs):
            y = model.apply(params, batch["inputs"], zs)
            return jnp.sum((y - batch["x"]) ** 2)
        z, _ = gbi.optimize(loss, z0, opt, steps, matmul_dtype=matmul_dtype)
        return z

    @functools.partial(jax.jit, static_argnames="chunk")
    def optimize_chunked(params, z0, batch, chunk: int):     # (a*) cache-blocked
        # Same work as (a) through the library's chunk_size option: lax.map over chunks of
        # `chunk` latents, each running all S steps while its activations stay in cache.
        z, _ = gbi.optimize_batch(functools.partial(example_loss, params), z0, batch, opt,
                                  steps, chunk_size=chunk, matmul_dtype=matmul_dtype)
        return z

    one_step = build_one_step(model, "auto", matmul_dtype)
    return optimize_vmap, optimize_summed, optimize_chunked, one_step


# --------------------------------------------------------------------------
# PyTorch side (benchmarks.inference_torch, importable without JAX by the pool workers).
# --------------------------------------------------------------------------
def decoder_layers(params) -> list[tuple[np.ndarray, np.ndarray]]:
    """The decoder's ``(kernel [in, out], bias)`` arrays, first layer first."""
    p = params["params"]
    names = [f"dense_{i}" for i in range(len(HIDDEN))] + ["out"]
    return [(np.asarray(p[n]["kernel"], np.float32), np.asarray(p[n]["bias"], np.float32))
            for n in names]


def torch_decoder_from_flax(params):
    """The PyTorch copy of the decoder (`inference_torch.decoder_from_layers`)."""
    return decoder_from_layers(decoder_layers(params))


def build_bf16_fn(model: MLP, steps: int, lr: float):
    """The (a-bf16) programs ``(optimize_bf16, one_step_bf16)``: (a) and one-step
    inference of `build_jax_fns` with ``matmul_dtype="bfloat16"``."""
    fns = build_jax_fns(model, steps, lr, matmul_dtype="bfloat16")
    return fns[0], fns[3]


@dataclasses.dataclass
class Setup:
    """The decoder, its weights in both libraries, the compiled functions and targets."""

    model: MLP
    params: Any
    net: Any  # torch.nn.Sequential copy of the decoder
    layers: list  # its (kernel [in, out], bias) numpy arrays, for the pool workers
    opt_vmap: Any
    opt_summed: Any
    opt_chunked: Any
    one_step_jax: Any
    one_step_rev: Any  # one_step_batch(grad_mode="reverse")
    bf16_fns: Any  # (optimize_bf16, one_step_bf16) or None
    torch_func_run: Any
    torch_one_step_fns: dict  # "os_c2" / "os_c3": torch.func one-step from a shared latent
    inputs_all: Any
    x_all: Any
    labels_all: Any
    inputs_np: np.ndarray
    x_np: np.ndarray
    labels_np: np.ndarray

    @property
    def nmax(self) -> int:
        return int(self.x_all.shape[0])


def init_torch(s: Settings) -> int:
    """Sets PyTorch's thread count and seed; returns the thread count."""
    import torch

    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    return torch.get_num_threads()


def setup(s: Settings) -> Setup:
    """Builds everything `measure_size` times (call `init_torch` first)."""
    model = make_model()
    params = model.init(jax.random.PRNGKey(s.seed), jnp.zeros((0,)), jnp.zeros((K,)))
    layers = decoder_layers(params)
    net = decoder_from_layers(layers)
    opt_vmap, opt_summed, opt_chunked, one_step_jax = build_jax_fns(model, s.steps, s.lr)
    bf16_fns = build_bf16_fn(model, s.steps, s.lr) if s.bf16 else None
    torch_func_run = make_torch_func_batched(net) if s.torch_func else None
    torch_os = ({v: make_torch_func_one_step(net, ONE_STEP_TORCH[v]) for v in ("os_c2", "os_c3")}
                if s.torch_func else {})
    inputs_all, x_all, labels_all = make_targets(model, params, max(s.sizes), s.noise, s.seed)
    return Setup(model, params, net, layers, opt_vmap, opt_summed, opt_chunked, one_step_jax,
                 build_one_step(model, "reverse"), bf16_fns, torch_func_run, torch_os,
                 inputs_all, x_all, labels_all,
                 np.array(inputs_all), np.array(x_all), np.asarray(labels_all))


def check(st: Setup, s: Settings) -> dict[str, Any]:
    """Same work in every variant: decoder outputs and final latents on a few examples.

    Returns ``{"dec_err", "out_scale", "m", "errs", "latent_scale", "accuracy",
    "correct"}`` (``errs``: max |difference| of the final latents of (a) and each other
    float32 variant over ``m`` examples; ``correct``: all within `TOLERANCE`). The
    per-core variants and (a-bf16) are compared with (a) on all N latents by
    `measure_size`.
    """
    import torch

    model, params, net = st.model, st.params, st.net
    zr = jax.random.dirichlet(jax.random.PRNGKey(7), jnp.ones(K), (16,))
    y_jax = np.asarray(model.apply(params, jnp.zeros((16, 0)), zr))
    y_torch = torch_decode(net, torch.zeros(16, 0), torch.from_numpy(np.array(zr))).numpy()
    dec_err = float(np.max(np.abs(y_jax - y_torch)))
    m = min(s.check, st.nmax)
    batch_c = {"inputs": st.inputs_all[:m], "x": st.x_all[:m]}
    z_a = np.asarray(st.opt_vmap(params, gbi.max_entropy_latent(K, (m,)), batch_c))
    tin, tx = torch.from_numpy(st.inputs_np[:m]), torch.from_numpy(st.x_np[:m])
    z_b = torch_per_example(net, tin, tx, s.steps, s.lr).numpy()
    z_c = torch_batched(net, tin, tx, s.steps, s.lr).numpy()
    errs = {"|a - b|": float(np.max(np.abs(z_a - z_b))),
            "|a - c|": float(np.max(np.abs(z_a - z_c)))}
    if st.torch_func_run is not None:
        z_c2 = st.torch_func_run(tin, tx, s.steps, s.lr).numpy()
        errs["|a - c'|"] = float(np.max(np.abs(z_a - z_c2)))
    z_a2 = np.asarray(st.opt_summed(params, gbi.max_entropy_latent(K, (m,)), batch_c))
    errs["|a - a'|"] = float(np.max(np.abs(z_a - z_a2)))
    if m >= 2:
        c = 1 if m % 2 else m // 2
        z_a3 = np.asarray(st.opt_chunked(params, gbi.max_entropy_latent(K, (m,)), batch_c, c))
        errs["|a - a*|"] = float(np.max(np.abs(z_a - z_a3)))
    return {"dec_err": dec_err, "out_scale": float(np.max(np.abs(y_jax))), "m": m,
            "errs": errs, "latent_scale": float(np.max(np.abs(z_a))),
            "accuracy": float(np.mean(z_a.argmax(-1) == st.labels_np[:m])),
            "correct": dec_err < TOLERANCE and all(v < TOLERANCE for v in errs.values())}


def _pool_workloads(st: Setup, s: Settings, n: int, steps: int) -> dict:
    """The `common.ProcessPool` workloads at ``n`` latents: (c-pc), one-step (batched
    autograd, and ``torch.func`` from a shared latent where those peers are timed), peak
    matmul."""
    inputs, x = st.inputs_np[:n], st.x_np[:n]
    work = {"c": (batched_builder, (st.layers, inputs, x, steps, s.lr)),
            "os_c": (one_step_builder, (st.layers, inputs, x)),
            "peak_mm": (common.torch_mm_builder, (s.peak_n,))}
    if st.torch_one_step_fns:  # the torch.func peers are timed
        work["os_c2"] = (one_step_builder, (st.layers, inputs, x, "reverse"))
    return work


def _chunk_applies(s: Settings, n: int) -> bool:
    return 0 < s.chunk < n and n % s.chunk == 0


def _rounds(s: Settings, n: int) -> int:
    return s.repeats if n < 5000 else max(3, s.repeats - 2)


def estimate(st: Setup, s: Settings, gemm: bool = True) -> dict[str, Any]:
    """Predicted wall time of `measure_size` for every N (and of `gemm_timings`), from a
    calibration of a few steps of every variant at ``min(1000, N_max)`` latents.

    Every variant's cost per latent and step is assumed constant in N (true within a
    factor of about 2: small N pay more overhead, large N can fall out of cache), and
    compilation, the pool's start and the peaks are added per N. Returns ``{"total_s",
    "per_n": {N: seconds}, "calibration_s", "n_cal"}``.
    """
    import time

    import torch

    t_start = time.perf_counter()
    n_c, steps_c = min(1000, st.nmax), 5
    fns = build_jax_fns(st.model, steps_c, s.lr)
    batch = {"inputs": st.inputs_all[:n_c], "x": st.x_all[:n_c]}
    z0 = gbi.max_entropy_latent(K, (n_c,))
    tin, tx = torch.from_numpy(st.inputs_np[:n_c]), torch.from_numpy(st.x_np[:n_c])
    jax_calls = {"a": lambda: fns[0](st.params, z0, batch).block_until_ready()}
    if 0 < s.chunk < n_c and n_c % s.chunk == 0:
        jax_calls["a3"] = lambda: fns[2](st.params, z0, batch, s.chunk).block_until_ready()
    if st.bf16_fns is not None:
        fb = build_bf16_fn(st.model, steps_c, s.lr)[0]
        jax_calls["a_bf16"] = lambda: fb(st.params, z0, batch).block_until_ready()
    compile_s = []
    for fn in jax_calls.values():
        t0 = time.perf_counter()
        fn()
        compile_s.append(time.perf_counter() - t0)
    sub = min(2, n_c)
    torch_calls = {
        "b": functools.partial(torch_per_example, st.net, tin[:sub], tx[:sub], steps_c, s.lr),
        "c": functools.partial(torch_batched, st.net, tin, tx, steps_c, s.lr)}
    if st.torch_func_run is not None:
        torch_calls["c2"] = functools.partial(st.torch_func_run, tin, tx, steps_c, s.lr)
    calls = dict(jax_calls)
    calls.update({f"{v}@{thr}": with_threads(fn, thr, s.threads)
                  for v, fn in torch_calls.items() for thr in s.thread_opts})
    peaks, _ = common.peak_fns(s.peak_n, None, bf16=st.bf16_fns is not None)
    calls.update({f"peak:{k}": f for k, f in peaks.items()})
    pool_start = 0.0
    pool = None
    if s.per_core:
        t0 = time.perf_counter()
        pool = common.ProcessPool(_pool_workloads(st, s, n_c, steps_c), s.nprocs)
        pool_start = time.perf_counter() - t0
        calls["c_mp"] = pool.fn("c")
    try:
        t = common.interleaved_medians(calls, repeats=2, warmup=1)
    finally:
        if pool is not None:
            pool.close()
    # seconds per latent and step
    per = {k: t[k] / (n_c * steps_c) for k in list(jax_calls) + (["c_mp"] if pool else [])}
    for v in torch_calls:
        per[v] = min(t[f"{v}@{thr}"] for thr in s.thread_opts) / (
            (sub if v == "b" else n_c) * steps_c)
        per[f"{v}_probe"] = sum(t[f"{v}@{thr}"] for thr in s.thread_opts) / (
            (sub if v == "b" else n_c) * steps_c)
    compile_one = max(0.0, statistics.median(compile_s) - t["a"])
    peak_round = sum(v for k, v in t.items() if k.startswith("peak:")) + (
        t["peak:fp32_torch"] if pool else 0.0)
    per_n = {}
    for n in s.sizes:
        reps = _rounds(s, n)
        subn = min(s.per_example_subset, st.nmax)
        iter_v = ["a", "c"] + (["c2"] if "c2" in per else []) + (
            ["a_bf16"] if "a_bf16" in per else []) + (["c_mp"] if "c_mp" in per else [])
        if "a3" in per and _chunk_applies(s, n):
            iter_v.append("a3")
        iter_round = sum(n * s.steps * per[v] for v in iter_v) + subn * s.steps * per["b"]
        probe = 4 * (n * (4 * per["c_probe"] + 3 * per.get("c2_probe", 0.0))
                     + 3 * 2 * per["b_probe"])
        one_v = ["a", "c"] + (["a_bf16"] if "a_bf16" in per else []) + (
            ["c_mp"] if "c_mp" in per else [])
        one_round = sum(n * per[v] for v in one_v)
        programs = 2 + (1 if _chunk_applies(s, n) else 0) + (2 if st.bf16_fns else 0)
        per_n[n] = ((reps + 1) * (iter_round + peak_round) + (max(reps, 7) + 1) * one_round
                    + probe + programs * compile_one + pool_start)
    # the correctness check (4 programs at a few latents), the GEMM table (12 small
    # programs, 6 GEMMs x (JAX + each thread count) x its rounds)
    total = sum(per_n.values()) + 4 * compile_one
    if gemm:
        total += 12 * 0.1 + (max(s.repeats, 5) + 2) * (1 + len(s.thread_opts)) * (
            st.nmax * per["c"])
    return {"total_s": total + (time.perf_counter() - t_start), "per_n": per_n,
            "calibration_s": time.perf_counter() - t_start, "n_cal": n_c,
            "compile_s": compile_one}


def measure_size(st: Setup, s: Settings, n: int) -> dict[str, Any]:
    """Every variant at ``n`` latents, timed round-robin with the matmul peaks.

    Returns rates in latents/s (``"a"``, ``"a2"``, ``"a3"``, ``"a_bf16"``, ``"b"``,
    ``"c"``, ``"c2"``, ``"c_mp"``; one-step ``"os_a"``, ``"os_bf16"``, ``"os_c"``,
    ``"os_c_mp"``), the PyTorch thread count each in-process variant used
    (``"<v>_thr"``), the per-core processes (``"procs"``), the peaks (``"peaks"``, a
    `common.Peaks`; also ``"peak_jax"``, ``"peak_torch"``, ``"peak"`` = its fp32 peak),
    FLOP/s of (a) and (c) (``"a_flops"``, ``"c_flops"``), agreement checks
    (``"os_agree"``, ``"os_acc"``, ``"os_mp_agree"``, ``"c_mp_err"``, ``"bf16_agree"``,
    ``"bf16_err"``, ``"os_bf16_agree"``), the rounds and the thread probe's medians.
    """
    import torch

    params, net = st.params, st.net
    opt_vmap, opt_summed, opt_chunked = st.opt_vmap, st.opt_summed, st.opt_chunked
    one_step_jax, torch_func_run = st.one_step_jax, st.torch_func_run
    threads, thread_opts = s.threads, s.thread_opts
    sub = min(s.per_example_subset, st.nmax)
    sub_in, sub_x = torch.from_numpy(st.inputs_np[:sub]), torch.from_numpy(st.x_np[:sub])
    batch = {"inputs": st.inputs_all[:n], "x": st.x_all[:n]}
    z0 = gbi.max_entropy_latent(K, (n,))
    tin, tx = torch.from_numpy(st.inputs_np[:n]), torch.from_numpy(st.x_np[:n])
    # Probe: each PyTorch variant with every thread setting, a few steps, 3 rounds;
    # keep the faster setting per variant for the timed round-robin below. On a loaded
    # machine OpenMP barriers can stall a multi-threaded PyTorch badly, and that should
    # not handicap it.
    probe_steps = min(3, s.steps)
    builders = {
        "b": lambda steps, nb=sub: functools.partial(
            torch_per_example, net, sub_in[:nb], sub_x[:nb], steps, s.lr),
        "c": lambda steps: functools.partial(torch_batched, net, tin, tx, steps, s.lr),
        "os_c": lambda steps: functools.partial(torch_one_step, net, tin, tx),
    }
    for v, run in st.torch_one_step_fns.items():
        builders[v] = lambda steps, run=run: functools.partial(run, tin, tx)
    if torch_func_run is not None:
        builders["c2"] = lambda steps: functools.partial(torch_func_run, tin, tx, steps, s.lr)
    chosen = {v: threads for v in builders}
    probe: dict[str, float] = {}
    if len(thread_opts) > 1:
        pf = {f"{v}@{thr}": with_threads(
                  build(probe_steps, min(sub, 2)) if v == "b" else build(probe_steps),
                  thr, threads)
              for v, build in builders.items() for thr in thread_opts}
        probe = common.interleaved_medians(pf, repeats=3)
        chosen = {v: min(thread_opts, key=lambda thr: probe[f"{v}@{thr}"])
                  for v in builders}

    pool = (common.ProcessPool(_pool_workloads(st, s, n, s.steps), s.nprocs)
            if s.per_core else None)
    try:
        return _measure(st, s, n, batch, z0, tin, tx, sub, builders, chosen, probe, pool)
    finally:
        if pool is not None:
            pool.close()


def _measure(st, s, n, batch, z0, tin, tx, sub, builders, chosen, probe, pool):
    params = st.params
    keep: dict[str, Any] = {}  # the last result of the variants checked against (a)

    def kept(name, fn):
        def run():
            keep[name] = fn().block_until_ready()
        return run

    fns = {"a": kept("a", lambda: st.opt_vmap(params, z0, batch))}
    counts = {"a": n, "a2": n, "a3": n, "a_bf16": n, "b": sub, "c": n, "c2": n, "c_mp": n,
              "os_a": n, "os_a_rev": n, "os_bf16": n, "os_c": n, "os_c_mp": n, "os_c2": n,
              "os_c3": n, "os_c2_mp": n}
    if s.diag:
        fns["a2"] = lambda: st.opt_summed(params, z0, batch).block_until_ready()
    if _chunk_applies(s, n):
        fns["a3"] = lambda: st.opt_chunked(params, z0, batch, s.chunk).block_until_ready()
    if st.bf16_fns is not None:
        fns["a_bf16"] = kept("a_bf16", lambda: st.bf16_fns[0](params, z0, batch))
    for v in ("b", "c", "c2"):
        if v in builders:
            fns[v] = with_threads(builders[v](s.steps), chosen[v], s.threads)
    if pool is not None:
        fns["c_mp"] = pool.fn("c")
    peak_calls, _ = common.peak_fns(s.peak_n, pool, bf16=st.bf16_fns is not None)
    fns.update({f"peak:{k}": f for k, f in peak_calls.items()})
    reps = _rounds(s, n)
    t = common.interleaved_medians(fns, repeats=reps)
    peaks = common.peaks_from_times({k[5:]: v for k, v in t.items() if k.startswith("peak:")},
                                    s.peak_n, pool)

    # one-step inference
    pred_j = np.asarray(st.one_step_jax(params, batch))
    pred_t = torch_one_step(st.net, tin, tx).numpy()
    os_fns = {"os_a": lambda: st.one_step_jax(params, batch).block_until_ready(),
              "os_a_rev": lambda: st.one_step_rev(params, batch).block_until_ready()}
    for v in ONE_STEP_TORCH:
        if v in builders:
            os_fns[v] = with_threads(builders[v](1), chosen[v], s.threads)
    if st.bf16_fns is not None:
        os_fns["os_bf16"] = kept("os_bf16", lambda: st.bf16_fns[1](params, batch))
    if pool is not None:
        os_fns["os_c_mp"] = pool.fn("os_c")
        if "os_c2" in builders:
            os_fns["os_c2_mp"] = pool.fn("os_c2")
    t.update(common.interleaved_medians(os_fns, repeats=max(reps, 7)))

    r: dict[str, Any] = {"n": n, "repeats": reps, "probe": probe, "procs": s.nprocs}
    for k, tk in t.items():
        if not k.startswith("peak:"):
            r[k] = counts[k] / tk
    for v in builders:
        r[f"{v}_thr"] = chosen[v]
    r["a_flops"] = r["a"] * s.steps * FLOPS_PER_LATENT_STEP
    r["c_flops"] = r["c"] * s.steps * FLOPS_PER_LATENT_STEP
    r["peaks"] = peaks
    r["peak_jax"], r["peak_torch"], r["peak"] = peaks.fp32_jax, peaks.fp32_torch, peaks.fp32
    r["os_agree"] = float(np.mean(pred_j == pred_t))
    r["os_rev_agree"] = float(np.mean(np.asarray(st.one_step_rev(params, batch)) == pred_j))
    for v, run in st.torch_one_step_fns.items():
        r[f"{v}_agree"] = float(np.mean(run(tin, tx).numpy() == pred_j))
    # matmul FLOPs of one call of every one-step variant
    r["os_flops"] = {"os_a": common.matmul_flops(st.one_step_jax, params, batch),
                     "os_a_rev": common.matmul_flops(st.one_step_rev, params, batch)}
    if "os_bf16" in t:
        r["os_flops"]["os_bf16"] = common.matmul_flops(st.bf16_fns[1], params, batch)
    for v in os_fns:
        if v not in r["os_flops"]:
            r["os_flops"][v] = one_step_torch_flops(v, n, s.nprocs)
    r["os_acc"] = float(np.mean(pred_j == st.labels_np[:n]))
    z_a = np.asarray(keep["a"])
    if pool is not None:
        z_mp = np.concatenate(pool.fetch("c"))
        r["c_mp_err"] = float(np.max(np.abs(z_mp - z_a)))
        r["os_mp_agree"] = float(np.mean(np.concatenate(pool.fetch("os_c")) == pred_j))
        if "os_c2_mp" in os_fns:
            r["os_c2_mp_agree"] = float(np.mean(np.concatenate(pool.fetch("os_c2")) == pred_j))
    if "a_bf16" in keep:
        z_h = np.asarray(keep["a_bf16"])
        r["bf16_agree"] = float(np.mean(z_h.argmax(-1) == z_a.argmax(-1)))
        r["bf16_err"] = float(np.max(np.abs(z_h - z_a)))
        r["bf16_acc"] = float(np.mean(z_h.argmax(-1) == st.labels_np[:n]))
        r["os_bf16_agree"] = float(np.mean(np.asarray(keep["os_bf16"]) == pred_j))
    return r


def gemm_timings(params, n: int, thread_opts, threads: int, repeats: int) -> list[dict]:
    """Median time of each matmul of one inference step at ``n`` latents, JAX vs PyTorch.

    Forward ``h @ W`` and backward ``g @ W^T`` with the decoder's own weights, in the
    layouts each library uses in (a) and (c) (JAX: kernel ``[in, out]``, the backward
    contracts its ``out`` axis; PyTorch: weight ``[out, in]``). Returns one dict per
    matmul: ``direction``, ``n``, ``k_in``, ``k_out``, ``flops`` and ``t`` (seconds:
    ``"jax"`` and ``"t<threads>"`` per PyTorch thread count).
    """
    import torch

    p = params["params"]
    kernels = [np.asarray(p[name]["kernel"], np.float32)
               for name in [f"dense_{i}" for i in range(len(HIDDEN))] + ["out"]]
    rng = np.random.default_rng(0)
    rows = []
    fwd = jax.jit(lambda h, w: h @ w)
    bwd = jax.jit(lambda g, w: g @ w.T)
    for direction in ("forward", "backward"):
        for w in (kernels if direction == "forward" else kernels[::-1]):
            k_in, k_out = w.shape if direction == "forward" else w.shape[::-1]
            a = rng.standard_normal((n, k_in), np.float32)
            ja, jw = jnp.asarray(a), jnp.asarray(w)
            ta = torch.from_numpy(a)
            tw = torch.from_numpy(np.ascontiguousarray(w.T))     # torch weight [out, in]
            jf = fwd if direction == "forward" else bwd
            fns = {"jax": lambda jf=jf, ja=ja, jw=jw: jf(ja, jw).block_until_ready()}
            for thr in thread_opts:
                tf = ((lambda ta=ta, tw=tw: ta @ tw.T) if direction == "forward"
                      else (lambda ta=ta, tw=tw: ta @ tw))
                fns[f"t{thr}"] = with_threads(tf, thr, threads)
            t = common.interleaved_medians(fns, repeats=repeats, warmup=2)
            rows.append({"direction": direction, "n": n, "k_in": int(k_in), "k_out": int(k_out),
                         "flops": 2.0 * n * k_in * k_out, "t": t})
    return rows


def dot_ops(st: Setup, s: Settings, n: int) -> list[str]:
    """The dot ops of the compiled (a) program at ``n`` latents (HLO lines)."""
    batch = {"inputs": st.inputs_all[:n], "x": st.x_all[:n]}
    txt = st.opt_vmap.lower(st.params, gbi.max_entropy_latent(K, (n,)),
                            batch).compile().as_text()
    lines = []
    for line in txt.splitlines():
        s_ = line.strip()
        if " dot(" in s_ or "custom-call" in s_ and "matmul" in s_.lower():
            lines.append(s_[:200])
    return lines
