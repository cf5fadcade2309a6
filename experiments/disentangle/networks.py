"""The networks of the disentangling experiments and their fast training path.

``Network(core, ...)`` gives ``init(key) -> params`` and
``apply(params, inputs [B, S, F], key=None, train=False) -> (out [B, S, N], hidden
[B, S, H])`` for

* ``"rnn"``: ``h_t = (1 - alpha) h_{t-1} + alpha relu(W_i u_t + b_i + W_r h_{t-1} + b_r)``
  (``alpha = 1``, the authors' setting, is a plain ReLU Elman RNN);
* ``"noleak"``: ``h_t = h_{t-1} + alpha relu(...)`` (the authors' non-leaky RNN);
* ``"lstm"``, ``"gru"``: the torch-parameterised cells of ``gbi_jax.models.recurrent``;
* ``"transformer"``: ``gbi_jax.models.CausalTransformer`` (dropout in training).

All readouts are ``Linear(H -> N)`` with PyTorch's default init ``U(+-1/sqrt(H))``;
the RNN uses the authors' two ``nn.Linear`` layers: input ``U(+-1/sqrt(F))``,
recurrent ``U(+-1/sqrt(H))`` (see ``rnn_input_init``).

Why a separate RNN path (performance, spec 6): the RNN is trained with a
hand-written backward pass (:func:`relu_rnn`, a ``custom_vjp``). The input drive
``W_i u_t + b`` and the readout are single large matmuls over all time steps; only
``h @ W_r`` is sequential, in the forward *and* the backward scan, and the weight
gradients ``dW_r = sum_t h_{t-1}^T dpre_t`` and ``dW_i = sum_t u_t^T dpre_t`` are one
matmul each after the backward scan instead of 22 small accumulating ones. Both
scans write their ``[H, B]`` slices feature-major into ``[H, S, B]`` buffers, so
those matmuls contract the minor ``S x B`` axis of both operands: XLA then needs no
transposed copies of the stacked states, and (measured) the trained parameters no
longer depend on how many networks are vmapped together (a batched dot over the
stacked ``[S, M, B, H]`` layout rounded differently for 5 and 13 networks).
``jax.grad`` of the plain scan (``custom_grad=False``) gives the same numbers
(tested) about 1.2x slower (measured on the 25-network Fig. 1 program).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gbi_jax.models import CausalTransformer, make_cell

CORES = ("rnn", "noleak", "lstm", "gru", "transformer")


def _uniform(key, shape, bound):
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


# ---------------------------------------------------------------------------
# ReLU recurrence with a hand-written backward pass.
# ---------------------------------------------------------------------------
def _rnn_scan(u, w_in, b, w_rec, decay, alpha, residuals):
    """Forward of :func:`relu_rnn` (also the plain-autodiff path, ``custom_grad=False``);
    with ``residuals`` also what its backward needs."""
    drive = u @ w_in + b  # [S, B, H]
    steps, batch, hid = drive.shape

    def body(carry, inp):
        h, prev_t = carry
        t, d = inp
        if residuals:  # h_{t-1}, feature-major, for the weight gradient
            prev_t = jax.lax.dynamic_update_slice(prev_t, h.T[:, None, :], (0, t, 0))
        pre = d + h @ w_rec
        act = jax.nn.relu(pre) if alpha == 1.0 else alpha * jax.nn.relu(pre)
        h = act if decay == 0.0 else decay * h + act
        return (h, prev_t), ((h, pre) if (residuals and decay != 0.0) else h)

    prev_t = jnp.zeros((hid, steps, batch) if residuals else (0, 0, 0), drive.dtype)
    carry0 = (jnp.zeros((batch, hid), drive.dtype), prev_t)
    (_, prev_t), ys = jax.lax.scan(body, carry0, (jnp.arange(steps), drive))
    return ys, prev_t


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def relu_rnn(u, w_in, b, w_rec, decay=0.0, alpha=1.0):
    """Hidden states ``[S, B, H]`` of the ReLU RNN driven by time-major inputs ``u [S, B, F]``.

    ``h_t = decay h_{t-1} + alpha relu(u_t W_i + b + h_{t-1} W_r)`` from ``h_0 = 0``;
    ``decay`` and ``alpha`` are static Python floats (``decay = 1 - alpha`` leaky,
    ``1`` non-leaky). The backward pass is hand-written (see the module docstring):
    the forward scan also writes ``h_{t-1}`` feature-major (``[H, S, B]``) and the
    backward scan writes ``dL/dpre`` the same way, so both weight gradients are single
    matmuls whose operands already have the contracted ``S x B`` axis minor (no
    transposed copies of the ``[S, B, H]`` stacks). For ``decay = 0`` the ReLU mask is
    read from ``h_t > 0`` instead of storing the pre-activations.
    """
    ys, _ = _rnn_scan(u, w_in, b, w_rec, decay, alpha, residuals=False)
    return ys


def _rnn_fwd(u, w_in, b, w_rec, decay, alpha):
    ys, prev_t = _rnn_scan(u, w_in, b, w_rec, decay, alpha, residuals=True)
    hs, pres = (ys, None) if decay == 0.0 else ys
    return hs, (hs, pres, prev_t, u, w_in, w_rec)


def _rnn_bwd(decay, alpha, res, g):
    hs, pres, prev_t, u, w_in, w_rec = res
    steps, batch, hid = hs.shape
    mask = (hs > 0) if decay == 0.0 else (pres > 0)
    w_t = w_rec.T

    def body(carry, inp):
        dh_next, dpre_t = carry
        t, gt, m = inp
        dh = dh_next + gt  # total dL/dh_t
        dpre = jnp.where(m, dh if alpha == 1.0 else alpha * dh, 0.0)
        dpre_t = jax.lax.dynamic_update_slice(dpre_t, dpre.T[:, None, :], (0, t, 0))
        back = dpre @ w_t
        return (back if decay == 0.0 else decay * dh + back, dpre_t), None

    carry0 = (jnp.zeros((batch, hid), hs.dtype), jnp.zeros((hid, steps, batch), hs.dtype))
    (_, dpre_t), _ = jax.lax.scan(body, carry0, (jnp.arange(steps), g, mask), reverse=True)
    d2 = dpre_t.reshape(hid, steps * batch)  # [H, S*B]
    u_t = jnp.transpose(u, (2, 0, 1)).reshape(u.shape[-1], steps * batch)  # [F, S*B]
    d_w_rec = jnp.einsum("hr,kr->hk", prev_t.reshape(hid, steps * batch), d2)
    d_w_in = jnp.einsum("fr,hr->fh", u_t, d2)
    d_u = jnp.einsum("hsb,fh->sbf", dpre_t, w_in)
    return d_u, d_w_in, d2.sum(1), d_w_rec


relu_rnn.defvjp(_rnn_fwd, _rnn_bwd)


@jax.custom_vjp
def linear(x, w, b):
    """``x @ w + b`` over leading axes (``x [..., K]``, ``w [K, N]``), for the readouts.

    Same values and gradients as autodiff; only the weight gradient's form differs:
    it is computed as ``(g^T x)`` of shape ``[N, K]`` and transposed afterwards, with an
    ``optimization_barrier`` so XLA does not fold the transpose back into the dot. With
    ``N = 24 < K = 64`` (the Fig. 1 readout) XLA's CPU dot with the wide dimension minor
    ran that gradient 2.3x faster (0.35 vs 0.81 ms of a 14.5 ms step per core) and the
    whole vmapped training step about 6 % faster (in-process A/B, bitwise-equal
    parameters after 700 steps; ``python -m benchmarks.disentangle_train --profile``).
    The same reordering of the RNN's input- and recurrent-weight gradients
    (``[64, 41]``, ``[64, 64]``) was measured slower or equal and is not used.
    """
    return x @ w + b


def _lin_fwd(x, w, b):
    return x @ w + b, (x, w)


def _lin_bwd(res, g):
    x, w = res
    k, n = w.shape
    x2, g2 = x.reshape(-1, k), g.reshape(-1, n)
    d_wt = jax.lax.optimization_barrier(jnp.einsum("rn,rk->nk", g2, x2))  # [N, K]
    return g @ w.T, d_wt.T, g2.sum(0)


linear.defvjp(_lin_fwd, _lin_bwd)


# ---------------------------------------------------------------------------
# The network wrapper.
# ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Network:
    """One architecture of the paper with a linear readout (see module docstring).

    Attributes:
      core: one of :data:`CORES`.
      input_size: F.
      out_features: readout width (the padded ``max_tasks``).
      hidden: H (64).
      alpha: RNN step size ``dt / tau`` (``rnn`` / ``noleak``; 1 = authors).
      rnn_input_init: ``"fan_in"`` (default, the authors' ``nn.Linear`` input layer)
        draws ``W_i, b_i`` from ``U(+-1/sqrt(F))``; ``"hidden"`` from ``U(+-1/sqrt(H))``
        (``torch.nn.RNN`` and ``gbi_jax.models.RNNCell``).
      custom_grad: use the hand-written backward pass of the RNN (``False``: plain
        autodiff of the scan; same numbers).
      transformer: ``dict`` of :class:`CausalTransformer` fields (width, layers, heads,
        mlp, dropout).
    """

    core: str
    input_size: int
    out_features: int
    hidden: int = 64
    alpha: float = 1.0
    rnn_input_init: str = "fan_in"
    custom_grad: bool = True
    transformer: tuple = ()

    def __post_init__(self):
        if self.core not in CORES:
            raise ValueError(f"model.core must be one of {CORES}, got {self.core!r}.")
        if self.hidden < 1:
            raise ValueError(f"model.hidden must be >= 1, got {self.hidden}.")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"model.alpha must be in (0, 1], got {self.alpha}.")
        if self.rnn_input_init not in ("hidden", "fan_in"):
            raise ValueError("model.rnn_input_init must be 'hidden' or 'fan_in', got "
                             f"{self.rnn_input_init!r}.")

    # -- construction -----------------------------------------------------------
    @property
    def is_rnn(self) -> bool:
        return self.core in ("rnn", "noleak")

    def _transformer(self) -> CausalTransformer:
        kw = dict(self.transformer)
        kw.setdefault("width", self.hidden)
        return CausalTransformer(self.out_features, **kw)

    def _flax_core(self):
        return make_cell(self.core, self.hidden, name="core")

    def init(self, key: jax.Array) -> dict:
        h, f, n = self.hidden, self.input_size, self.out_features
        k_core, k_wo, k_bo = jax.random.split(key, 3)
        bh = 1.0 / np.sqrt(h)
        readout = {"kernel": _uniform(k_wo, (h, n), bh), "bias": _uniform(k_bo, (n,), bh)}
        if self.is_rnn:
            ks = jax.random.split(k_core, 4)
            bi = bh if self.rnn_input_init == "hidden" else 1.0 / np.sqrt(f)
            return {"w_in": _uniform(ks[0], (f, h), bi), "b_in": _uniform(ks[1], (h,), bi),
                    "w_rec": _uniform(ks[2], (h, h), bh), "b_rec": _uniform(ks[3], (h,), bh),
                    "readout": readout}
        if self.core == "transformer":
            x = jnp.zeros((1, 2, f))
            params = self._transformer().init(k_core, x)["params"]
            return dict(params)
        cell = self._flax_core()
        variables = cell.init(k_core, cell.initial_state(()), jnp.zeros((f,)))
        return {"core": variables["params"], "readout": readout}

    # -- application --------------------------------------------------------------
    def rnn_step(self, params: dict, h: jax.Array, u: jax.Array) -> jax.Array:
        """One step ``F(h, u)`` of the ReLU RNN (for fixed points and Jacobians)."""
        pre = u @ params["w_in"] + params["b_in"] + h @ params["w_rec"] + params["b_rec"]
        decay = 1.0 - self.alpha if self.core == "rnn" else 1.0
        return decay * h + self.alpha * jax.nn.relu(pre)

    def apply(self, params: dict, inputs: jax.Array, *, key: Optional[jax.Array] = None,
              train: bool = False) -> tuple[jax.Array, jax.Array]:
        """``inputs [B, S, F] -> (readout [B, S, out], hidden [B, S, H])``."""
        if self.core == "transformer":
            rngs = {"dropout": key} if (train and key is not None) else None
            out, hidden = self._transformer().apply(
                {"params": params}, inputs, deterministic=not (train and key is not None),
                return_hidden=True, rngs=rngs)
            return out, hidden
        if self.is_rnn:
            decay = 1.0 - self.alpha if self.core == "rnn" else 1.0
            u = jnp.swapaxes(inputs, 0, 1)  # [S, B, F]
            bias = params["b_in"] + params["b_rec"]
            args = (u, params["w_in"], bias, params["w_rec"], float(decay), float(self.alpha))
            hs = relu_rnn(*args) if self.custom_grad else _rnn_scan(*args, residuals=False)[0]
            hidden = jnp.swapaxes(hs, 0, 1)
        else:
            cell = self._flax_core()
            step = lambda carry, u: cell.apply({"params": params["core"]}, carry, u)
            carry = cell.initial_state(inputs.shape[:1])
            _, hs = jax.lax.scan(step, carry, jnp.swapaxes(inputs, 0, 1))
            hidden = jnp.swapaxes(hs, 0, 1)
        out = linear(hidden, params["readout"]["kernel"], params["readout"]["bias"])
        return out, hidden
