"""Training: explicit state, jitted steps, scan-chunked fit loop over many networks.

A *member* is one network being trained. ``fit`` trains M members at once:
their states are stacked on a leading axis and every step is ``vmap``ped, so
seeds, experimental arms (different data streams) and hyper-parameter values
that only change data run as one compiled program. When the process sees more
than one device (e.g. ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` on
a 2-core CPU), the member axis is sharded across devices; ``member_block`` runs
each device's members in sequential cache-sized blocks (speed only).

Randomness: member ``m`` uses ``key_m = PRNGKey(seeds[m])``; its init key and
the key of step ``s`` are ``fold_in``s of it, so results do not depend on the
chunking and a resumed run reproduces an uninterrupted one exactly.

The loss function signature is::

    loss_fn(params, data, key, step) -> (loss, metrics: dict[str, scalar])

where ``data`` is the member's slice of ``member_data`` (any pytree with a
leading member axis, or ``None``) and ``step`` the global step (int32).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from gbi_jax.workdir import Workdir

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


def _check_member_block(member_block) -> None:
    if member_block is None:
        return
    if isinstance(member_block, bool) or not isinstance(member_block, (int, np.integer)) \
            or member_block < 1:
        raise ValueError(f"member_block must be a positive integer or None, got {member_block!r}.")


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


def make_chunk_fn(loss_fn: LossFn, tx: optax.GradientTransformation, chunk_size: int, *,
                  member_block: Optional[int] = None,
                  mesh: Optional[jax.sharding.Mesh] = None):
    """Jitted ``(states[M], data[M], keys[M], limit) -> (states, metrics[M, chunk])``.

    ``chunk_size`` steps run inside one ``lax.scan``; the member axis is ``vmap``ped.
    Steps at or beyond ``limit`` (a traced int) leave the state unchanged, so a
    last, shorter chunk reuses the same compiled program.

    Cache blocking (``member_block``): the members of each device are split into
    blocks of at most ``member_block`` (:func:`member_blocks`), and the blocks run
    their whole chunk one after the other (chained by ``optimization_barrier``, so
    XLA cannot interleave them) instead of vmapping every step over all members at
    once. A step's activations then scale with the block, not with all members, and
    stay in the core's cache: on the 2-core host, 13 disentangling RNNs per core ran
    about 1.2x faster in blocks of 5/4/4 than as one vmap of 13, with bitwise-equal
    parameters (``python -m benchmarks.disentangle_train``). With ``mesh`` (a 1-D
    mesh whose axis holds the member axis, as :func:`fit` builds it) the blocking
    runs per device inside ``shard_map``; the mesh size must then divide ``M``.
    Every member gets the same updates whatever the blocking; they are bitwise equal
    when XLA's kernels round alike for the different batch sizes (as for the
    disentangling RNN), and otherwise differ by float rounding only.
    """
    train_step = make_train_step(loss_fn, tx)

    def one_member(state, data, key, limit):
        def body(s, _):
            new, metrics = train_step(s, data, key)
            keep = s.step < limit
            s = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, s)
            return s, metrics

        return jax.lax.scan(body, state, None, length=chunk_size)

    members = jax.vmap(one_member, in_axes=(0, 0, 0, None))
    _check_member_block(member_block)
    if member_block is None:
        return jax.jit(members, donate_argnums=(0,))

    def blocked(states, data, keys, limit):
        n = keys.shape[0]
        outs, prev = [], None
        for a, b in member_blocks(n, member_block):
            part = jax.tree_util.tree_map(lambda x: x[a:b], (states, data, keys))
            if prev is not None:  # block k starts after block k - 1 has finished
                part, prev = jax.lax.optimization_barrier((part, prev))
            prev = members(*part, limit)
            outs.append(prev)
        return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *outs)

    fn = blocked
    if mesh is not None:
        spec = jax.sharding.PartitionSpec(mesh.axis_names[0])
        fn = jax.shard_map(blocked, mesh=mesh, in_specs=(spec, spec, spec,
                                                          jax.sharding.PartitionSpec()),
                           out_specs=spec, check_vma=False)
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


def _pad_members(tree: PyTree, multiple: int) -> PyTree:
    """Repeat the last member so the member axis divides ``multiple``."""
    def pad(a):
        extra = (-a.shape[0]) % multiple
        return a if extra == 0 else jnp.concatenate([a, jnp.repeat(a[-1:], extra, 0)])

    return jax.tree_util.tree_map(pad, tree)


def member_mesh() -> jax.sharding.Mesh:
    """The 1-D mesh ``("members",)`` over all local devices that :func:`fit` shards on."""
    return jax.sharding.Mesh(np.array(jax.devices()), ("members",))


def _shard_members(tree: PyTree) -> PyTree:
    """Place the (padded) member axis across all local devices."""
    mesh = member_mesh()
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("members"))
    return jax.device_put(tree, sharding)


class _quiet_orbax:
    """Orbax logs every save at INFO through absl; keep our progress lines readable."""

    def __enter__(self):
        self._level = logging.get_verbosity()
        logging.set_verbosity(logging.WARNING)

    def __exit__(self, *exc):
        logging.set_verbosity(self._level)


def _checkpoint_manager(path: str, max_to_keep: int = 2):
    import orbax.checkpoint as ocp

    with _quiet_orbax():
        return ocp.CheckpointManager(
            path, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                   enable_async_checkpointing=False))


def _save(manager, step: int, state: TrainState) -> None:
    import orbax.checkpoint as ocp

    with _quiet_orbax():
        manager.save(step, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()


def _restore(manager, abstract: TrainState) -> tuple[int, TrainState]:
    import orbax.checkpoint as ocp

    step = manager.latest_step()
    if step is None:
        return 0, None
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract)
    try:
        with _quiet_orbax():
            restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    except Exception as e:  # orbax raises several types for a tree mismatch
        raise ValueError(
            f"Checkpoint at step {step} in {manager.directory} does not match the model/"
            f"optimiser of this config ({type(e).__name__}: {str(e)[:300]}). Use a new "
            "--workdir, or delete the checkpoints to start over.") from None
    return step, restored


def _check_fit_args(num_steps, chunk_size, log_every, checkpoint_every, member_block,
                    seeds: Sequence[int], member_data: PyTree) -> list[int]:
    """Raise ValueError naming the first bad argument of :func:`fit`; return the int seeds."""
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}.")
    if log_every < 1 or checkpoint_every < 1:
        raise ValueError("log_every and checkpoint_every must be >= 1.")
    _check_member_block(member_block)
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


def _init_or_restore(state: TrainState, workdir: Optional[Workdir],
                     name: str) -> tuple[TrainState, int, Any]:
    """``(state, start_step, manager)``: the latest checkpoint of ``workdir/checkpoints/<name>``
    if there is one (metric rows logged after it are dropped), else ``state`` at step 0."""
    if workdir is None:
        return state, 0, None
    manager = _checkpoint_manager(f"{workdir.checkpoint_dir}/{name}")
    with _quiet_orbax():
        start, restored = _restore(manager, state)
    if restored is not None:
        state = restored
        logging.info("[%s] resumed from checkpoint at step %d", name, start)
        workdir.truncate_metrics(start, key=f"{name}_step")
    return state, start, manager


def _run_chunk(chunk_fn, state: TrainState, member_data: PyTree, keys: jax.Array, limit,
               num_members: int, size: int) -> tuple[TrainState, dict[str, np.ndarray]]:
    """One compiled chunk; its metrics on host as ``[M, size]`` (one sync per chunk; the
    padding members and the padded steps of a short last chunk dropped)."""
    new_state, metrics = chunk_fn(state, member_data, keys, limit)
    metrics = {k: np.asarray(v)[:num_members, :size]
               for k, v in jax.device_get(metrics).items()}
    return new_state, metrics


def _check_finite(loss: np.ndarray, *, step: int, seeds: Sequence[int], name: str,
                  last_saved: int, where: str) -> None:
    """Raise :class:`NonFiniteLossError` naming the first bad step and member of a chunk
    whose losses ``[M, size]`` start after ``step``."""
    if np.all(np.isfinite(loss)):
        return
    bad = np.argwhere(~np.isfinite(loss))
    member, offset = int(bad[0][0]), int(bad[bad[:, 0] == bad[0][0]][:, 1].min())
    raise NonFiniteLossError(
        f"[{name}] non-finite loss at step {step + offset + 1} (member {member}, seed "
        f"{seeds[member]}). Training stopped; the last good checkpoint (step "
        f"{last_saved}) is kept ({where}). Lower the learning rate or check the data.")


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


def _log_progress(name: str, step: int, num_steps: int, loss: np.ndarray, rate: float) -> None:
    logging.info("[%s] step %d/%d  loss %.5f  %.0f steps/s x %d nets  ETA %.0fs", name,
                 step, num_steps, float(np.mean(loss[:, -1])), rate, loss.shape[0],
                 (num_steps - step) / max(rate, 1e-9))


def fit(*, init_fn: Callable[[jax.Array, PyTree], PyTree], loss_fn: LossFn,
        tx: optax.GradientTransformation, num_steps: int, seeds: Sequence[int],
        member_data: PyTree = None, chunk_size: int = 100, workdir: Optional[Workdir] = None,
        checkpoint_every: int = 1, log_every: int = 1, shard: bool = True,
        member_block: Optional[int] = None, on_chunk: Optional[Callable[[int], None]] = None,
        name: str = "train") -> FitResult:
    """Train ``len(seeds)`` networks together.

    Steps: initialise every member or restore the latest checkpoint; then, chunk by
    chunk, run ``chunk_size`` steps in one compiled program, check the losses are
    finite, log the metrics (averaged over ``log_every`` steps) and save a checkpoint.

    Args:
      init_fn: ``(key, data) -> params`` for one member.
      loss_fn: see module docstring.
      tx: optax optimiser shared by all members.
      num_steps: total training steps per member.
      seeds: one int per member (repeat a seed across arms for paired inits).
      member_data: pytree with leading axis M = len(seeds), or None.
      chunk_size: steps per compiled ``lax.scan`` chunk (host sync once per chunk).
      workdir: if given, ``metrics.jsonl`` rows and orbax checkpoints (in
        ``checkpoints/<name>``) are written and an existing checkpoint is resumed.
      checkpoint_every: save every this many chunks (and always at the end).
      log_every: record one metrics row every this many steps (averaged over
        the steps in between).
      shard: split the member axis over devices when there are several.
      member_block: run each device's members in sequential blocks of at most this
        many (cache blocking, see :func:`make_chunk_fn`); ``None``: one vmap over all.
        Same updates either way (up to float rounding of batched kernels).
      on_chunk: called with the completed step after every chunk (after saving);
        used by tests to simulate an interruption.
      name: checkpoint sub-directory and metrics tag, to keep several fits in one
        workdir apart.

    Raises:
      ValueError: bad arguments (each message names the argument).
      NonFiniteLossError: a loss became NaN/inf; names the step and member. The
        state of that chunk is discarded, the last checkpoint is kept.
    """
    seeds = _check_fit_args(num_steps, chunk_size, log_every, checkpoint_every, member_block,
                            seeds, member_data)
    m = len(seeds)
    keys = member_keys(seeds)
    state, start, manager = _init_or_restore(_init_states(init_fn, tx, keys, member_data),
                                             workdir, name)
    if start > num_steps:
        raise ValueError(f"Checkpoint step {start} is beyond num_steps={num_steps}.")

    n_dev = jax.device_count()
    sharded = shard and n_dev > 1
    if sharded:
        # Pad with copies of the last member (their results are dropped) and split
        # the member axis over devices: one core per device on a CPU host.
        state, keys, member_data = _shard_members(
            _pad_members((state, keys, member_data), n_dev))

    chunk_fn = make_chunk_fn(loss_fn, tx, min(chunk_size, num_steps), member_block=member_block,
                             mesh=member_mesh() if sharded else None)
    where = f"{workdir.checkpoint_dir}/{name}" if workdir is not None else \
        "no workdir, nothing saved"
    steps_log, hist = [], {}
    last_saved = step = start
    t0 = time.time()
    chunk_index = 0
    limit = jnp.asarray(num_steps, jnp.int32)
    while step < num_steps:
        size = min(chunk_size, num_steps - step)
        new_state, metrics = _run_chunk(chunk_fn, state, member_data, keys, limit, m, size)
        _check_finite(metrics["loss"], step=step, seeds=seeds, name=name,
                      last_saved=last_saved, where=where)
        state = new_state
        rows = _log_rows(metrics, step, log_every)
        for row_step, row in rows:
            steps_log.append(row_step)
            for k, v in row.items():
                hist.setdefault(k, []).append(v)
        step += size
        chunk_index += 1
        if workdir is not None:
            workdir.append_metrics([_metrics_row(name, s, row) for s, row in rows])
            if chunk_index % checkpoint_every == 0 or step == num_steps:
                _save(manager, step, jax.tree_util.tree_map(lambda a: a[:m], state))
                last_saved = step
        _log_progress(name, step, num_steps, metrics["loss"],
                      (step - start) / max(time.time() - t0, 1e-9))
        if on_chunk is not None:
            on_chunk(step)

    history = {k: np.stack(v) for k, v in hist.items()} if hist else {}
    if workdir is not None:
        steps_log, history = _logged_history(workdir, name)
    if sharded:
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
