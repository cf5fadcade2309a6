"""Training: explicit state, jitted steps, scan-chunked fit loop over many networks.

A *member* is one network being trained. ``fit`` trains M members at once:
their states are stacked on a leading axis and every step is ``vmap``ped, so
seeds, experimental arms (different data streams) and hyper-parameter values
that only change data run as one compiled program. When the process sees more
than one device (e.g. ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` on
a 2-core CPU, or several ``jax.distributed`` processes), the member axis is sharded
across all devices; ``member_block`` runs each device's members in sequential
cache-sized blocks (speed only).

Several processes (``jax.distributed.initialize()``, e.g. ``--distributed`` of the
experiments): every process calls :func:`fit` with the same arguments; each device
trains its share of the members, every process reads the same metrics (so all reach
the same decisions), orbax checkpoints are written once for all, only process 0
writes ``metrics.jsonl`` (:class:`~gbi_jax.workdir.Workdir` skips writes elsewhere),
and every process gets the whole final state on its first local device.

Randomness: member ``m`` uses ``key_m = PRNGKey(seeds[m])``; its init key and
the key of step ``s`` are ``fold_in``s of it, so results do not depend on the
chunking and a resumed run reproduces an uninterrupted one exactly.

The loss function signature is::

    loss_fn(params, data, key, step) -> (loss, metrics: dict[str, scalar])

where ``data`` is the member's slice of ``member_data`` (any pytree with a
leading member axis, or ``None``) and ``step`` the global step (int32). With
``fit(shared_data=...)``, ``data`` is the pair ``(member slice, shared_data)``:
data every member reads (a training set indexed by per-member batch schedules) is
then held once per device instead of once per member.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from gbi_jax.tensorboard import ScalarWriter, member_runs
from gbi_jax.workdir import Workdir, from_jsonable

PyTree = Any
LossFn = Callable[[PyTree, PyTree, jax.Array, jax.Array], tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
    """``step`` (int32), ``params`` and ``opt_state`` of one (or M stacked) network(s)."""

    step: jax.Array
    params: PyTree
    opt_state: PyTree


class NonFiniteLossError(FloatingPointError):
    """Raised when a loss becomes NaN/inf; the last good checkpoint is kept."""


class DivergenceError(NonFiniteLossError):
    """Training diverged: a loss or gradient norm became non-finite or exceeded its bound
    (``fit(max_loss=..., max_grad_norm=...)``), or the parameters became non-finite.

    ``step`` (1-based, the step whose loss/gradient was bad), ``member`` (index into
    ``seeds``), ``seed`` and ``checkpoint`` (the step of the checkpoint kept, or None
    when there is none) say where; the message says the same in words.
    """

    def __init__(self, message: str, *, step: int, member: int, seed: int,
                 checkpoint: Optional[int]):
        super().__init__(message)
        self.step, self.member, self.seed, self.checkpoint = step, member, seed, checkpoint


class CheckpointError(ValueError):
    """A checkpoint of the workdir cannot be used."""


class IncompatibleCheckpointError(CheckpointError):
    """The workdir's checkpoint is intact but holds another model/optimiser (array names,
    shapes or dtypes differ from what this config builds)."""


def init_state(params: PyTree, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


def member_keys(seeds: Sequence[int]) -> jax.Array:
    """Stacked PRNG keys, one per member (raw uint32 keys; checkpoint-friendly)."""
    return jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds])


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation):
    """One un-batched step: ``(state, data, key) -> (state, metrics)``."""

    def train_step(state: TrainState, data: PyTree, key: jax.Array):
        step_key = jax.random.fold_in(jax.random.fold_in(key, 1), state.step)
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, data, step_key, state.step)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics)
        metrics["loss"] = loss
        metrics["grad_norm"] = optax.global_norm(grads)
        return TrainState(state.step + 1, params, opt_state), metrics

    return train_step


def _check_member_block(member_block, allow_auto: bool = False) -> None:
    if member_block is None or (allow_auto and member_block == AUTO):
        return
    if isinstance(member_block, bool) or not isinstance(member_block, (int, np.integer)) \
            or member_block < 1:
        choices = "a positive integer, 'auto' or None" if allow_auto else \
            "a positive integer or None"
        raise ValueError(f"member_block must be {choices}, got {member_block!r}.")


AUTO = "auto"


def resolve_member_block(member_block: Optional[int | str]) -> Optional[int | str]:
    """``member_block`` if set, else the platform default: ``"auto"`` on CPU (:func:`fit`
    times a few block sizes on the real program and keeps the fastest,
    :func:`tune_member_block`), ``None`` on GPU/TPU (one vmap keeps the device busy)."""
    if member_block is not None:
        return member_block
    return AUTO if jax.default_backend() == "cpu" else None


SMALL_BLOCKS = (2, 3, 4, 6, 8)
# Part of the probe's cache key: a probe with other candidates does not reuse older choices.
MEMBER_BLOCK_PROBE_VERSION = 2


def member_block_candidates(n: int) -> list[Optional[int]]:
    """Block sizes :func:`tune_member_block` tries for ``n`` members per device: ``None``
    (one vmap), the sizes that split them into 2, 3 or 4 near-equal blocks, and the
    small sizes of :data:`SMALL_BLOCKS` (where a block's activations fit a core's
    cache; on the 2-core AMD host the 40-network programs of the disentangling sweep ran
    fastest in blocks of 3), largest first."""
    sizes = {-(-n // k) for k in (2, 3, 4)} | set(SMALL_BLOCKS)
    return [None] + sorted((s for s in sizes if 1 <= s < n), reverse=True)


def tune_member_block(loss_fn: LossFn, tx: optax.GradientTransformation, state: TrainState,
                      member_data: PyTree, keys: jax.Array, shared_data: PyTree = None, *,
                      mesh: Optional[jax.sharding.Mesh] = None, probe_steps: int = 50,
                      name: str = "train"):
    """The fastest ``member_block`` for this program on this machine
    (:func:`gbi_jax.autotune.pick`), as an :class:`~gbi_jax.autotune.Choice`.

    Each candidate (:func:`member_block_candidates`) runs ``probe_steps`` steps of the
    real chunk program on the real (placed) state with the step limit at 0, so the
    state is left as it is while every step's work is done; candidates are timed
    round-robin, 3 calls each after a warm-up, then those within 5 % of the fastest
    up to 11 calls each (:func:`gbi_jax.autotune.pick`). The choice is cached per
    machine and program (the key holds a hash of one training step's jaxpr and the
    member count), so only the first run of a program on a machine pays the probe: one
    compilation per candidate plus the short calls (about 50 s for the 13 networks per
    core of the disentangling Fig. 1 on a 2-core CPU, against about 11 minutes of
    training). On that host the blocked candidates land within about 5 % of each other
    and their order changes from one probe to the next, so any blocked choice is as
    good as the host's timing can tell; one vmap is 0.7-0.85x of them.
    """
    import hashlib

    from gbi_jax import autotune

    n_dev = mesh.size if mesh is not None else 1
    n = keys.shape[0] // n_dev
    one = jax.tree_util.tree_map(lambda a: a[0], (state, member_data, keys))
    step_fn = make_train_step(loss_fn, tx)
    d = one[1] if shared_data is None else (one[1], shared_data)
    program = str(jax.make_jaxpr(step_fn)(one[0], d, one[2]))
    digest = hashlib.sha1(program.encode()).hexdigest()[:16]
    key = (f"member_block|probe={MEMBER_BLOCK_PROBE_VERSION}|{name}|{digest}|"
           f"members_per_device={n}|steps={probe_steps}")
    limit = jnp.asarray(0, jnp.int32)  # no step is applied: the state stays as it is
    holder = {"state": jax.tree_util.tree_map(jnp.copy, state)}

    def make_call(block):
        fn = make_chunk_fn(loss_fn, tx, probe_steps, member_block=block, mesh=mesh)

        def run():
            holder["state"], metrics = fn(holder["state"], member_data, keys, limit,
                                          shared_data)
            jax.block_until_ready(metrics)

        return run

    return autotune.pick(key, member_block_candidates(n), make_call, rounds=3,
                         final_rounds=11)


def member_blocks(n: int, member_block: Optional[int]) -> list[tuple[int, int]]:
    """``[start, stop)`` bounds splitting ``n`` members into ``ceil(n / member_block)``
    blocks of near-equal size (sizes differ by at most one; the larger come first).

    ``member_block=None`` gives one block of all ``n``.
    """
    _check_member_block(member_block)
    if member_block is None or member_block >= n:
        return [(0, n)]
    sizes = [len(b) for b in np.array_split(np.arange(n), -(-n // int(member_block)))]
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _block_groups(bounds: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """``(start, count, size)``: runs of consecutive blocks of equal size in ``bounds``."""
    groups: list[list[int]] = []
    for a, b in bounds:
        if groups and groups[-1][2] == b - a:
            groups[-1][1] += 1
        else:
            groups.append([a, 1, b - a])
    return [tuple(g) for g in groups]


def make_chunk_fn(loss_fn: LossFn, tx: optax.GradientTransformation, chunk_size: int, *,
                  member_block: Optional[int] = None,
                  mesh: Optional[jax.sharding.Mesh] = None):
    """Jitted ``(states[M], data[M], keys[M], limit[, shared]) -> (states, metrics[M, chunk])``.

    ``shared`` (optional): a pytree every member reads whole (not vmapped, not split
    over devices); ``loss_fn`` then gets ``(member data, shared)`` as its data.

    ``chunk_size`` steps run inside one ``lax.scan``; the member axis is ``vmap``ped.
    Steps at or beyond ``limit`` (a traced int) leave the state unchanged, so a
    last, shorter chunk reuses the same compiled program.

    Cache blocking (``member_block``): the members of each device are split into
    blocks of at most ``member_block`` (:func:`member_blocks`), and the blocks run
    their whole chunk one after the other instead of vmapping every step over all
    members at once: the blocks of one size as one ``lax.map`` (one copy of the step
    in the program however many blocks), the two sizes chained by
    ``optimization_barrier``, so XLA cannot interleave them. A step's activations then
    scale with the block, not with all members, and stay in the core's cache: on the
    2-core host, 13 disentangling RNNs per core ran about 1.2x faster in blocks of
    5/4/4 than as one vmap of 13, with bitwise-equal
    parameters (``python -m benchmarks.disentangle_train``). With ``mesh`` (a 1-D
    mesh whose axis holds the member axis, as :func:`fit` builds it) the blocking
    runs per device inside ``shard_map``; the mesh size must then divide ``M``.
    Every member gets the same updates whatever the blocking; they are bitwise equal
    when XLA's kernels round alike for the different batch sizes (as for the
    disentangling RNN), and otherwise differ by float rounding only.
    """
    train_step = make_train_step(loss_fn, tx)

    def one_member(state, data, key, limit, shared=None):
        d = data if shared is None else (data, shared)

        def body(s, _):
            new, metrics = train_step(s, d, key)
            keep = s.step < limit
            s = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, s)
            return s, metrics

        return jax.lax.scan(body, state, None, length=chunk_size)

    vmapped = jax.vmap(one_member, in_axes=(0, 0, 0, None, None))

    def members(states, data, keys, limit, shared=None):
        return vmapped(states, data, keys, limit, shared)

    _check_member_block(member_block)
    if member_block is None:
        return jax.jit(members, donate_argnums=(0,))

    def run_group(part, count, size, limit, shared):
        """``count`` blocks of ``size`` members, one after the other: the members of one
        block size run as one ``lax.map`` over their blocks, so the program holds one
        copy of the step per block size (at most two), however many blocks there are."""
        if count == 1:
            return members(*part, limit, shared)
        split = jax.tree_util.tree_map(lambda x: x.reshape((count, size) + x.shape[1:]), part)
        out = jax.lax.map(lambda p: members(*p, limit, shared), split)
        return jax.tree_util.tree_map(lambda x: x.reshape((count * size,) + x.shape[2:]), out)

    def blocked(states, data, keys, limit, shared=None):
        n = keys.shape[0]
        outs, prev = [], None
        for a, count, size in _block_groups(member_blocks(n, member_block)):
            b = a + count * size
            part = jax.tree_util.tree_map(lambda x: x[a:b], (states, data, keys))
            if prev is not None:  # group k starts after group k - 1 has finished
                part, prev = jax.lax.optimization_barrier((part, prev))
            prev = run_group(part, count, size, limit, shared)
            outs.append(prev)
        return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *outs)

    fn = blocked
    if mesh is not None:
        spec = jax.sharding.PartitionSpec(mesh.axis_names[0])
        sharded = jax.shard_map(blocked, mesh=mesh, in_specs=(spec, spec, spec,
                                                               jax.sharding.PartitionSpec(),
                                                               jax.sharding.PartitionSpec()),
                                out_specs=spec, check_vma=False)

        def fn(states, data, keys, limit, shared=None):
            return sharded(states, data, keys, limit, shared)
    return jax.jit(fn, donate_argnums=(0,))


@dataclasses.dataclass
class FitResult:
    """Final stacked state and the host-side metrics history.

    ``history[name]`` has shape ``[num_logged_steps, M]``; ``steps`` the step
    numbers (1-based, the step just completed) of those rows.
    """

    state: TrainState
    steps: np.ndarray
    history: dict[str, np.ndarray]
    resumed_from: int


def pad_members(tree: PyTree, multiple: int) -> PyTree:
    """Repeat the last member so the member axis divides ``multiple``."""
    def pad(a):
        extra = (-a.shape[0]) % multiple
        return a if extra == 0 else jnp.concatenate([a, jnp.repeat(a[-1:], extra, 0)])

    return jax.tree_util.tree_map(pad, tree)


def member_mesh() -> jax.sharding.Mesh:
    """The 1-D mesh ``("members",)`` over all local devices that :func:`fit` shards on."""
    return jax.sharding.Mesh(np.array(jax.devices()), ("members",))


def _multiprocess() -> bool:
    """True in a ``jax.distributed`` program of several processes."""
    return jax.process_count() > 1


def _host(tree: PyTree) -> PyTree:
    """NumPy copies of (possibly multi-process, sharded) arrays, the same on every process."""
    if _multiprocess():
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _global(tree: PyTree, sharding: jax.sharding.Sharding) -> PyTree:
    """Global arrays of `sharding` from values every process holds in full (host or local
    device arrays); each process transfers only the shards of its own devices."""
    def one(a):
        if a is None:
            return None
        value = np.asarray(a)
        return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])

    return jax.tree_util.tree_map(one, tree)


def _replicated() -> jax.sharding.NamedSharding:
    return jax.sharding.NamedSharding(member_mesh(), jax.sharding.PartitionSpec())


def _place(tree: PyTree, spec: jax.sharding.PartitionSpec) -> PyTree:
    """Place ``tree`` on the member mesh (all devices of every process) as ``spec`` says."""
    sharding = jax.sharding.NamedSharding(member_mesh(), spec)
    if _multiprocess():
        return _global(tree, sharding)
    return jax.device_put(tree, sharding)


def _shard_members(tree: PyTree) -> PyTree:
    """Place the (padded) member axis across all devices (of every process)."""
    return _place(tree, jax.sharding.PartitionSpec("members"))


def _unpadded(state: PyTree, m: int) -> PyTree:
    """The first `m` members; as NumPy arrays (the same on every process) when several
    processes share the member axis."""
    if _multiprocess():
        return jax.tree_util.tree_map(lambda a: np.asarray(a)[:m], _host(state))
    return jax.tree_util.tree_map(lambda a: a[:m], state)


def _barrier(name: str) -> None:
    """Wait for every process (no-op in a one-process program)."""
    if _multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


class _quiet_orbax:
    """Orbax logs every save at INFO through absl; keep our progress lines readable
    (``level``: the least severe orbax message still shown)."""

    def __init__(self, level: int = logging.WARNING):
        self._quiet = level

    def __enter__(self):
        self._level = logging.get_verbosity()
        logging.set_verbosity(self._quiet)

    def __exit__(self, *exc):
        logging.set_verbosity(self._level)


def _checkpoint_manager(path: str, max_to_keep: int = 2):
    import orbax.checkpoint as ocp

    with _quiet_orbax():
        return ocp.CheckpointManager(
            path, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                   enable_async_checkpointing=True))


def _save(manager, step: int, state: TrainState) -> None:
    """Start saving ``state`` in the background (the previous save is finished first;
    every process calls it in a multi-process program, orbax writes each array once).
    A save cut short leaves only a temporary directory: the older checkpoints stay and
    :func:`_restore` never picks an unfinished one."""
    import orbax.checkpoint as ocp

    if _multiprocess():  # one layout whatever the device count: replicated, unpadded
        state = _global(state, _replicated())
    with _quiet_orbax():
        manager.wait_until_finished()
        manager.save(step, args=ocp.args.StandardSave(state))


def _finish_saves(manager) -> None:
    """Wait for the background save (at the end of a fit, or before an error propagates)."""
    with _quiet_orbax():
        manager.wait_until_finished()


def _leaf_specs(tree: PyTree) -> dict[tuple[str, ...], tuple[tuple[int, ...], str]]:
    """``{path: (shape, dtype)}`` of a pytree's arrays, paths as plain strings (so the
    checkpoint's metadata tree, made of dicts and lists, compares with a TrainState)."""
    def name(k):
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                return str(getattr(k, attr))
        return str(k)

    return {tuple(name(k) for k in path): (tuple(leaf.shape), str(np.dtype(leaf.dtype)))
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _spec_difference(have: dict, want: dict) -> str:
    """The first few differences between a checkpoint's and this config's arrays."""
    out = [f"{'/'.join(p)}: in the checkpoint but not in this model" for p in have
           if p not in want]
    out += [f"{'/'.join(p)}: in this model but not in the checkpoint" for p in want
            if p not in have]
    out += [f"{'/'.join(p)}: shape/dtype {have[p][0]} {have[p][1]} in the checkpoint, "
            f"{want[p][0]} {want[p][1]} here" for p in want if p in have and have[p] != want[p]]
    return "; ".join(out[:3]) + (f"; ... ({len(out)} differences)" if len(out) > 3 else "")


def _short(e: Exception) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}{'...' if len(text) > 160 else ''}"


def _ignore_closed_event_loop() -> None:
    """After orbax fails to read a damaged checkpoint, tensorstore's pending callbacks hit
    orbax's closed asyncio loop and print one traceback each (as "unraisable" exceptions,
    some after the read has returned). Drop exactly those; every other unraisable
    exception is passed on to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_event_loop", False):
        return

    def hook(unraisable):
        e = unraisable.exc_value
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            return
        previous(unraisable)

    hook._drops_closed_event_loop = True
    sys.unraisablehook = hook


def _restore(manager, abstract: TrainState, name: str = "train") -> tuple[int, TrainState]:
    """``(step, state)`` of the newest intact checkpoint, or ``(0, None)`` if none is left.

    Checkpoints are tried newest first. One whose files cannot be read (truncated or
    garbled data, unreadable metadata, missing directories) is *corrupt*: it is logged,
    moved to ``<dir>.corrupt/<step>`` (so that the step can be saved again) and the next
    older one is tried. One whose arrays differ in name, shape or dtype from this
    config's model and optimiser is *incompatible*: nothing is moved, and
    :class:`IncompatibleCheckpointError` names the differences.
    """
    import orbax.checkpoint as ocp

    _ignore_closed_event_loop()
    directory = os.fspath(manager.directory)
    if _multiprocess():  # every process reads the whole (replicated) state
        abstract = _global(abstract, _replicated())
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract)
    want = _leaf_specs(target)
    corrupt = []
    for step in sorted(manager.all_steps(), reverse=True):
        item = os.path.join(directory, str(step), "default")
        try:
            with _quiet_orbax(logging.FATAL), ocp.StandardCheckpointer() as checkpointer:
                meta = checkpointer.metadata(item)
            meta = getattr(meta, "item_metadata", meta)
            have = _leaf_specs(getattr(meta, "tree", meta))
        except Exception as e:  # orbax raises many types for unreadable files
            corrupt.append((step, f"its metadata cannot be read ({_short(e)})"))
            continue
        if not have:  # orbax only logs when it cannot read the metadata
            corrupt.append((step, "its metadata is missing or unreadable"))
            continue
        if have != want:
            skipped = "".join(f" (skipped corrupt checkpoint at step {s}: {why})"
                              for s, why in corrupt)
            raise IncompatibleCheckpointError(
                f"[{name}] Checkpoint at step {step} in {directory} does not match the model/"
                f"optimiser of this config: {_spec_difference(have, want)}.{skipped} The "
                "config that made it differs in a field that shapes the network. Use a new "
                "--workdir for this config, or rerun with the config the workdir was made "
                "with.")
        try:
            with _quiet_orbax(logging.FATAL):  # a failure is reported below, once
                restored = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # orbax raises many types for unreadable data
            corrupt.append((step, f"its data cannot be read ({_short(e)})"))
            continue
        _set_aside(directory, corrupt, name)
        if _multiprocess():
            restored = jax.tree_util.tree_map(jnp.asarray, _host(restored))
        return step, restored
    _set_aside(directory, corrupt, name)
    return 0, None


def _set_aside(directory: str, corrupt: list[tuple[int, str]], name: str) -> None:
    """Move corrupt checkpoints to ``<directory>.corrupt/`` (kept for inspection; by
    process 0 of a multi-process program, the others wait)."""
    if jax.process_index() != 0:
        _barrier(f"set_aside_{name}")
        return
    for step, why in corrupt:
        dest_dir = directory.rstrip("/") + ".corrupt"
        os.makedirs(dest_dir, exist_ok=True)
        dest = os.path.join(dest_dir, f"{step}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(os.path.join(directory, str(step)), dest)
        logging.warning("[%s] skipped the checkpoint at step %d: it is corrupt, %s; moved it "
                        "to %s", name, step, why, dest)
    _barrier(f"set_aside_{name}")


def _check_fit_args(num_steps, chunk_size, log_every, checkpoint_every, member_block,
                    seeds: Sequence[int], member_data: PyTree, max_loss=None,
                    max_grad_norm=None) -> list[int]:
    """Raise ValueError naming the first bad argument of :func:`fit`; return the int seeds."""
    for arg, value in (("max_loss", max_loss), ("max_grad_norm", max_grad_norm)):
        if value is not None and (isinstance(value, bool) or not isinstance(
                value, (int, float, np.integer, np.floating)) or not 0 < value < np.inf):
            raise ValueError(f"{arg} must be a positive finite number or None, got {value!r}.")
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    if log_every < 1 or checkpoint_every < 1:
        raise ValueError("log_every and checkpoint_every must be >= 1.")
    _check_member_block(member_block, allow_auto=True)
    seeds = [int(s) for s in seeds]
    m = len(seeds)
    if m < 1:
        raise ValueError("seeds must name at least one member.")
    if member_data is not None:
        for leaf in jax.tree_util.tree_leaves(member_data):
            if leaf.shape[:1] != (m,):
                raise ValueError(
                    f"member_data leaves need a leading axis of size len(seeds)={m}; got a "
                    f"leaf of shape {leaf.shape}.")
    return seeds


def _init_states(init_fn: Callable[[jax.Array, PyTree], PyTree], tx: optax.GradientTransformation,
                keys: jax.Array, member_data: PyTree) -> TrainState:
    """The stacked step-0 states of all members (init key of member m: ``fold_in(key_m, 0)``)."""

    @jax.jit
    def init_all(keys, data):  # one compiled program instead of many eager ops
        init_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys)
        return jax.vmap(lambda k, d: init_state(init_fn(k, d), tx))(init_keys, data)

    return init_all(keys, member_data)


@dataclasses.dataclass
class ChunkProgram:
    """The training program :func:`fit` runs, placed on the devices.

    ``chunk_fn(state, member_data, keys, limit, shared_data)`` runs ``chunk_size`` steps
    of every member (see :func:`make_chunk_fn`; its input state is donated). ``state``,
    ``keys``, ``member_data`` and ``shared_data`` are placed as :func:`fit` places them:
    the member axis padded to a multiple of the device count and split over the devices
    (``sharded``), shared data whole on each. ``member_block`` is the block size in use
    (``"auto"`` resolved) and ``member_block_note`` the probe's log line (None when no
    probe ran). ``members`` counts the real (unpadded) members.
    """

    chunk_fn: Callable
    state: TrainState
    keys: jax.Array
    member_data: PyTree
    shared_data: PyTree
    chunk_size: int
    member_block: Optional[int]
    member_block_note: Optional[str]
    members: int
    sharded: bool

    def compile(self) -> float:
        """Compile the chunk program for this placement now (it may run in a thread
        beside other programs' compilations) and keep the executable; returns the
        seconds it took."""
        t0 = time.perf_counter()
        self.chunk_fn = self.chunk_fn.lower(self.state, self.member_data, self.keys,
                                            jnp.asarray(0, jnp.int32),
                                            self.shared_data).compile()
        return time.perf_counter() - t0

    def run(self, limit: Optional[int] = None) -> dict:
        """One chunk from ``self.state`` (which it replaces); returns the chunk's
        metrics on the device (``[M_padded, chunk_size]`` each). ``limit``: the step
        count beyond which steps leave the state unchanged (default: none)."""
        limit = jnp.asarray(2 ** 30 if limit is None else limit, jnp.int32)
        self.state, metrics = self.chunk_fn(self.state, self.member_data, self.keys, limit,
                                            self.shared_data)
        return metrics


def _placed_program(loss_fn: LossFn, tx: optax.GradientTransformation, state: TrainState,
                    keys: jax.Array, member_data: PyTree, shared_data: PyTree, *,
                    chunk_size: int, member_block, shard: bool, name: str, tune: bool,
                    probe_steps: int) -> ChunkProgram:
    """Place the stacked ``state`` (and data) as :func:`fit` does, resolve ``"auto"``
    (probing only when ``tune``; else one vmap) and build the chunk program."""
    members = int(keys.shape[0])
    n_dev = jax.device_count()
    sharded = shard and n_dev > 1
    if sharded:
        # Pad with copies of the last member (their results are dropped) and split
        # the member axis over devices: one core per device on a CPU host.
        state, keys, member_data = _shard_members(
            pad_members((state, keys, member_data), n_dev))
    if shared_data is not None:  # on the device(s) once, whole on each
        shared_data = (_place(shared_data, jax.sharding.PartitionSpec()) if sharded
                       else jax.device_put(shared_data))
    mesh = member_mesh() if sharded else None
    note = None
    if member_block == AUTO:
        if tune:
            choice = tune_member_block(loss_fn, tx, state, member_data, keys, shared_data,
                                       mesh=mesh, probe_steps=probe_steps, name=name)
            note, member_block = choice.describe("member_block"), choice.value
        else:
            member_block = None
    chunk_fn = make_chunk_fn(loss_fn, tx, chunk_size, member_block=member_block, mesh=mesh)
    return ChunkProgram(chunk_fn, state, keys, member_data, shared_data, chunk_size,
                        member_block, note, members, sharded)


def chunk_program(*, init_fn: Callable[[jax.Array, PyTree], PyTree], loss_fn: LossFn,
                  tx: optax.GradientTransformation, seeds: Sequence[int],
                  member_data: PyTree = None, shared_data: PyTree = None,
                  chunk_size: int = 100, member_block: Optional[int | str] = None,
                  shard: bool = True, name: str = "train") -> ChunkProgram:
    """The program ``fit(..., chunk_size=chunk_size, member_block=member_block)`` trains
    with, from step 0, without a workdir: the same initial states, placement and
    ``member_block`` (``"auto"`` probed as :func:`fit` probes it, with the same cache
    key, so a later :func:`fit` of the program reuses the choice). For timing a program
    before a long run (``benchmarks/sweep_projection.py`` projects a sweep this way)
    or stepping it by hand; arguments as :func:`fit`'s."""
    seeds = _check_fit_args(num_steps=1, chunk_size=chunk_size, log_every=1,
                            checkpoint_every=1, member_block=member_block, seeds=seeds,
                            member_data=member_data)
    keys = member_keys(seeds)
    state = _init_states(init_fn, tx, keys, member_data)
    return _placed_program(loss_fn, tx, state, keys, member_data, shared_data,
                           chunk_size=chunk_size, member_block=member_block, shard=shard,
                           name=name, tune=True, probe_steps=min(chunk_size, 50))


def _init_or_restore(state: TrainState, workdir: Optional[Workdir],
                     name: str) -> tuple[TrainState, int, Any, bool]:
    """``(state, start_step, manager, restored)``: the newest intact checkpoint of
    ``workdir/checkpoints/<name>`` if there is one, else ``state`` at step 0. Either way
    the fit's rows in ``metrics.jsonl`` are reconciled with it (rows past it dropped)."""
    if workdir is None:
        return state, 0, None, False
    workdir.read_metrics()  # a damaged metrics file stops the run before anything changes
    path = f"{workdir.checkpoint_dir}/{name}"
    manager = _checkpoint_manager(path)
    with _quiet_orbax():
        start, restored = _restore(manager, state, name)
    if restored is not None:
        state = restored
        logging.info("[%s] resumed from checkpoint at step %d", name, start)
    manager = _checkpoint_manager(path)  # corrupt steps may have been moved away
    dropped = workdir.reconcile_metrics(f"{name}_step", start)
    if dropped:
        logging.info("[%s] dropped %d metric rows logged after step %d (not checkpointed)",
                     name, dropped, start)
    return state, start, manager, restored is not None


def _checkpoint_words(last_saved: Optional[int], where: Optional[str]) -> str:
    if where is None:
        return "nothing was saved (no workdir)"
    if last_saved is None:
        return f"no checkpoint exists yet in {where}; a rerun starts from step 0"
    return f"the last good checkpoint (step {last_saved}) is kept in {where}"


def _check_divergence(metrics: dict[str, np.ndarray], *, step: int, seeds: Sequence[int],
                      name: str, last_saved: Optional[int], where: Optional[str],
                      max_loss: Optional[float], max_grad_norm: Optional[float]) -> None:
    """Raise :class:`DivergenceError` naming the first bad step (and its first member) of a
    chunk whose metrics ``[M, size]`` start after ``step``: a non-finite loss or gradient
    norm, or one above ``max_loss`` / ``max_grad_norm``."""
    checks = [("loss", metrics["loss"], max_loss)]
    if "grad_norm" in metrics:
        checks.append(("gradient norm", metrics["grad_norm"], max_grad_norm))
    bad = np.zeros(metrics["loss"].shape, bool)
    for _, values, bound in checks:
        values = np.asarray(values, np.float64)
        bad |= ~np.isfinite(values) | (values > bound if bound is not None else False)
    if not bad.any():
        return
    offset = int(np.argwhere(bad)[:, 1].min())
    member = int(np.argmax(bad[:, offset]))
    what = []
    for label, values, bound in checks:
        v = float(values[member, offset])
        if not np.isfinite(v):
            what.append(f"non-finite {label} ({v})")
        elif bound is not None and v > bound:
            what.append(f"{label} {v:.4g} above the bound {bound:g}")
    at = step + offset + 1
    raise _divergence(name, f"{' and '.join(what)} at step {at}", step=at, member=member,
                      seeds=seeds, last_saved=last_saved, where=where)


def _divergence(name: str, what: str, *, step: int, member: int, seeds: Sequence[int],
                last_saved: Optional[int], where: Optional[str]) -> DivergenceError:
    """The :class:`DivergenceError` for ``what`` happened to ``member``, with the truth
    about the checkpoint that is kept and what to do."""
    return DivergenceError(
        f"[{name}] training diverged: {what} (member {member}, seed {seeds[member]}). "
        f"Training stopped; {_checkpoint_words(last_saved, where)}. Lower the learning rate "
        "(resume with the changed value allowed, e.g. --config_override_ok=train.lr) or "
        "check the data.", step=step, member=member, seed=seeds[member], checkpoint=last_saved)


@jax.jit
def _finite_members(params: PyTree) -> jax.Array:
    """``bool[M]``: every parameter of member m is finite."""
    leaves = [jnp.all(jnp.isfinite(x).reshape(x.shape[0], -1), axis=1)
              for x in jax.tree_util.tree_leaves(params)
              if jnp.issubdtype(x.dtype, jnp.inexact) and x.size]
    return jnp.all(jnp.stack(leaves), axis=0) if leaves else jnp.ones((), bool)


def _check_params(params: PyTree, *, step: int, seeds: Sequence[int], name: str,
                  last_saved: Optional[int], where: Optional[str]) -> None:
    """Refuse to save parameters that are not finite (the last update of a chunk is not
    covered by any loss of that chunk)."""
    finite = np.asarray(_host(_finite_members(params)))[:len(seeds)]
    if finite.all():
        return
    raise _divergence(name, f"non-finite parameters after step {step}", step=step,
                      member=int(np.argmin(finite)), seeds=seeds, last_saved=last_saved,
                      where=where)


def _log_rows(metrics: dict[str, np.ndarray], step: int,
              log_every: int) -> list[tuple[int, dict[str, np.ndarray]]]:
    """``[(step, {metric: [M]})]``: each run of ``log_every`` steps of a chunk that started
    after ``step`` averaged into one row, numbered by its last step."""
    size = next(iter(metrics.values())).shape[1]
    rows = []
    for j0 in range(0, size, log_every):
        j1 = min(j0 + log_every, size)
        rows.append((step + j1, {k: np.mean(np.asarray(v)[:, j0:j1], axis=1)
                                 for k, v in metrics.items()}))
    return rows


def _metrics_row(name: str, step: int, row: dict[str, np.ndarray]) -> dict:
    """A ``metrics.jsonl`` row: ``<name>_step``, the mean over members of every metric
    (``<metric>_mean``), and the per-member values."""
    return {f"{name}_step": step, **{f"{k}_mean": float(np.mean(v)) for k, v in row.items()},
            **{k: v for k, v in row.items()}}


def _logged_history(workdir: Workdir, name: str) -> tuple[list[int], dict[str, np.ndarray]]:
    """The steps and ``{metric: [rows, M]}`` of fit ``name`` as logged in ``metrics.jsonl``
    (so a resumed run reports the same curves as an uninterrupted one)."""
    rows = [r for r in workdir.read_metrics() if f"{name}_step" in r]
    steps = [r[f"{name}_step"] for r in rows]
    keys = [k for k in rows[0] if not k.endswith("_mean") and k != f"{name}_step"] \
        if rows else []
    return steps, {k: np.asarray([r[k] for r in rows]) for k in keys}


TENSORBOARD_DIR = "tensorboard"  # <workdir>/tensorboard/<fit name>/<run>/events.out.tfevents.*
MEAN_RUN = "mean"  # the TensorBoard run of the member means (and the perf/* timings)
_PROGRESS_EVERY_S = 10.0  # the progress line at most this often (plus chunks 1, 2, last)


def _board_events(name: str, rows: Sequence[dict],
                  runs: Sequence[str]) -> dict[str, list[tuple[int, dict[str, float]]]]:
    """``{run: [(step, {metric: value})]}`` of fit ``name``'s ``metrics.jsonl`` rows (as
    :func:`_metrics_row` makes them): run ``runs[m]`` holds member m's value of every
    scalar metric, run :data:`MEAN_RUN` the mean over members."""
    key = f"{name}_step"
    out: dict[str, list[tuple[int, dict[str, float]]]] = {run: [] for run in [*runs, MEAN_RUN]}
    for row in rows:
        tags = [k for k, v in row.items()
                if k != key and not k.endswith("_mean") and np.ndim(v) == 1]
        for m, run in enumerate(runs):
            out[run].append((row[key], {k: float(row[k][m]) for k in tags}))
        out[MEAN_RUN].append((row[key], {k: float(row[f"{k}_mean"]) for k in tags}))
    return out


def _start_board(workdir: Workdir, name: str, runs: Sequence[str],
                 start: int) -> ScalarWriter:
    """The TensorBoard event files of fit ``name`` (``<workdir>/tensorboard/<name>``),
    rewritten to hold exactly the rows of ``metrics.jsonl`` kept at this (re)start; the
    ``perf/*`` timings logged up to ``start`` are kept."""
    rows = [from_jsonable(r) for r in workdir.read_metrics() if f"{name}_step" in r]
    return ScalarWriter(workdir.file(os.path.join(TENSORBOARD_DIR, name)),
                        _board_events(name, rows, runs), until=start)


def _duration(seconds: float) -> str:
    """``42 s``, ``3m 05s`` or ``2h 07m``."""
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class _Progress:
    """Timing of a fit's chunks: the progress line (absl INFO, shown by the experiment
    entry points) and the same numbers as ``perf/*`` scalars.

    A chunk ends when its metrics reach the host. The first chunk's time runs from its
    dispatch to then, so it includes compiling the chunk program. The speed (steps per
    second, each step training every member) is measured from the end of the first
    chunk on, and the compile time is estimated once, at the second chunk, as the first
    chunk's time minus the second's. The host's work on a chunk (checks, logging, a
    checkpoint) overlaps the next chunk on the device and counts where it delays one;
    after the last chunk it does not count, so the rate of a short fit (two chunks) is
    not inflated by one-time costs of its first checkpoint.
    """

    def __init__(self, name: str, num_steps: int, members: int):
        self.name, self.num_steps, self.members = name, num_steps, members
        self.t0 = self.last_end = time.perf_counter()
        self.first: Optional[tuple[float, int]] = None  # (time, step) at the first chunk's end
        self.chunks = 0
        self.last_line = -np.inf

    def chunk_done(self, step: int, loss: np.ndarray,
                   now: Optional[float] = None) -> dict[str, float]:
        """Count a chunk that ended at ``step`` (``loss``: its ``[M, steps]`` losses; ``now``:
        when its metrics reached the host, default the call's time), log the progress
        line when due (chunks 1 and 2, the last one, and otherwise at most every 10 s)
        and return the chunk's ``perf/*`` scalars: ``first_chunk_s`` (chunk 1),
        ``steps_per_sec`` and ``eta_s`` (from chunk 2 on), ``compile_s`` (chunk 2)."""
        now = time.perf_counter() if now is None else now
        self.chunks += 1
        if self.first is None:
            self.first = (now, step)
            perf = {"perf/first_chunk_s": now - self.t0}
            speed = f"first chunk (compile + run) {_duration(now - self.t0)}"
        else:
            t1, s1 = self.first
            rate = (step - s1) / max(now - t1, 1e-9)
            eta = (self.num_steps - step) / max(rate, 1e-9)
            perf = {"perf/steps_per_sec": rate, "perf/eta_s": eta}
            speed = f"{rate:.0f} steps/s x {self.members} nets  ETA {_duration(eta)}"
            if self.chunks == 2:
                first_s, second_s = t1 - self.t0, now - self.last_end
                perf["perf/compile_s"] = compile_s = max(first_s - second_s, 0.0)
                speed += (f"  compile ~{_duration(compile_s)} (first chunk "
                          f"{_duration(first_s)} minus the second, {_duration(second_s)})")
        self.last_end = now
        if step >= self.num_steps:
            speed += f"  done in {_duration(now - self.t0)}"
        if self.chunks <= 2 or step >= self.num_steps or now - self.last_line >= _PROGRESS_EVERY_S:
            self.last_line = now
            logging.info("[%s] step %d/%d  loss %.5f  %s", self.name, step, self.num_steps,
                         float(np.mean(loss[:, -1])), speed)
        return perf


def fit(*, init_fn: Callable[[jax.Array, PyTree], PyTree], loss_fn: LossFn,
        tx: optax.GradientTransformation, num_steps: int, seeds: Sequence[int],
        member_data: PyTree = None, chunk_size: int = 100, workdir: Optional[Workdir] = None,
        checkpoint_every: int = 1, log_every: int = 1, shard: bool = True,
        member_block: Optional[int] = None, on_chunk: Optional[Callable[[int], None]] = None,
        name: str = "train", max_loss: Optional[float] = None,
        max_grad_norm: Optional[float] = None, shared_data: PyTree = None,
        tensorboard: bool = True) -> FitResult:
    """Train ``len(seeds)`` networks together.

    Steps: initialise every member or restore the newest intact checkpoint (and drop
    the metric rows logged after it); then, chunk by chunk, run ``chunk_size`` steps in
    one compiled program, check the losses and gradient norms (finite, within
    ``max_loss`` / ``max_grad_norm``), log the metrics (averaged over ``log_every``
    steps) and save a checkpoint (only of finite parameters). A progress line (absl
    INFO: step, loss, steps/s, ETA, and once the first chunk's time, which includes
    compiling) is logged after the first two chunks, the last, and otherwise at most
    every 10 s.

    Args:
      init_fn: ``(key, data) -> params`` for one member.
      loss_fn: see module docstring.
      tx: optax optimiser shared by all members.
      num_steps: total training steps per member.
      seeds: one int per member (repeat a seed across arms for paired inits).
      member_data: pytree with leading axis M = len(seeds), or None.
      shared_data: pytree every member reads whole (e.g. the training set, with
        per-member index schedules in ``member_data``), held once per device; or
        None. ``loss_fn`` then gets ``(member slice, shared_data)`` as its data.
      chunk_size: steps per compiled ``lax.scan`` chunk (host sync once per chunk).
      workdir: if given, ``metrics.jsonl`` rows and orbax checkpoints (in
        ``checkpoints/<name>``) are written and an existing checkpoint is resumed.
      checkpoint_every: save every this many chunks (and always at the end).
      log_every: record one metrics row every this many steps (averaged over
        the steps in between).
      shard: split the member axis over devices when there are several.
      member_block: run each device's members in sequential blocks of at most this
        many (cache blocking, see :func:`make_chunk_fn`); ``None``: one vmap over all;
        ``"auto"``: the fastest of a few sizes, timed on this program and machine when
        the fit starts and cached (:func:`tune_member_block`; the choice is logged).
        Same updates either way (up to float rounding of batched kernels).
      on_chunk: called with the completed step after every chunk (after saving);
        used by tests to simulate an interruption.
      name: checkpoint sub-directory and metrics tag, to keep several fits in one
        workdir apart.
      max_loss: stop when a member's loss exceeds this (None: only non-finite stops).
      max_grad_norm: stop when a member's gradient norm exceeds this (None: only
        non-finite stops).
      tensorboard: with a workdir, also write every metrics row as TensorBoard scalars
        (:mod:`gbi_jax.tensorboard`, no TensorFlow needed) under
        ``<workdir>/tensorboard/<name>/``: one run per member (``seed_<s>``, or
        ``member_<i>_seed_<s>`` when members share a seed) and a run ``mean`` with the
        member means and the timings (``perf/steps_per_sec``, ``perf/eta_s``,
        ``perf/first_chunk_s``, ``perf/compile_s``), tags named as the metrics. The
        files are rewritten from ``metrics.jsonl`` when the fit (re)starts, so after a
        resume they hold the same steps as an uninterrupted run; only process 0 writes.

    Raises:
      ValueError: bad arguments (each message names the argument).
      DivergenceError: (a :class:`NonFiniteLossError`) a loss or gradient norm became
        non-finite or exceeded its bound, or the parameters became non-finite; names
        the step, member and seed and which checkpoint exists. The state of that chunk
        is discarded and not saved; the last checkpoint is kept.
      IncompatibleCheckpointError: the workdir's checkpoint holds another model.
      CorruptWorkdirError: ``metrics.jsonl`` has a garbled line in the middle.
    """
    seeds = _check_fit_args(num_steps, chunk_size, log_every, checkpoint_every, member_block,
                            seeds, member_data, max_loss, max_grad_norm)
    m = len(seeds)
    keys = member_keys(seeds)
    state, start, manager, restored = _init_or_restore(
        _init_states(init_fn, tx, keys, member_data), workdir, name)
    if start > num_steps:
        raise ValueError(f"Checkpoint step {start} is beyond num_steps={num_steps}.")

    program = _placed_program(loss_fn, tx, state, keys, member_data, shared_data,
                              chunk_size=min(chunk_size, num_steps), member_block=member_block,
                              shard=shard, name=name, tune=start < num_steps,
                              probe_steps=min(chunk_size, num_steps, 50))
    if program.member_block_note:
        logging.warning("[%s] %s", name, program.member_block_note)
    state, keys, member_data = program.state, program.keys, program.member_data
    shared_data, sharded, chunk_fn = program.shared_data, program.sharded, program.chunk_fn
    where = f"{workdir.checkpoint_dir}/{name}" if workdir is not None else None
    runs = member_runs(seeds)
    board = (_start_board(workdir, name, runs, start)
             if tensorboard and workdir is not None and workdir.writer else None)
    steps_log, hist = [], {}
    step = start
    last_saved = start if restored else None
    progress = _Progress(name, num_steps, m)
    chunk_index = 0
    limit = jnp.asarray(num_steps, jnp.int32)
    # The device never waits for the host: chunk k + 1 is dispatched before chunk k's
    # metrics are read (its input state is donated, so a state that is to be saved is
    # copied first, on device), and checkpoints are written in the background.
    pending = chunk_fn(state, member_data, keys, limit, shared_data) if step < num_steps else None
    try:
        while step < num_steps:
            size = min(chunk_size, num_steps - step)
            new_state, metrics_dev = pending
            next_step = step + size
            save = workdir is not None and ((chunk_index + 1) % checkpoint_every == 0
                                            or next_step == num_steps)
            if next_step < num_steps:
                kept = jax.tree_util.tree_map(jnp.copy, new_state) if save else None
                pending = chunk_fn(new_state, member_data, keys, limit, shared_data)
                new_state = kept
            metrics = {k: np.asarray(v)[:m, :size] for k, v in _host(metrics_dev).items()}
            arrived = time.perf_counter()  # the chunk's steps are done
            _check_divergence(metrics, step=step, seeds=seeds, name=name,
                              last_saved=last_saved, where=where, max_loss=max_loss,
                              max_grad_norm=max_grad_norm)
            state = new_state
            rows = _log_rows(metrics, step, log_every)
            if workdir is None:  # with a workdir the history is read back from metrics.jsonl
                for row_step, row in rows:
                    steps_log.append(row_step)
                    for k, v in row.items():
                        hist.setdefault(k, []).append(v)
            step = next_step
            chunk_index += 1
            if workdir is not None:
                if save:
                    _check_params(state.params, step=step, seeds=seeds, name=name,
                                  last_saved=last_saved, where=where)
                logged = [_metrics_row(name, s, row) for s, row in rows]
                workdir.append_metrics(logged)
                if save:
                    _save(manager, step, _unpadded(state, m))
                    last_saved = step
            perf = progress.chunk_done(step, metrics["loss"], now=arrived)
            if board is not None:  # after metrics.jsonl, which a restart rewrites these from
                events = _board_events(name, logged, runs)
                events[MEAN_RUN][-1][1].update(perf)  # the chunk's last row is at ``step``
                for run, run_events in events.items():
                    for row_step, scalars in run_events:
                        board.add(run, row_step, scalars)
                board.flush()
            if on_chunk is not None:
                on_chunk(step)
    finally:
        if manager is not None:
            _finish_saves(manager)

    history = {k: np.stack(v) for k, v in hist.items()} if hist else {}
    if workdir is not None:
        _barrier(f"fit_{name}_logged")  # process 0 has written every row
        steps_log, history = _logged_history(workdir, name)
    if sharded and _multiprocess():
        # Every process gets the whole unpadded state on its first local device, so
        # evaluation code runs unchanged (each process the same; process 0 writes).
        state = jax.device_put(_unpadded(state, m), jax.local_devices()[0])
    elif sharded:
        # Hand back single-device arrays without the padding members. Slicing a
        # member-sharded array leaves it replicated over the host devices, and later
        # jitted work on it then runs as an SPMD program; a ridge solve (LAPACK custom
        # calls) under that partitioning was seen to hang on a 2-core host. Only
        # training needs the split, so the result is gathered here.
        state = jax.device_put(jax.tree_util.tree_map(lambda a: a[:m], state),
                               jax.devices()[0])
    return FitResult(state, np.asarray(steps_log), history, start)


def unstack(tree: PyTree, index: int) -> PyTree:
    """The ``index``-th member of a stacked pytree."""
    return jax.tree_util.tree_map(lambda a: a[index], tree)
