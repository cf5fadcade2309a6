"""The GBI toy task: a 1-D stream of Gaussian observations whose context switches
between blocks (Hummos et al. 2024, Sec. 3.1).

Each context ``c`` has a mean and a standard deviation; ``x_t ~ N(mu_c, sd_c^2)``.
Block lengths are ``clip(Geometric(p), min_len, max_len)`` (authors' defaults:
``p = 1/20`` clipped to ``[20, 50]``). Consecutive blocks never repeat a context
(with two contexts they alternate).

Everything is pure JAX and shape-static: a stream of ``length`` steps is made
from a key, so streams for many seeds are made with ``vmap`` on device.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gbi_jax.validation import check_int, check_range, require


class Stream(NamedTuple):
    """x: float32[T] observations; context: int32[T]; block: int32[T] block index."""

    x: jax.Array
    context: jax.Array
    block: jax.Array


@dataclasses.dataclass(frozen=True)
class SwitchingGaussianTask:
    """Contexts and block statistics of the switching-Gaussian stream.

    Attributes:
      means, stds: one entry per context (same length K >= 2; stds > 0).
      block_p: success probability of the geometric block length (0 < p <= 1).
      min_block, max_block: clipping range of block lengths (1 <= min <= max).
      contexts: which context indices may occur (default: all). Used to hold a
        combination out of training (the recomposition test).
    """

    means: Sequence[float] = (0.2, 0.8)
    stds: Sequence[float] = (0.2, 0.2)
    block_p: float = 0.05
    min_block: int = 20
    max_block: int = 50
    contexts: Sequence[int] | None = None

    def __post_init__(self):
        """Check every field; a bad one raises ``FieldError`` (a ``ValueError``) naming it
        as ``SwitchingGaussianTask.<field>``."""
        name = "SwitchingGaussianTask."
        require(len(self.means) >= 2, name + "means",
                f"needs at least 2 contexts (K >= 2), got {len(self.means)}.")
        require(len(self.stds) == len(self.means), name + "stds",
                f"must have the same length as means ({len(self.means)}), got "
                f"{len(self.stds)}.")
        require(all(s > 0 for s in self.stds), name + "stds",
                f"must all be > 0, got {tuple(self.stds)}.")
        check_range(name + "block_p", self.block_p, 0.0, 1.0, low_open=True)
        check_int(name + "min_block", self.min_block, 1)
        check_int(name + "max_block", self.max_block, 1)
        require(self.max_block >= self.min_block, name + "max_block",
                f"must be >= min_block ({self.min_block}), got {self.max_block}.")
        allowed = self.allowed_contexts
        require(len(allowed) >= 2 and all(0 <= c < len(self.means) for c in allowed),
                name + "contexts", f"must list >= 2 valid context indices in "
                f"[0, {len(self.means)}), got {allowed}.")

    @property
    def num_contexts(self) -> int:
        return len(self.means)

    @property
    def allowed_contexts(self) -> tuple[int, ...]:
        return tuple(range(len(self.means))) if self.contexts is None else tuple(self.contexts)

    @property
    def mean_block_length(self) -> float:
        """Exact mean block length (steps), :func:`mean_block_length` of this task."""
        return float(mean_block_length(self.min_block, self.max_block, self.block_p))

    @property
    def hazard(self) -> float:
        """Per-step switch probability used by the ideal observer (1 / mean block length)."""
        return 1.0 / self.mean_block_length

    def block_lengths(self, key: jax.Array, num_blocks: int) -> jax.Array:
        g = jax.random.geometric(key, self.block_p, (num_blocks,))
        return jnp.clip(g, self.min_block, self.max_block).astype(jnp.int32)

    def block_contexts(self, key: jax.Array, num_blocks: int) -> jax.Array:
        """Context of every block, never repeating the previous block's context."""
        allowed = jnp.asarray(self.allowed_contexts, jnp.int32)
        n = allowed.shape[0]
        k0, k1 = jax.random.split(key)
        first = jax.random.randint(k0, (), 0, n)
        # Shift by 1..n-1 positions inside the allowed list: never the same context.
        shifts = jax.random.randint(k1, (num_blocks - 1,), 1, n)
        idx = jnp.concatenate([first[None], (first + jnp.cumsum(shifts)) % n])
        return allowed[idx]

    def sample(self, key: jax.Array, length: int) -> Stream:
        """A stream of ``length`` steps (enough blocks are drawn to cover it)."""
        num_blocks = length // self.min_block + 1
        k_len, k_ctx, k_obs = jax.random.split(key, 3)
        ends = jnp.cumsum(self.block_lengths(k_len, num_blocks))
        t = jnp.arange(length)
        block = jnp.searchsorted(ends, t, side="right").astype(jnp.int32)
        context = self.block_contexts(k_ctx, num_blocks)[block]
        means = jnp.asarray(self.means, jnp.float32)[context]
        stds = jnp.asarray(self.stds, jnp.float32)[context]
        x = means + stds * jax.random.normal(k_obs, (length,))
        return Stream(x, context, block)

    def sample_block(self, key: jax.Array, context: int | jax.Array, length: int) -> Stream:
        """``length`` observations all from one ``context`` (a single test block)."""
        context = jnp.asarray(context, jnp.int32)
        x = (jnp.asarray(self.means, jnp.float32)[context]
             + jnp.asarray(self.stds, jnp.float32)[context] * jax.random.normal(key, (length,)))
        return Stream(x, jnp.full((length,), context, jnp.int32),
                      jnp.zeros((length,), jnp.int32))


def mean_block_length(min_len, max_len, p):
    """Mean of ``clip(G, min_len, max_len)`` with ``G ~ Geometric(p)`` on {1, 2, ...}.

    Uses ``E[clip(G, a, b)] = a + sum_{n=a}^{b-1} P(G > n)`` with
    ``P(G > n) = (1 - p)^n``, i.e. ``a + (1 - p)^a (1 - (1 - p)^(b - a)) / p``.

    Args:
      min_len: a >= 1, the shortest block (steps).
      max_len: b >= a, the longest block; ``None`` for no upper clip.
      p: success probability in ``(0, 1]`` (the task's default is 1/20 with
        ``[min_len, max_len] = [20, 50]``, mean about 25.6 steps). May be traced.

    Returns:
      The mean block length (steps): a float64 NumPy scalar for Python / NumPy
      arguments, a JAX scalar (default float dtype) for traced or JAX-array ``p``.
    """
    if max_len is not None and isinstance(max_len, (int, float)) and isinstance(
            min_len, (int, float)):
        require(max_len >= min_len, "max_len", f"must be >= min_len ({min_len}), got {max_len}.")
    check_range("p", p, 0.0, 1.0, low_open=True)
    xp = np if isinstance(p, (int, float, np.number, np.ndarray)) else jnp
    q = 1.0 - (xp.asarray(p, dtype=np.float64) if xp is np
               else jnp.asarray(p, dtype=jnp.result_type(float)))
    tail = q ** min_len / (1.0 - q)
    if max_len is not None:
        tail = tail * (1.0 - q ** (max_len - min_len))
    return min_len + tail


def compositional_code(means: Sequence[float], stds: Sequence[float],
                       inactive: float = 0.0) -> jax.Array:
    """Two-part latent code of (mean, std) contexts: ``[K, n_means + n_stds]``.

    Unit ``i`` of the first part is on for the i-th distinct mean, unit ``j`` of
    the second part for the j-th distinct std; off units take ``inactive`` (the
    authors' code uses 0.3, default here 0). Distinct values are sorted.
    """
    mu_vals = sorted(set(float(m) for m in means))
    sd_vals = sorted(set(float(s) for s in stds))
    rows = []
    for m, s in zip(means, stds):
        a = [1.0 if float(m) == v else inactive for v in mu_vals]
        b = [1.0 if float(s) == v else inactive for v in sd_vals]
        rows.append(a + b)
    return jnp.asarray(rows, jnp.float32)
