"""A small ``training.fit`` run for tests/test_distributed.py, as one process of a
``jax.distributed`` program (``--num_processes`` > 1) or alone.

    python tests/distributed_fit.py --workdir=DIR --out=params.npz [--num_processes=2
        --process_id=i --port=P] [--die_at=STEP]

Trains 8 two-layer regression networks for 60 steps (chunks of 10, a checkpoint after
every chunk); process 0 saves the final parameters to ``--out``. ``--die_at`` kills the
process with SIGKILL right after the checkpoint of that step.
"""

import argparse
import os
import signal
import sys

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workdir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--num_processes", type=int, default=1)
    p.add_argument("--process_id", type=int, default=0)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--die_at", type=int, default=None)
    args = p.parse_args()

    import jax

    if args.num_processes > 1:
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                                   num_processes=args.num_processes,
                                   process_id=args.process_id)
    jax.config.update("jax_default_matmul_precision", "highest")
    import jax.numpy as jnp
    import optax

    from gbi_jax import training
    from gbi_jax.workdir import Workdir

    def init_fn(key, data):
        del data
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (3, 16)) * 0.5, "w2": jax.random.normal(k2, (16, 1))}

    def loss_fn(params, data, key, step):
        x = jax.random.normal(jax.random.fold_in(key, 1), (32, 3))
        y = jnp.sin(x @ data["a"])[:, None]
        pred = jnp.tanh(x @ params["w1"]) @ params["w2"]
        loss = jnp.mean((pred - y) ** 2)
        return loss, {"step_f": step.astype(jnp.float32)}

    data = {"a": jnp.linspace(-1.0, 1.0, 8 * 3).reshape(8, 3)}

    def on_chunk(step):
        if args.die_at is not None and step == args.die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    wd = Workdir(args.workdir)
    with wd.lock():
        result = training.fit(init_fn=init_fn, loss_fn=loss_fn, tx=optax.adam(1e-2),
                              num_steps=60, seeds=list(range(8)), member_data=data,
                              chunk_size=10, workdir=wd, checkpoint_every=1, log_every=5,
                              on_chunk=on_chunk)
    params = jax.tree_util.tree_map(np.asarray, result.state.params)
    assert all(a.shape[0] == 8 for a in params.values())
    if jax.process_index() == 0:
        np.savez(args.out, **params, history_loss=result.history["loss"])
    print(f"process {jax.process_index()} of {jax.process_count()}: "
          f"{jax.local_device_count()} local devices, started at step {result.resumed_from}, done",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
