r"""Training throughput of the disentangling RNN: gbi_jax (vmapped seeds) vs a PyTorch peer.

Run from the repository root::

    python -m benchmarks.disentangle_train            # ~5 minutes, writes docs/disentangle/BENCHMARK.md
    python -m benchmarks.disentangle_train --quick    # ~1 minute, prints only
    python -m benchmarks.disentangle_train --profile --steps 100   # per-op time of a step

The work (one training step of one network; spec disentangle.md 1, 3)
--------------------------------------------------------------------
A batch of 16 trials of the D = 2 task is generated (latent ``U[-1/2, 1/2]^2``, 20
noisy samples with sigma = 0.2, a fixation and a decision step: 22 steps), passed
through the network's frozen random encoder ``2 -> 100 -> 100 -> 40`` (ReLU), then
through the ReLU RNN (41 -> 64, alpha = 1) step by step and a 24-output readout;
BCE with 0.5 targets before the decision step; one Adam (lr 1e-3) update.

(a) gbi_jax: the exact program of ``experiments/disentangle`` Fig. 1 --
    ``training.make_chunk_fn`` over ``make_loss_fn`` (data made inside the compiled
    ``lax.scan``; hand-written RNN backward pass), ``--members`` networks vmapped
    and, with ``--devices 2`` (default: usable cores), the member axis split over
    two host devices (one per core) as ``training.fit`` does, each device running
    its networks in cache blocks of at most ``runtime.member_block`` (5) networks.
    The row ``jax_vmapped_unblocked`` is the same program as one vmap over all the
    device's networks, timed in the same rounds (the blocking's own speed-up).
(b) PyTorch in the authors' style: one network (``nn.Linear`` input and recurrent
    layers, a Python loop over the 22 time steps, ``nn.BCELoss`` on sigmoid outputs,
    ``torch.optim.Adam``), its batch generated with torch ops each step (cheaper than
    the authors' neurogym ``Dataset``, so this favours PyTorch). Timed with 1 thread
    and with all cores; the faster is the reference.

Reported: network-steps/s of each and the ratio (a)/(b). Timing is interleaved
round-robin (``benchmarks.common.interleaved_medians``) so load changes on the
shared machine hit both alike; the ratio, not the absolute rate, is the result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short run, print only")
    p.add_argument("--members", type=int, default=26, help="networks vmapped (gbi_jax)")
    p.add_argument("--devices", type=int, default=None, help="host devices for JAX")
    p.add_argument("--steps", type=int, default=None, help="training steps per timed call")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--out", default="docs/disentangle/BENCHMARK.md")
    p.add_argument("--top", type=int, default=30, help="ops listed by --profile")
    p.add_argument("--member_block", type=int, default=None,
                   help="networks per cache block and device (default: the Fig. 1 config's "
                        "runtime.member_block); 0 = no blocking")
    p.add_argument("--profile", action="store_true",
                   help="print where one gbi_jax training step spends its time (per XLA op) "
                        "instead of timing against PyTorch")
    return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
    _n = ARGS.devices or len(os.sched_getaffinity(0))
    if _n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + f" --xla_force_host_platform_device_count={_n}").strip()
    if ARGS.profile:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                   + " --xla_cpu_enable_xprof_traceme=true").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from benchmarks import common  # noqa: E402
from experiments.disentangle.experiment import make_loss_fn  # noqa: E402
from experiments.disentangle.networks import Network  # noqa: E402
from gbi_jax import training  # noqa: E402
from gbi_jax.tasks import EvidenceTask, stack_instances  # noqa: E402

B, N, H = 16, 24, 64


def fig1_member_block() -> int:
    from experiments.disentangle.config import get_config

    return get_config("fig1").runtime.member_block


def jax_runner(members: int, steps: int, member_block=None):
    """Blocking callable running ``steps`` training steps of ``members`` networks
    (``member_block``: cache blocks per device as ``training.fit`` runs them)."""
    task = EvidenceTask(max_tasks=N, encoders=("relu",))  # as Fig. 1 builds it
    net = Network("rnn", task.input_size, N, hidden=H)
    insts = stack_instances([task.instance(s, N) for s in range(members)])
    tx = optax.adam(1e-3)
    keys = training.member_keys(range(members))
    state = jax.jit(jax.vmap(lambda k: training.init_state(net.init(k), tx)))(keys)
    n_dev = jax.device_count()
    if n_dev > 1:
        state, keys, insts = training._shard_members(
            training._pad_members((state, keys, insts), n_dev))
    chunk = training.make_chunk_fn(make_loss_fn(task, net, B), tx, steps,
                                   member_block=member_block,
                                   mesh=training.member_mesh() if n_dev > 1 else None)
    holder = {"state": state}
    limit = jnp.asarray(2 ** 30, jnp.int32)

    def run():
        holder["state"], metrics = chunk(holder["state"], insts, keys, limit)
        jax.block_until_ready(metrics["loss"])

    run.hlo_text = lambda: chunk.lower(holder["state"], insts, keys, limit).compile().as_text()
    return run, int(jax.tree_util.tree_leaves(state)[0].shape[0])


def _block(args):
    if args.member_block is None:
        return fig1_member_block()
    return args.member_block or None


def profile(args, steps: int) -> int:
    """Print the per-op time of one training step of the vmapped program (``--profile``)."""
    run, padded = jax_runner(args.members, steps, _block(args))
    run()  # compile
    rows, wall = common.xla_op_profile(run, run.hlo_text(), devices=jax.device_count(),
                                       top=args.top)
    per_dev = padded // jax.device_count()
    step_ms = wall / steps * 1e3
    table = common.plain_table(
        ["op", "ms/step", "% step", "calls/step", "result shape", "JAX source"],
        [[r["op"], f"{r['ms'] / steps:.3f}", f"{100 * r['ms'] / steps / step_ms:.1f}",
          f"{r['count'] / steps:g}", r["shape"], r["source"][-60:]] for r in rows])
    sizes = "/".join(str(b - a) for a, b in training.member_blocks(per_dev, _block(args)))
    print(f"{padded} networks ({per_dev} per device on {jax.device_count()} device(s), "
          f"blocks of {sizes}), "
          f"{steps} steps traced: {step_ms:.2f} ms per step (with profiling on), "
          f"{args.members * steps / wall:,.0f} network-steps/s. Per op and device "
          f"(loops include their bodies):\n{table}")
    return 0


def torch_runner(steps: int, threads: int):
    import torch
    import torch.nn as tnn

    torch.manual_seed(0)

    class RNN(tnn.Module):  # the authors' RNN.py shape: two nn.Linear, ReLU, alpha = 1
        def __init__(self):
            super().__init__()
            self.input2h = tnn.Linear(41, H)
            self.h2h = tnn.Linear(H, H)
            self.alpha = 1.0

        def recurrence(self, x, h):
            return h * (1 - self.alpha) + self.alpha * torch.relu(self.input2h(x) + self.h2h(h))

        def forward(self, x):
            h = torch.zeros(x.shape[1], H)
            out = []
            for t in range(x.shape[0]):
                h = self.recurrence(x[t], h)
                out.append(h)
            return torch.stack(out)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = RNN()
            self.fc = tnn.Linear(H, N)

        def forward(self, x):
            return torch.sigmoid(self.fc(self.rnn(x)))

    encoder = tnn.Sequential(tnn.Linear(2, 100), tnn.ReLU(), tnn.Linear(100, 100), tnn.ReLU(),
                             tnn.Linear(100, 40)).requires_grad_(False)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    criterion = tnn.BCELoss()
    phi = (torch.arange(N) + 0.5) * torch.pi / N
    tan = torch.tan(phi)

    def batch():
        x = torch.rand(B, 2) - 0.5
        stim = torch.zeros(22, B, 2)
        stim[1:21] = x + 0.2 * torch.randn(20, B, 2)
        fix = torch.ones(22, B, 1)
        fix[21] = 0
        inputs = torch.cat([fix, encoder(stim)], -1)
        labels = (x[:, 1:2] > tan * x[:, 0:1]).float()
        target = torch.full((22, B, N), 0.5)
        target[21] = labels
        return inputs, target

    def run():
        torch.set_num_threads(threads)
        for _ in range(steps):
            inputs, target = batch()
            opt.zero_grad()
            loss = criterion(net(inputs), target)
            loss.backward()
            opt.step()

    return run


def main():
    args = ARGS
    steps = args.steps or (100 if args.quick else 400)
    torch_steps = max(20, steps // 4)
    repeats = args.repeats or (2 if args.quick else 5)
    if args.profile:
        return profile(args, steps)
    import torch

    info = common.machine_info({"members (gbi_jax)": str(args.members)})
    jax_one, _ = jax_runner(1, steps) if jax.device_count() == 1 else (None, 1)
    block = _block(args)
    jax_many, padded = jax_runner(args.members, steps, block)
    fns = {"jax_vmapped": jax_many, "torch_1thread": torch_runner(torch_steps, 1),
           "torch_allthreads": torch_runner(torch_steps, len(os.sched_getaffinity(0)))}
    if block is not None:  # the same program without cache blocking, side by side
        fns["jax_vmapped_unblocked"] = jax_runner(args.members, steps, None)[0]
    if jax_one is not None:
        fns["jax_single"] = jax_one
    t0 = time.time()
    med = common.interleaved_medians(fns, repeats=repeats, warmup=1)
    rate = {
        "jax_vmapped": args.members * steps / med["jax_vmapped"],
        **({"jax_vmapped_unblocked": args.members * steps / med["jax_vmapped_unblocked"]}
           if "jax_vmapped_unblocked" in med else {}),
        "torch_1thread": torch_steps / med["torch_1thread"],
        "torch_allthreads": torch_steps / med["torch_allthreads"],
    }
    if "jax_single" in med:
        rate["jax_single"] = steps / med["jax_single"]
    torch_best = max(rate["torch_1thread"], rate["torch_allthreads"])
    rows = [[k, f"{v:,.0f}", f"{v / torch_best:.1f}x"] for k, v in rate.items()]
    table = common.markdown_table(["variant", "network-steps/s", "vs best PyTorch"], rows)
    text = (f"# Disentangling RNN training throughput (gbi_jax vs PyTorch)\n\n"
            f"`python -m benchmarks.disentangle_train{' --quick' if args.quick else ''}`; "
            f"{args.members} networks vmapped ({padded} after padding to the "
            f"{jax.device_count()} host device(s); `jax_vmapped` runs each device's networks "
            f"in cache blocks of at most {block or padded} as `training.fit` does for Fig. 1, "
            f"`jax_vmapped_unblocked` as one vmap), {steps} steps per timed call, "
            f"median of {repeats} interleaved rounds (timing took {time.time() - t0:.0f}s).\n\n"
            f"{table}\n\n**Per-network ratio gbi_jax (vmapped) / PyTorch: "
            f"{rate['jax_vmapped'] / torch_best:.1f}x**\n\n"
            "Machine:\n\n" + "\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n")
    print(text)
    if not args.quick and args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
