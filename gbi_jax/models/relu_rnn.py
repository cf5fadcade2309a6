"""The fast ReLU RNN: a hand-written backward pass, and a functional sequence model.

:func:`relu_rnn` runs ``h_t = decay h_{t-1} + alpha relu(u_t W_i + b + h_{t-1} W_r)`` from
``h_0 = 0`` over time-major inputs with a ``custom_vjp``. The input drive ``u_t W_i + b``
is one large matmul over all time steps; only ``h @ W_r`` is sequential, in the forward
*and* the backward scan, and the weight gradients ``dW_r = sum_t h_{t-1}^T dpre_t`` and
``dW_i = sum_t u_t^T dpre_t`` are one matmul each after the backward scan instead of one
small accumulating matmul per step. Both scans write their ``[H, B]`` slices
feature-major into ``[H, S, B]`` buffers, so those matmuls contract the minor ``S x B``
axis of both operands: XLA then needs no transposed copies of the stacked states, and the
trained parameters do not depend on how many networks are vmapped together. Plain
autodiff of the same scan (:func:`relu_rnn_autodiff`) gives the same numbers about 1.2x
slower on the 25-network Fig. 1 training program of the disentangling experiment
(``python -m benchmarks.disentangle_train``).

:func:`linear` is ``x @ w + b`` with a reordered weight gradient (faster readouts).

:class:`FastRNN` is a functional model (``init(key) -> params``,
``apply(params, inputs, z) -> outputs``) over these: core -> linear readout, with the
parameter tree of :class:`gbi_jax.models.RecurrentNetwork` (so parameters move freely
between the two), an explicit PRNG draw order, and the latent vocabulary of
``gbi_jax.models.latent``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from gbi_jax.models.latent import (broadcast_latent, check_latent_options, parse_z_injection,
                                   transform_latent)
from gbi_jax.models.recurrent import (RecurrentNetwork, check_alpha, check_core,
                                      check_weight_init, make_cell)
from gbi_jax.validation import check_int, require


# ---------------------------------------------------------------------------
# ReLU recurrence with a hand-written backward pass.
# ---------------------------------------------------------------------------
def _rnn_scan(u, w_in, b, w_rec, decay, alpha, residuals):
    """Forward of :func:`relu_rnn`; with ``residuals`` also what its backward needs."""
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


def relu_rnn_autodiff(u, w_in, b, w_rec, decay=0.0, alpha=1.0):
    """:func:`relu_rnn` with JAX's own gradient of the scan (same values, slower backward)."""
    return _rnn_scan(u, w_in, b, w_rec, decay, alpha, residuals=False)[0]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def relu_rnn(u, w_in, b, w_rec, decay=0.0, alpha=1.0):
    """Hidden states ``[S, B, H]`` of the ReLU RNN driven by time-major inputs ``u [S, B, F]``.

    ``h_t = decay h_{t-1} + alpha relu(u_t W_i + b + h_{t-1} W_r)`` from ``h_0 = 0``, with
    ``w_in [F, H]``, ``b [H]`` (input plus recurrent bias), ``w_rec [H, H]``; ``decay`` and
    ``alpha`` are static Python floats (``decay = 1 - alpha`` leaky, ``1`` non-leaky).
    The backward pass is hand-written (see the module docstring): the forward scan also
    writes ``h_{t-1}`` feature-major (``[H, S, B]``) and the backward scan writes
    ``dL/dpre`` the same way, so both weight gradients are single matmuls whose operands
    already have the contracted ``S x B`` axis minor. For ``decay = 0`` the ReLU mask is
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
    """``x @ w + b`` over leading axes (``x [..., K]``, ``w [K, N]``), for readouts.

    Same values and gradients as autodiff; only the weight gradient's form differs: it is
    computed as ``g^T x`` of shape ``[N, K]`` and transposed afterwards, with an
    ``optimization_barrier`` so XLA does not fold the transpose back into the dot. Why:
    with ``N < K`` (24 < 64 for the Fig. 1 readout) XLA's CPU dot with the wide dimension
    minor runs that gradient about 2x faster and the whole vmapped training step about
    6 % faster (``python -m benchmarks.disentangle_train --profile``).
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
# The functional sequence model.
# ---------------------------------------------------------------------------
def _uniform(key, shape, bound):
    return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def _layer(kernel, bias):
    return {"Dense_0": {"kernel": kernel, "bias": bias}}


# Stream of the latent's parameters (independent of the core's and the readout's draws).
_LATENT_STREAM = 0x7A


@dataclasses.dataclass(frozen=True)
class FastRNN:
    """Recurrent core -> ``Linear(H -> out)``, as pure functions of a parameter dict.

    ``apply(params, inputs [..., T, F], z) -> outputs [..., T, out_features]`` (and the
    hidden states ``[..., T, H]`` with ``return_hidden=True``). With ``core="rnn"`` the
    recurrence runs through :func:`relu_rnn` (hand-written backward pass; the activation
    is ReLU); ``"lstm"`` / ``"gru"`` scan the Flax cell with autodiff. Every readout is
    :func:`linear`.

    Parameters (:meth:`init`) have the tree of :class:`RecurrentNetwork` with the same
    fields (:meth:`as_flax`)::

        {"core": <cell layout, see gbi_jax.models.recurrent>,
         "readout": {"kernel": [H, out], "bias": [out]},
         "gate": {"kernel": [K, F]},                  # z_injection contains "gate"
         "film": {"Dense_0": {"kernel": [K, 2 F]}}}   # z_injection contains "film"

    where F is the core input width (``input_size``, plus K with ``concat``).

    Draw order of :meth:`init` (fixed; changing it changes every trained network):
    ``k_core, k_kernel, k_bias = split(key, 3)``; the readout kernel and bias are
    ``U(+-1/sqrt(H))`` from ``k_kernel`` and ``k_bias`` (PyTorch's ``nn.Linear``); for
    ``"rnn"`` ``split(k_core, 4)`` draws the input kernel, input bias, recurrent kernel and
    recurrent bias in that order; for ``"lstm"`` / ``"gru"`` ``k_core`` initialises the
    Flax cell. Latent parameters come from ``fold_in(key, 0x7A)``.

    Attributes:
      input_size: F, the width of ``inputs``.
      out_features: readout width.
      core: one of :data:`gbi_jax.models.CORES`.
      hidden: core width H.
      alpha: RNN step size ``dt / tau`` (``core="rnn"``).
      leaky: ``True``: ``h' = (1 - alpha) h + alpha relu(pre)``; ``False``:
        ``h' = h + alpha relu(pre)`` (``core="rnn"``).
      weight_init: the core's initialisation, one of ``"torch"``, ``"fan_in"``, ``"flax"``
        (see ``gbi_jax.models.recurrent``).
      latent_size: K, the width of ``z``; 0 = the model takes no latent.
      z_injection / latent_activation / temperature: see ``gbi_jax.models.latent``;
        ``concat`` appends ``z`` to every step's input, ``gate`` / ``film`` modulate the
        core input.
      custom_grad: use :func:`relu_rnn`'s hand-written backward pass (``False``: autodiff
        of the same scan; same numbers, slower).
    """

    input_size: int
    out_features: int
    core: str = "rnn"
    hidden: int = 64
    alpha: float = 1.0
    leaky: bool = True
    weight_init: str = "torch"
    latent_size: int = 0
    z_injection: str = "concat"
    latent_activation: str = "identity"
    temperature: float = 1.0
    custom_grad: bool = True

    def __post_init__(self):
        check_core(self.core, "FastRNN.core")
        check_weight_init(self.weight_init, "FastRNN.weight_init")
        check_latent_options(self.latent_activation, self.z_injection, self.temperature,
                             "FastRNN")
        for field, low in (("input_size", 1), ("out_features", 1), ("hidden", 1),
                           ("latent_size", 0)):
            check_int(f"FastRNN.{field}", getattr(self, field), low)
        check_alpha(self.alpha, "FastRNN.alpha")

    # -- structure -----------------------------------------------------------------
    @property
    def injection(self):
        return parse_z_injection(self.z_injection)

    @property
    def core_input_size(self) -> int:
        """Width of the core's input: F, plus K with ``concat``."""
        return self.input_size + (self.latent_size if self.injection.concat else 0)

    @property
    def decay(self) -> float:
        """Factor of ``h_{t-1}`` in the RNN update: ``1 - alpha`` leaky, 1 non-leaky."""
        return 1.0 - self.alpha if self.leaky else 1.0

    def cell(self) -> nn.Module:
        """The Flax cell with this model's core and parameter layout."""
        return make_cell(self.core, self.hidden, alpha=self.alpha, leaky=self.leaky,
                         weight_init=self.weight_init, name="core")

    def as_flax(self) -> RecurrentNetwork:
        """The :class:`RecurrentNetwork` computing the same function on the same tree
        (``module.apply({"params": params}, inputs, z)``)."""
        return RecurrentNetwork(core=self.core, hidden=self.hidden,
                                out_features=self.out_features, alpha=self.alpha,
                                activation="relu", leaky=self.leaky,
                                weight_init=self.weight_init, z_injection=self.z_injection,
                                latent_activation=self.latent_activation,
                                temperature=self.temperature)

    # -- parameters ----------------------------------------------------------------
    def init(self, key: jax.Array) -> dict:
        """Parameters drawn from ``key`` in the documented order (class docstring)."""
        h, f, n = self.hidden, self.core_input_size, self.out_features
        k_core, k_wo, k_bo = jax.random.split(key, 3)
        bh = 1.0 / np.sqrt(h)
        params = {"readout": {"kernel": _uniform(k_wo, (h, n), bh),
                              "bias": _uniform(k_bo, (n,), bh)}}
        if self.core == "rnn":
            params["core"] = self._rnn_init(k_core)
        else:
            cell = self.cell()
            params["core"] = cell.init(k_core, cell.initial_state(()), jnp.zeros((f,)))["params"]
        if self.latent_size:
            injection = self.injection
            k_gate = jax.random.fold_in(key, _LATENT_STREAM)
            width = self.core_input_size
            if injection.gate:
                params["gate"] = {"kernel": nn.initializers.lecun_normal()(
                    k_gate, (self.latent_size, width))}
            if injection.film:
                params["film"] = {"Dense_0": {"kernel": jnp.zeros((self.latent_size,
                                                                    2 * width))}}
        return params

    def _rnn_init(self, key):
        h, f = self.hidden, self.core_input_size
        ks = jax.random.split(key, 4)
        if self.weight_init == "flax":
            return {"input": _layer(nn.initializers.lecun_normal()(ks[0], (f, h)),
                                    jnp.zeros((h,))),
                    "recurrent": _layer(nn.initializers.orthogonal()(ks[2], (h, h)),
                                        jnp.zeros((h,)))}
        bh = 1.0 / np.sqrt(h)
        bi = 1.0 / np.sqrt(f) if self.weight_init == "fan_in" else bh
        return {"input": _layer(_uniform(ks[0], (f, h), bi), _uniform(ks[1], (h,), bi)),
                "recurrent": _layer(_uniform(ks[2], (h, h), bh), _uniform(ks[3], (h,), bh))}

    # -- application ---------------------------------------------------------------
    def core_input(self, params: dict, inputs: jax.Array,
                   z: Optional[jax.Array] = None) -> jax.Array:
        """What the core sees at each step: ``inputs [..., T, F]`` with ``z`` injected."""
        require((z is None) == (self.latent_size == 0), "FastRNN.latent_size",
                f"is {self.latent_size}, but z is {'missing' if z is None else 'given'} (z "
                "must be given exactly when latent_size > 0).")
        if z is None:
            return inputs
        injection = self.injection
        zt = broadcast_latent(transform_latent(z, self.latent_activation, self.temperature),
                              inputs)
        x = jnp.concatenate([inputs, zt], -1) if injection.concat else inputs
        if injection.gate:
            x = x * (1.0 + zt @ params["gate"]["kernel"])
        if injection.film:
            gamma, beta = jnp.split(zt @ params["film"]["Dense_0"]["kernel"], 2, axis=-1)
            x = x * (1.0 + gamma) + beta
        return x

    def step(self, params: dict, h: jax.Array, u: jax.Array):
        """One step ``F(h, u)`` of the core from the carry ``h`` and a core input ``u``
        (:meth:`core_input`); for fixed points and Jacobians."""
        if self.core == "rnn":
            c = params["core"]
            pre = (u @ c["input"]["Dense_0"]["kernel"] + c["input"]["Dense_0"]["bias"]
                   + h @ c["recurrent"]["Dense_0"]["kernel"] + c["recurrent"]["Dense_0"]["bias"])
            return self.decay * h + self.alpha * jax.nn.relu(pre)
        return self.cell().apply({"params": params["core"]}, h, u)[0]

    def hidden_states(self, params: dict, x: jax.Array) -> jax.Array:
        """Core states ``[B, T, H]`` for core inputs ``x [B, T, F]``."""
        if self.core == "rnn":
            c = params["core"]
            u = jnp.swapaxes(x, 0, 1)  # [S, B, F]
            bias = c["input"]["Dense_0"]["bias"] + c["recurrent"]["Dense_0"]["bias"]
            run = relu_rnn if self.custom_grad else relu_rnn_autodiff
            hs = run(u, c["input"]["Dense_0"]["kernel"], bias,
                     c["recurrent"]["Dense_0"]["kernel"], float(self.decay), float(self.alpha))
            return jnp.swapaxes(hs, 0, 1)
        cell = self.cell()
        step = lambda carry, u: cell.apply({"params": params["core"]}, carry, u)  # noqa: E731
        _, hs = jax.lax.scan(step, cell.initial_state(x.shape[:1]), jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(hs, 0, 1)

    def apply(self, params: dict, inputs: jax.Array, z: Optional[jax.Array] = None, *,
              return_hidden: bool = False):
        """``inputs [..., T, F]`` (and ``z [..., K]`` or ``[..., T, K]`` when
        ``latent_size > 0``) -> ``outputs [..., T, out]`` (, ``hidden [..., T, H]``)."""
        x = self.core_input(params, inputs, z)
        lead = x.shape[:-2]
        flat = x if x.ndim == 3 else x.reshape((-1,) + x.shape[-2:])
        hidden = self.hidden_states(params, flat)
        if hidden.shape[:-2] != lead:
            hidden = hidden.reshape(lead + hidden.shape[-2:])
        out = linear(hidden, params["readout"]["kernel"], params["readout"]["bias"])
        if return_hidden:
            return out, hidden
        return out


__all__ = ["FastRNN", "linear", "relu_rnn", "relu_rnn_autodiff"]
