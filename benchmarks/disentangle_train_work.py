"""The work timed by ``benchmarks.disentangle_train``: one training step of the Fig. 1 RNN.

gbi_jax (`jax_runner`): the exact program of ``experiments/disentangle`` Fig. 1 --
``training.make_chunk_fn`` over ``experiment.make_loss_fn`` (data made inside the compiled
``lax.scan``; hand-written RNN backward pass), ``members`` networks vmapped and, with more
than one host device, the member axis split over the devices as ``training.fit`` does,
each device running its networks in cache blocks of at most ``member_block``.

PyTorch: ``benchmarks.disentangle_torch`` (importable without JAX, for the per-core
worker processes): `BatchedRNNs`, M networks with stacked weights, and the authors'
style one-network program; `torch_runner` / `batched_runner` are re-exported here.

Import this module only after the host devices are set (``XLA_FLAGS``): it imports JAX.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import common
from benchmarks.disentangle_torch import authors_runner, batched_runner  # noqa: F401
from experiments.disentangle.experiment import make_loss_fn
from experiments.disentangle.networks import Network
from gbi_jax import training
from gbi_jax.tasks import EvidenceTask, line_angles, stack_instances

B, N, H = 16, 24, 64  # batch, tasks (outputs), hidden units


def fig1_member_block():
    """The cache block size the Fig. 1 config trains with here (``runtime.member_block``,
    unset: the platform default of ``training.resolve_member_block``: ``"auto"`` on CPU,
    resolved by `resolve_member_block`)."""
    from experiments.disentangle.config import get_config

    return training.resolve_member_block(get_config("fig1").runtime.member_block)


def _program(members: int):
    """The Fig. 1 training program's pieces for ``members`` networks, placed as
    ``training.fit`` places them: ``(loss_fn, tx, state, insts, keys, mesh)``."""
    task = EvidenceTask(max_tasks=N, encoders=("relu",))  # as Fig. 1 builds it
    net = Network("rnn", task.input_size, N, hidden=H)
    insts = stack_instances([task.instance(s, N) for s in range(members)])
    tx = optax.adam(1e-3)
    keys = training.member_keys(range(members))
    state = jax.jit(jax.vmap(lambda k: training.init_state(net.init(k), tx)))(keys)
    n_dev = jax.device_count()
    mesh = None
    if n_dev > 1:
        state, keys, insts = training._shard_members(
            training.pad_members((state, keys, insts), n_dev))
        mesh = training.member_mesh()
    return make_loss_fn(task, net, B), tx, state, insts, keys, mesh


def resolve_member_block(members: int, member_block) -> tuple:
    """``(block, how)``: ``member_block`` itself, or for ``"auto"`` the block
    ``training.fit`` would train with here (``training.tune_member_block`` on the real
    program: measured once per machine, then cached), with its log line."""
    if member_block != training.AUTO:
        return member_block, "set"
    loss_fn, tx, state, insts, keys, mesh = _program(members)
    choice = training.tune_member_block(loss_fn, tx, state, insts, keys, mesh=mesh,
                                        probe_steps=50, name="benchmark")
    return choice.value, choice.describe("member_block")


def jax_runner(members: int, steps: int, member_block=None):
    """Blocking callable running ``steps`` training steps of ``members`` networks
    (``member_block``: cache blocks per device as ``training.fit`` runs them; ``"auto"``:
    `resolve_member_block`).

    Returns ``(run, padded)``: ``padded`` is the member count after padding to the
    device count; ``run.hlo_text()`` gives the compiled program's HLO, ``run.matmul_flops()``
    the matmul FLOPs of one call (`common.matmul_flops`), ``run.member_block`` the block.
    """
    member_block, _ = resolve_member_block(members, member_block)
    loss_fn, tx, state, insts, keys, mesh = _program(members)
    chunk = training.make_chunk_fn(loss_fn, tx, steps, member_block=member_block, mesh=mesh)
    holder = {"state": state}
    limit = jnp.asarray(2 ** 30, jnp.int32)

    def run():
        holder["state"], metrics = chunk(holder["state"], insts, keys, limit)
        jax.block_until_ready(metrics["loss"])

    run.hlo_text = lambda: chunk.lower(holder["state"], insts, keys, limit).compile().as_text()
    run.matmul_flops = lambda: common.matmul_flops(chunk, holder["state"], insts, keys, limit)
    run.member_block = member_block
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
            "blocks": [b - a for a, b in training.member_blocks(per_dev, run.member_block)]}


def torch_runner(steps: int, threads: int):
    """Callable running ``steps`` PyTorch training steps of one network on ``threads``,
    authors' style (`benchmarks.disentangle_torch.authors_runner`)."""
    return authors_runner(steps, threads, [float(t) for t in np.tan(line_angles(N))])
