"""Recurrent cores and a sequence model that takes ``(inputs, z)``.

Cells use PyTorch's parameterisation and initialisation so results can be
compared with the papers' PyTorch code: every weight and bias is drawn from
``U(-1/sqrt(H), 1/sqrt(H))`` (H = hidden size), LSTM gates are ordered
``i, f, g, o`` and the GRU follows ``torch.nn.GRU`` (reset gate applied to the
recurrent candidate term, after its bias).

Shapes: a cell maps ``(carry, u [..., F]) -> (carry, h [..., H])``;
:class:`RecurrentNetwork` maps ``inputs [..., T, F]`` and ``z [..., K]`` (or a
time-varying ``[..., T, K]``) to outputs ``[..., T, out_features]``.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.models.latent import broadcast_latent, check_latent_options, transform_latent
from gbi_jax.models.mlp import get_activation

CORES = ("rnn", "gru", "lstm")


def torch_uniform(hidden: int):
    """``U(-1/sqrt(hidden), 1/sqrt(hidden))``: torch's RNN/GRU/LSTM initialiser."""
    bound = 1.0 / jnp.sqrt(hidden)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class _TorchDense(nn.Module):
    features: int
    init_scale_from: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        init = torch_uniform(self.init_scale_from)
        return nn.Dense(self.features, use_bias=self.use_bias, kernel_init=init,
                        bias_init=init)(x)


class RNNCell(nn.Module):
    """Rate RNN: ``h' = (1 - alpha) h + alpha * act(W_i u + b_i + W_h h + b_h)``.

    ``alpha = dt / tau``; ``alpha = 1`` is the plain (non-leaky) RNN that the
    disentangling authors' "leaky" network reduces to with ``dt = tau``.
    """

    hidden: int
    alpha: float = 1.0
    activation: str = "relu"

    @nn.compact
    def __call__(self, h, u):
        act = get_activation(self.activation)
        pre = (_TorchDense(self.hidden, self.hidden, name="input")(u)
               + _TorchDense(self.hidden, self.hidden, name="recurrent")(h))
        h = (1.0 - self.alpha) * h + self.alpha * act(pre)
        return h, h

    def initial_state(self, batch_shape):
        return jnp.zeros(tuple(batch_shape) + (self.hidden,))


class LSTMCell(nn.Module):
    """torch.nn.LSTM cell: gates ``i, f, g, o``; carry ``(c, h)``."""

    hidden: int

    @nn.compact
    def __call__(self, carry, u):
        c, h = carry
        gates = (_TorchDense(4 * self.hidden, self.hidden, name="input")(u)
                 + _TorchDense(4 * self.hidden, self.hidden, name="recurrent")(h))
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    def initial_state(self, batch_shape):
        z = jnp.zeros(tuple(batch_shape) + (self.hidden,))
        return (z, z)


class GRUCell(nn.Module):
    """torch.nn.GRU cell: ``n = tanh(W_in u + b_in + r * (W_hn h + b_hn))``."""

    hidden: int

    @nn.compact
    def __call__(self, h, u):
        gi = _TorchDense(3 * self.hidden, self.hidden, name="input")(u)
        gh = _TorchDense(3 * self.hidden, self.hidden, name="recurrent")(h)
        ir, iz, in_ = jnp.split(gi, 3, axis=-1)
        hr, hz, hn = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(ir + hr)
        zg = jax.nn.sigmoid(iz + hz)
        n = jnp.tanh(in_ + r * hn)
        h = (1.0 - zg) * n + zg * h
        return h, h

    def initial_state(self, batch_shape):
        return jnp.zeros(tuple(batch_shape) + (self.hidden,))


def make_cell(core: str, hidden: int, *, alpha: float = 1.0, activation: str = "relu",
              name: Optional[str] = None) -> nn.Module:
    if core == "rnn":
        return RNNCell(hidden, alpha=alpha, activation=activation, name=name)
    if core == "lstm":
        return LSTMCell(hidden, name=name)
    if core == "gru":
        return GRUCell(hidden, name=name)
    raise ValueError(f"core must be one of {CORES}, got {core!r}.")


class RecurrentNetwork(nn.Module):
    """``[input projection] -> recurrent core -> linear readout``, with a latent input.

    With ``input_projection=H`` and ``core="lstm"`` this is the GBI toy model:
    ``Linear(1 + K -> H) -> LSTM(H) -> Linear(H -> out)``.

    Attributes:
      core: ``"rnn"`` | ``"gru"`` | ``"lstm"``.
      hidden: core width H.
      out_features: readout width.
      input_projection: width of a linear layer applied to ``[inputs, z]`` before
        the core; ``None`` feeds them to the core directly.
      alpha, activation: RNN leak and nonlinearity (``core="rnn"`` only).
      z_injection / latent_activation / temperature: see ``gbi_jax.models.latent``.
        With ``"gate"`` the core input is multiplied by ``1 + W_z z``.
    """

    core: str = "lstm"
    hidden: int = 64
    out_features: int = 1
    input_projection: Optional[int] = None
    alpha: float = 1.0
    activation: str = "relu"
    z_injection: str = "concat"
    latent_activation: str = "identity"
    temperature: float = 1.0

    def setup(self):
        if self.core not in CORES:
            raise ValueError(f"core must be one of {CORES}, got {self.core!r}.")
        check_latent_options(self.latent_activation, self.z_injection, self.temperature)
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}.")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}.")

    @nn.compact
    def __call__(self, inputs: jax.Array, z: Optional[jax.Array] = None,
                 initial_state: Any = None, return_hidden: bool = False):
        """Run the network over time.

        Args:
          inputs: ``[..., T, F]``.
          z: ``[..., K]`` or ``[..., T, K]``; ``None`` runs without a latent.
          initial_state: the core's carry (zeros by default).
          return_hidden: also return the hidden states ``[..., T, H]``.
        """
        x = inputs
        if z is not None:
            zt = broadcast_latent(transform_latent(z, self.latent_activation, self.temperature), x)
            if self.z_injection == "concat":
                x = jnp.concatenate([x, zt], -1)
        if self.input_projection is not None:
            x = nn.Dense(self.input_projection, name="input_projection")(x)
        if z is not None and self.z_injection == "gate":
            x = x * (1.0 + nn.Dense(x.shape[-1], use_bias=False, name="gate")(zt))

        scan = nn.scan(
            lambda cell, carry, u: cell(carry, u),
            variable_broadcast="params", split_rngs={"params": False},
            in_axes=0, out_axes=0)
        cell = make_cell(self.core, self.hidden, alpha=self.alpha, activation=self.activation,
                         name="core")
        batch_shape = x.shape[:-2]
        carry = cell.initial_state(batch_shape) if initial_state is None else initial_state
        time_major = jnp.moveaxis(x, -2, 0)
        carry, hs = scan(cell, carry, time_major)
        hs = jnp.moveaxis(hs, 0, -2)
        out = nn.Dense(self.out_features, name="readout")(hs)
        if return_hidden:
            return out, hs
        return out
