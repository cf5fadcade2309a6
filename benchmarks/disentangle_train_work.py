"""The work timed by ``benchmarks.disentangle_train``: one training step of the Fig. 1 RNN.

gbi_jax (`jax_runner`): the exact program of ``experiments/disentangle`` Fig. 1 --
``training.make_chunk_fn`` over ``experiment.make_loss_fn`` (data made inside the compiled
``lax.scan``; hand-written RNN backward pass), ``members`` networks vmapped and, with more
than one host device, the member axis split over the devices as ``training.fit`` does,
each device running its networks in cache blocks of at most ``member_block``.

PyTorch (`torch_runner`): one network in the authors' style (``nn.Linear`` input and
recurrent layers, a Python loop over the 22 time steps, ``nn.BCELoss`` on sigmoid outputs,
``torch.optim.Adam``), its batch generated with torch ops each step (cheaper than the
authors' neurogym ``Dataset``, so this favours PyTorch).

Import this module only after the host devices are set (``XLA_FLAGS``): it imports JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from benchmarks import common
from experiments.disentangle.experiment import make_loss_fn
from experiments.disentangle.networks import Network
from gbi_jax import training
from gbi_jax.tasks import EvidenceTask, line_angles, stack_instances

B, N, H = 16, 24, 64  # batch, tasks (outputs), hidden units


def fig1_member_block() -> int:
    """The cache block size the Fig. 1 config trains with here (``runtime.member_block``,
    unset: the platform default of ``training.resolve_member_block``)."""
    from experiments.disentangle.config import get_config

    return training.resolve_member_block(get_config("fig1").runtime.member_block)


def jax_runner(members: int, steps: int, member_block=None):
    """Blocking callable running ``steps`` training steps of ``members`` networks
    (``member_block``: cache blocks per device as ``training.fit`` runs them).

    Returns ``(run, padded)``: ``padded`` is the member count after padding to the
    device count; ``run.hlo_text()`` gives the compiled program's HLO, ``run.matmul_flops()``
    the matmul FLOPs of one call (`common.matmul_flops`).
    """
    task = EvidenceTask(max_tasks=N, encoders=("relu",))  # as Fig. 1 builds it
    net = Network("rnn", task.input_size, N, hidden=H)
    insts = stack_instances([task.instance(s, N) for s in range(members)])
    tx = optax.adam(1e-3)
    keys = training.member_keys(range(members))
    state = jax.jit(jax.vmap(lambda k: training.init_state(net.init(k), tx)))(keys)
    n_dev = jax.device_count()
    if n_dev > 1:
        state, keys, insts = training._shard_members(
            training.pad_members((state, keys, insts), n_dev))
    chunk = training.make_chunk_fn(make_loss_fn(task, net, B), tx, steps,
                                   member_block=member_block,
                                   mesh=training.member_mesh() if n_dev > 1 else None)
    holder = {"state": state}
    limit = jnp.asarray(2 ** 30, jnp.int32)

    def run():
        holder["state"], metrics = chunk(holder["state"], insts, keys, limit)
        jax.block_until_ready(metrics["loss"])

    run.hlo_text = lambda: chunk.lower(holder["state"], insts, keys, limit).compile().as_text()
    run.matmul_flops = lambda: common.matmul_flops(chunk, holder["state"], insts, keys, limit)
    return run, int(jax.tree_util.tree_leaves(state)[0].shape[0])


def profile(members: int, steps: int, member_block, top: int) -> dict:
    """Per-XLA-op time of ``steps`` training steps of the vmapped program.

    Returns ``{"rows", "wall_s", "padded", "devices", "blocks"}`` (rows as
    `common.xla_op_profile`, ``blocks`` the block sizes per device).
    """
    run, padded = jax_runner(members, steps, member_block)
    run()  # compile
    rows, wall = common.xla_op_profile(run, run.hlo_text(), devices=jax.device_count(), top=top)
    per_dev = padded // jax.device_count()
    return {"rows": rows, "wall_s": wall, "padded": padded, "devices": jax.device_count(),
            "blocks": [b - a for a, b in training.member_blocks(per_dev, member_block)]}


def torch_runner(steps: int, threads: int):
    """Callable running ``steps`` PyTorch training steps of one network on ``threads``."""
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
    tan = torch.tan(torch.as_tensor(line_angles(N), dtype=torch.float32))

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
