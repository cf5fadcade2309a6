"""Deterministic shuffling and batching.

The order of epoch ``e`` under seed ``s`` is
``numpy.random.default_rng([s, e]).permutation(N)``: the same on every machine
and run, independent of how many epochs were drawn before, so a resumed run or a
run on another host sees the same batches. :func:`batch_indices` lays the epochs
end to end as an index table ``[num_steps, batch_size]`` that can be put on the
device and gathered from inside a compiled training loop; :func:`batches`
iterates host-side over numpy (or jax) batches of one epoch.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Optional

import numpy as np

from gbi_jax.validation import check_int as _check

__all__ = ["epoch_permutation", "batch_indices", "batches", "steps_per_epoch"]


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of ``epoch`` under ``seed`` (``int64[num_examples]``)."""
    num_examples = _check("num_examples", num_examples, 1)
    return np.random.default_rng([_check("seed", seed, 0), _check("epoch", epoch, 0)]) \
        .permutation(num_examples)


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    num_examples = _check("num_examples", num_examples, 1)
    batch_size = _check("batch_size", batch_size, 1)
    if drop_remainder:
        if batch_size > num_examples:
            raise ValueError(f"batch_size {batch_size} exceeds the {num_examples} examples "
                             "(with drop_remainder every batch would be dropped).")
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def batch_indices(num_examples: int, batch_size: int, num_steps: int, *, seed: int,
                  first_epoch: int = 0) -> np.ndarray:
    """Index table ``int32[num_steps, batch_size]`` over consecutive shuffled epochs.

    Step ``t`` uses epoch ``first_epoch + t // steps_per_epoch``; each epoch drops
    its last partial batch (every step has a full batch, so shapes are static).
    """
    num_steps = _check("num_steps", num_steps, 1)
    per_epoch = steps_per_epoch(num_examples, batch_size, drop_remainder=True)
    epochs = -(-num_steps // per_epoch)
    rows = [epoch_permutation(num_examples, seed, first_epoch + e)[:per_epoch * batch_size]
            .reshape(per_epoch, batch_size) for e in range(epochs)]
    return np.concatenate(rows)[:num_steps].astype(np.int32)


def batches(arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: Optional[int] = 0,
            epoch: int = 0, drop_remainder: bool = False,
            as_jax: bool = False) -> Iterator[dict[str, Any]]:
    """Iterate over one epoch of ``arrays`` (dict of equal-length arrays) in batches.

    Args:
      arrays: e.g. ``{"image": uint8[N, ...], "label": int32[N]}``; an
        :class:`~gbi_jax.data.ImageData` can be passed via ``as_arrays(data)``.
      batch_size: examples per batch.
      seed: shuffling seed; ``None`` keeps the stored order (evaluation).
      epoch: epoch number (a different order per epoch).
      drop_remainder: drop the last partial batch.
      as_jax: yield ``jax.Array`` instead of numpy arrays.
    """
    if not arrays:
        raise ValueError("batches needs at least one array.")
    sizes = {k: len(v) for k, v in arrays.items()}
    n = next(iter(sizes.values()))
    if any(s != n for s in sizes.values()):
        raise ValueError(f"arrays must share their first dimension, got {sizes}.")
    steps = steps_per_epoch(n, batch_size, drop_remainder)
    order = np.arange(n) if seed is None else epoch_permutation(n, seed, epoch)
    if as_jax:
        import jax.numpy as jnp
        convert = jnp.asarray
    else:
        convert = np.asarray
    for s in range(steps):
        index = order[s * batch_size:(s + 1) * batch_size]
        yield {k: convert(np.asarray(v)[index]) for k, v in arrays.items()}
