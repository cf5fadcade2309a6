"""The PyTorch peers of ``benchmarks.inference`` (no JAX import: the one-process-per-core
workers of ``benchmarks.common.ProcessPool`` import this module in fresh interpreters).

The decoder is a ``torch.nn.Sequential`` copy of the gbi_jax decoder, built from its
``(kernel [in, out], bias [out])`` arrays (`decoder_from_layers`), weights frozen
(``requires_grad_(False)``: no weight gradients). Variants (see ``benchmarks/inference.py``):
(b) `torch_per_example`, (c) `torch_batched`, (c') `make_torch_func_batched`, one-step
`torch_one_step` (batched autograd) and `make_torch_func_one_step` (``torch.func`` from
one shared latent, reverse or forward mode); `batched_builder` and `one_step_builder`
are the pool workloads of (c) and one-step inference run in one process per core (each
worker takes a contiguous ``1/P`` of the latents).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from benchmarks.common import split_range

K = 10
MOMENTUM = 0.5


def decoder_from_layers(layers: Sequence[tuple[np.ndarray, np.ndarray]]):
    """``nn.Sequential`` of ``nn.Linear`` + ReLU (none after the last) with these
    ``(kernel [in, out], bias)`` layers, float32, weights frozen."""
    import torch
    from torch import nn

    mods = []
    for i, (kernel, bias) in enumerate(layers):
        kernel = np.asarray(kernel, np.float32)
        lin = nn.Linear(kernel.shape[0], kernel.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.T)))
            lin.bias.copy_(torch.from_numpy(np.array(bias, np.float32)))
        mods.append(lin)
        if i < len(layers) - 1:
            mods.append(nn.ReLU())
    net = nn.Sequential(*mods).float()
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


def make_torch_func_one_step(net, mode: str = "reverse"):
    """One-step inference with ``torch.func`` from ONE shared ``[K]`` latent:
    ``vmap(grad(per_example_loss), in_dims=(None, None, 0))`` (``mode="reverse"``) or
    ``vmap(jacfwd(...))`` (``"forward"``). ``torch.func.vmap`` batches only what depends
    on the example, so the decoder's forward pass (and in forward mode its K tangents)
    runs once per call, as in gbi_jax's ``one_step_batch`` with a shared latent. Needs
    inputs without features (``[N, 0]``: they are then the same for every example)."""
    import torch
    from torch.func import grad, jacfwd, vmap

    if mode not in ("reverse", "forward"):
        raise ValueError(f"mode must be 'reverse' or 'forward', got {mode!r}")

    def single_loss(z, inp, xi):
        return ((torch_decode(net, inp, z) - xi) ** 2).sum()

    per_example = vmap((grad if mode == "reverse" else jacfwd)(single_loss),
                       in_dims=(None, None, 0))

    def run(inputs, x):
        if inputs.shape[-1] != 0:
            raise ValueError("make_torch_func_one_step needs inputs without features")
        z = torch.full((K,), 1.0 / K)
        return torch.argmax(-per_example(z, inputs[0], x), dim=-1)

    return run


def _share(rank: int, procs: int, layers, inputs: np.ndarray, x: np.ndarray):
    import torch

    a, b = split_range(x.shape[0], procs, rank)
    return (decoder_from_layers(layers), torch.from_numpy(np.ascontiguousarray(inputs[a:b])),
            torch.from_numpy(np.ascontiguousarray(x[a:b])))


def batched_builder(rank: int, procs: int, layers, inputs: np.ndarray, x: np.ndarray,
                    steps: int, lr: float):
    """Pool workload: (c) on this worker's ``1/procs`` of the latents; returns the final
    latents ``[n_rank, K]`` as numpy."""
    net, tin, tx = _share(rank, procs, layers, inputs, x)
    run = functools.partial(torch_batched, net, tin, tx, steps, lr)
    return lambda: run().numpy()


def one_step_builder(rank: int, procs: int, layers, inputs: np.ndarray, x: np.ndarray,
                     mode: str = "autograd"):
    """Pool workload: one-step inference on this worker's ``1/procs`` of the latents,
    by batched autograd (``mode="autograd"``, `torch_one_step`) or by ``torch.func``
    from a shared latent (``"reverse"`` / ``"forward"``, `make_torch_func_one_step`);
    returns the predicted classes as numpy."""
    net, tin, tx = _share(rank, procs, layers, inputs, x)
    if mode == "autograd":
        return lambda: torch_one_step(net, tin, tx).numpy()
    run = make_torch_func_one_step(net, mode)
    return lambda: run(tin, tx).numpy()
