"""The work timed by ``benchmarks.inference``: latent inference through one MLP decoder.

What is timed (see ``benchmarks/inference.py`` for the variants (a), (a'), (a*), (b), (c),
(c') and the timing rules): `setup` builds the decoder, its PyTorch copy and the targets;
`check` compares the final latents of every variant on a few examples; `measure_size`
times every variant round-robin at one number of latents N; `gemm_timings` times each
matmul of one step alone; `dot_ops` lists the dots of the compiled (a) program. Each
returns plain numbers; ``benchmarks.inference_report`` formats them.

FLOP count (matmul FLOPs only): layers (fan_in, fan_out) (10, 256), (256, 256), (256, 784);
forward 2 * 268,800 = 537,600 FLOPs per latent per step, the backward (input gradients
only, weights frozen) exactly as many: 1,075,200 FLOPs per latent per step.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
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

    @property
    def threads(self) -> int:
        return self.torch_threads or len(os.sched_getaffinity(0))

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
def build_jax_fns(model: MLP, steps: int, lr: float):
    opt = optax.sgd(lr, momentum=MOMENTUM)

    def example_loss(params, z, example):
        y = model.apply(params, example["inputs"], z)
        return jnp.sum((y - example["x"]) ** 2)

    @jax.jit
    def optimize_vmap(params, z0, batch):                 # (a)
        z, _ = gbi.optimize_batch(functools.partial(example_loss, params), z0, batch,
                                  opt, steps)
        return z

    @jax.jit
    def optimize_summed(params, z0, batch):               # (a') diagnostic
        def loss(zs):
            y = model.apply(params, batch["inputs"], zs)
            return jnp.sum((y - batch["x"]) ** 2)
        z, _ = gbi.optimize(loss, z0, opt, steps)
        return z

    @functools.partial(jax.jit, static_argnames="chunk")
    def optimize_chunked(params, z0, batch, chunk: int):     # (a*) cache-blocked
        # Same work as (a) through the library's chunk_size option: lax.map over chunks of
        # `chunk` latents, each running all S steps while its activations stay in cache.
        z, _ = gbi.optimize_batch(functools.partial(example_loss, params), z0, batch, opt,
                                  steps, chunk_size=chunk)
        return z

    @jax.jit
    def one_step(params, batch):
        z0 = gbi.max_entropy_latent(K)
        res = gbi.one_step_batch(functools.partial(example_loss, params), z0, batch)
        return res.prediction

    return optimize_vmap, optimize_summed, optimize_chunked, one_step


# --------------------------------------------------------------------------
# PyTorch side.
# --------------------------------------------------------------------------
def torch_decoder_from_flax(params):
    import torch
    from torch import nn

    p = params["params"]
    names = [f"dense_{i}" for i in range(len(HIDDEN))] + ["out"]
    layers: list[Any] = []
    for i, name in enumerate(names):
        kernel = np.asarray(p[name]["kernel"], np.float32)       # [in, out]
        lin = nn.Linear(kernel.shape[0], kernel.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(kernel.T.copy()))
            lin.bias.copy_(torch.from_numpy(np.array(p[name]["bias"], np.float32)))
        layers.append(lin)
        if i < len(names) - 1:
            layers.append(nn.ReLU())
    net = nn.Sequential(*layers).float()
    net.requires_grad_(False)          # frozen weights: no weight-gradient work
    return net


def torch_decode(net, inputs, z):
    import torch
    return net(torch.cat([inputs, z], dim=-1))


def torch_per_example(net, inputs, x, steps: int, lr: float):
    """(b): authors' style, one latent at a time."""
    import torch

    out = []
    for i in range(x.shape[0]):
        z = torch.full((K,), 1.0 / K, requires_grad=True)
        opt = torch.optim.SGD([z], lr=lr, momentum=MOMENTUM)
        inp, xi = inputs[i], x[i]
        for _ in range(steps):
            opt.zero_grad()
            loss = ((torch_decode(net, inp, z) - xi) ** 2).sum()
            loss.backward()
            opt.step()
        out.append(z.detach())
    return torch.stack(out)


def torch_batched(net, inputs, x, steps: int, lr: float):
    """(c): all latents in one [N, K] leaf, loss summed over examples."""
    import torch

    z = torch.full((x.shape[0], K), 1.0 / K, requires_grad=True)
    opt = torch.optim.SGD([z], lr=lr, momentum=MOMENTUM)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((torch_decode(net, inputs, z) - x) ** 2).sum()
        loss.backward()
        opt.step()
    return z.detach()


def make_torch_func_batched(net):
    """(c'): torch.func.vmap(grad(per-example loss)) + the same momentum SGD."""
    import torch
    from torch.func import grad, vmap

    def single_loss(z, inp, xi):
        return ((torch_decode(net, inp, z) - xi) ** 2).sum()

    batched_grad = vmap(grad(single_loss))

    def run(inputs, x, steps: int, lr: float):
        z = torch.full((x.shape[0], K), 1.0 / K)
        buf = None
        for _ in range(steps):
            g = batched_grad(z, inputs, x)
            if buf is None:
                buf = g
            else:
                buf.mul_(MOMENTUM).add_(g)
            z.add_(buf, alpha=-lr)
        return z

    return run


def torch_one_step(net, inputs, x):
    import torch

    z = torch.full((x.shape[0], K), 1.0 / K, requires_grad=True)
    loss = ((torch_decode(net, inputs, z) - x) ** 2).sum()
    loss.backward()
    return torch.argmax(-z.grad, dim=-1)


def with_threads(fn, threads: int, default: int):
    """Run ``fn`` with ``torch.set_num_threads(threads)``, then restore ``default``."""
    import torch

    def run():
        torch.set_num_threads(threads)
        try:
            return fn()
        finally:
            torch.set_num_threads(default)

    return run


@dataclasses.dataclass
class Setup:
    """The decoder, its weights in both libraries, the compiled functions and targets."""

    model: MLP
    params: Any
    net: Any  # torch.nn.Sequential copy of the decoder
    opt_vmap: Any
    opt_summed: Any
    opt_chunked: Any
    one_step_jax: Any
    torch_func_run: Any
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
    net = torch_decoder_from_flax(params)
    opt_vmap, opt_summed, opt_chunked, one_step_jax = build_jax_fns(model, s.steps, s.lr)
    torch_func_run = make_torch_func_batched(net) if s.torch_func else None
    inputs_all, x_all, labels_all = make_targets(model, params, max(s.sizes), s.noise, s.seed)
    return Setup(model, params, net, opt_vmap, opt_summed, opt_chunked, one_step_jax,
                 torch_func_run, inputs_all, x_all, labels_all, np.array(inputs_all),
                 np.array(x_all), np.asarray(labels_all))


def check(st: Setup, s: Settings) -> dict[str, Any]:
    """Same work in every variant: decoder outputs and final latents on a few examples.

    Returns ``{"dec_err", "out_scale", "m", "errs", "latent_scale", "accuracy",
    "correct"}`` (``errs``: max |difference| of the final latents of (a) and each other
    variant over ``m`` examples; ``correct``: all within `TOLERANCE`).
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


def measure_size(st: Setup, s: Settings, n: int, peak_fns) -> dict[str, Any]:
    """Every variant at ``n`` latents, timed round-robin with the two peak matmuls.

    ``peak_fns``: ``(jax matmul, torch matmul, flops)`` from `common`. Returns rates in
    latents/s (``"a"``, ``"b"``, ``"c"``, ``"c2"``, ``"a2"``, ``"a3"``, ``"os_a"``,
    ``"os_c"``), the PyTorch thread count each used (``"<v>_thr"``), FLOP/s (``"a_flops"``,
    ``"c_flops"``, ``"peak_jax"``, ``"peak_torch"``, ``"peak"``), one-step agreement and
    accuracy, the rounds and the thread probe's medians.
    """
    import torch

    params, net = st.params, st.net
    opt_vmap, opt_summed, opt_chunked = st.opt_vmap, st.opt_summed, st.opt_chunked
    one_step_jax, torch_func_run = st.one_step_jax, st.torch_func_run
    jax_mm, torch_mm, mm_flops = peak_fns
    threads, thread_opts = s.threads, s.thread_opts
    sub = min(s.per_example_subset, st.nmax)
    sub_in, sub_x = torch.from_numpy(st.inputs_np[:sub]), torch.from_numpy(st.x_np[:sub])
    flops_iter = lambda n, t: n * s.steps * FLOPS_PER_LATENT_STEP / t  # noqa: E731
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

    fns = {"a": lambda: opt_vmap(params, z0, batch).block_until_ready()}
    counts = {"a": n, "a2": n, "b": sub, "c": n, "c2": n}
    if s.diag:
        fns["a2"] = lambda: opt_summed(params, z0, batch).block_until_ready()
    if 0 < s.chunk < n and n % s.chunk == 0:
        fns["a3"] = lambda: opt_chunked(params, z0, batch, s.chunk).block_until_ready()
        counts["a3"] = n
    for v in ("b", "c", "c2"):
        if v in builders:
            fns[v] = with_threads(builders[v](s.steps), chosen[v], threads)
    fns["peak_jax"] = jax_mm
    fns["peak_torch"] = torch_mm
    reps = s.repeats if n < 5000 else max(3, s.repeats - 2)
    t = common.interleaved_medians(fns, repeats=reps)

    # one-step inference
    pred_j = np.asarray(one_step_jax(params, batch))
    pred_t = torch_one_step(net, tin, tx).numpy()
    t.update(common.interleaved_medians(
        {"os_a": lambda: one_step_jax(params, batch).block_until_ready(),
         "os_c": with_threads(builders["os_c"](1), chosen["os_c"], threads)},
        repeats=max(reps, 7)))
    counts["os_a"] = counts["os_c"] = n

    r: dict[str, Any] = {"n": n, "repeats": reps, "probe": probe}
    for k, tk in t.items():
        if not k.startswith("peak"):
            r[k] = counts[k] / tk
    for v in builders:
        r[f"{v}_thr"] = chosen[v]
    r["a_flops"] = flops_iter(n, t["a"])
    r["c_flops"] = r["c"] * s.steps * FLOPS_PER_LATENT_STEP
    r["peak_jax"] = mm_flops / t["peak_jax"]
    r["peak_torch"] = mm_flops / t["peak_torch"]
    r["peak"] = max(r["peak_jax"], r["peak_torch"])
    r["os_agree"] = float(np.mean(pred_j == pred_t))
    r["os_acc"] = float(np.mean(pred_j == st.labels_np[:n]))
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
