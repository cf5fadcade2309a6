"""Recurrent cores and a sequence model that takes ``(inputs, z)``.

Cores (:data:`CORES`): ``"rnn"`` (:class:`RNNCell`, rate RNN, leaky or non-leaky),
``"gru"`` (:class:`GRUCell`, as ``torch.nn.GRU``: reset gate applied to the recurrent
candidate term after its bias) and ``"lstm"`` (:class:`LSTMCell`, as ``torch.nn.LSTM``:
gates ordered ``i, f, g, o``). PyTorch's parameterisation, so results compare with the
papers' PyTorch code.

Parameter layout of every cell (``G`` = 1, 3, 4 gate blocks for rnn, gru, lstm)::

    {"input":     {"Dense_0": {"kernel": [F, G*H], "bias": [G*H]}},
     "recurrent": {"Dense_0": {"kernel": [H, G*H], "bias": [G*H]}}}

The fast ReLU RNN (:class:`gbi_jax.models.FastRNN`) uses the same tree, so parameters
trained by either run in the other.

Initialisation (``weight_init``, :data:`WEIGHT_INITS`):

* ``"torch"``: every weight and bias ``U(-1/sqrt(H), 1/sqrt(H))``, as ``torch.nn.RNN`` /
  ``GRU`` / ``LSTM``;
* ``"fan_in"``: the input layer ``U(+-1/sqrt(F))`` and the recurrent layer
  ``U(+-1/sqrt(H))``, as two ``torch.nn.Linear`` layers (the disentangling authors' RNN,
  Vafidis et al. 2025);
* ``"flax"``: Flax's recurrent-cell defaults: input kernel lecun-normal, recurrent kernel
  orthogonal, biases zero.

Shapes: a cell maps ``(carry, u [..., F]) -> (carry, h [..., H])``;
:class:`RecurrentNetwork` maps ``inputs [..., T, F]`` and ``z [..., K]`` (or a
time-varying ``[..., T, K]``) to outputs ``[..., T, out_features]``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.models.latent import (broadcast_latent, check_latent_options, modulate,
                                   parse_z_injection, transform_latent)
from gbi_jax.models.mlp import get_activation
from gbi_jax.validation import check_choice, check_int, check_range

CORES = ("rnn", "gru", "lstm")
WEIGHT_INITS = ("torch", "fan_in", "flax")


def torch_uniform(hidden: int):
    """``U(-1/sqrt(hidden), 1/sqrt(hidden))``: torch's RNN/GRU/LSTM initialiser."""
    bound = 1.0 / jnp.sqrt(hidden)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def check_weight_init(weight_init: str, field: str = "weight_init") -> str:
    return check_choice(field, weight_init, WEIGHT_INITS)


def layer_initialisers(weight_init: str, fan_in: int, hidden: int,
                       recurrent: bool) -> tuple[Callable, Callable]:
    """``(kernel_init, bias_init)`` of a cell's input (``recurrent=False``, fan-in ``F``) or
    recurrent layer under ``weight_init`` (see the module docstring)."""
    check_weight_init(weight_init)
    if weight_init == "flax":
        kernel = nn.initializers.orthogonal() if recurrent else nn.initializers.lecun_normal()
        return kernel, nn.initializers.zeros
    init = torch_uniform(fan_in if (weight_init == "fan_in" and not recurrent) else hidden)
    return init, init


class _Layer(nn.Module):
    """One of a cell's two affine maps (``input`` or ``recurrent``)."""

    features: int
    hidden: int
    weight_init: str
    recurrent: bool

    @nn.compact
    def __call__(self, x):
        kernel_init, bias_init = layer_initialisers(self.weight_init, x.shape[-1], self.hidden,
                                                    self.recurrent)
        return nn.Dense(self.features, kernel_init=kernel_init, bias_init=bias_init)(x)


def _check_cell(owner: str, hidden: int, weight_init: str) -> None:
    check_int(f"{owner}.hidden", hidden, 1)
    check_weight_init(weight_init, f"{owner}.weight_init")


def check_alpha(alpha: float, field: str = "alpha") -> float:
    """The RNN step size ``dt / tau`` must be in ``(0, 1]``."""
    return check_range(field, alpha, 0.0, 1.0, low_open=True)


class RNNCell(nn.Module):
    """Rate RNN with ``pre = W_i u + b_i + W_h h + b_h``:

    * ``leaky=True``: ``h' = (1 - alpha) h + alpha act(pre)`` (``alpha = dt / tau``;
      ``alpha = 1`` is the plain Elman RNN, which the disentangling authors' "leaky"
      network reduces to with ``dt = tau``);
    * ``leaky=False``: ``h' = h + alpha act(pre)`` (the authors' non-leaky RNN).
    """

    hidden: int
    alpha: float = 1.0
    activation: str = "relu"
    leaky: bool = True
    weight_init: str = "torch"

    def __post_init__(self):
        _check_cell("RNNCell", self.hidden, self.weight_init)
        check_alpha(self.alpha, "RNNCell.alpha")
        get_activation(self.activation, "RNNCell.activation")
        super().__post_init__()

    @nn.compact
    def __call__(self, h, u):
        act = get_activation(self.activation)
        pre = (_Layer(self.hidden, self.hidden, self.weight_init, False, name="input")(u)
               + _Layer(self.hidden, self.hidden, self.weight_init, True, name="recurrent")(h))
        if self.leaky:
            h = (1.0 - self.alpha) * h + self.alpha * act(pre)
        else:
            h = h + self.alpha * act(pre)
        return h, h

    def initial_state(self, batch_shape):
        return jnp.zeros(tuple(batch_shape) + (self.hidden,))


class _GatedCell(nn.Module):
    """Fields, checks and the two gate projections shared by :class:`LSTMCell` and
    :class:`GRUCell` (``gates`` gate blocks of width ``hidden``)."""

    hidden: int
    weight_init: str = "torch"

    def __post_init__(self):
        _check_cell(type(self).__name__, self.hidden, self.weight_init)
        super().__post_init__()

    def _projections(self, gates: int, u, h):
        """``(W_i u + b_i, W_h h + b_h)``, each ``[..., gates * hidden]`` (called inside
        the cell's compact ``__call__``; submodules ``input`` and ``recurrent``)."""
        width = gates * self.hidden
        return (_Layer(width, self.hidden, self.weight_init, False, name="input")(u),
                _Layer(width, self.hidden, self.weight_init, True, name="recurrent")(h))


class LSTMCell(_GatedCell):
    """torch.nn.LSTM cell: gates ``i, f, g, o``; carry ``(c, h)``."""

    @nn.compact
    def __call__(self, carry, u):
        c, h = carry
        gi, gh = self._projections(4, u, h)
        gates = gi + gh
        i, f, g, o = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (c, h), h

    def initial_state(self, batch_shape):
        z = jnp.zeros(tuple(batch_shape) + (self.hidden,))
        return (z, z)


class GRUCell(_GatedCell):
    """torch.nn.GRU cell: ``n = tanh(W_in u + b_in + r * (W_hn h + b_hn))``."""

    @nn.compact
    def __call__(self, h, u):
        gi, gh = self._projections(3, u, h)
        ir, iz, in_ = jnp.split(gi, 3, axis=-1)
        hr, hz, hn = jnp.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(ir + hr)
        zg = jax.nn.sigmoid(iz + hz)
        n = jnp.tanh(in_ + r * hn)
        h = (1.0 - zg) * n + zg * h
        return h, h

    def initial_state(self, batch_shape):
        return jnp.zeros(tuple(batch_shape) + (self.hidden,))


def check_core(core: str, field: str = "core") -> str:
    return check_choice(field, core, CORES)


def make_cell(core: str, hidden: int, *, alpha: float = 1.0, activation: str = "relu",
              leaky: bool = True, weight_init: str = "torch",
              name: Optional[str] = None) -> nn.Module:
    """The cell of ``core``; ``alpha``, ``activation`` and ``leaky`` apply to ``"rnn"`` only."""
    check_core(core)
    if core == "rnn":
        return RNNCell(hidden, alpha=alpha, activation=activation, leaky=leaky,
                       weight_init=weight_init, name=name)
    if core == "lstm":
        return LSTMCell(hidden, weight_init=weight_init, name=name)
    return GRUCell(hidden, weight_init=weight_init, name=name)


class RecurrentNetwork(nn.Module):
    """``[input projection] -> recurrent core -> linear readout``, with a latent input.

    With ``input_projection=H`` and ``core="lstm"`` this is the GBI toy model
    (Hummos et al. 2024): ``Linear(1 + K -> H) -> LSTM(H) -> Linear(H -> out)``.
    Parameters: ``input_projection`` (if any), ``gate`` / ``film`` (if injected),
    ``core`` (the cell layout of the module docstring) and ``readout``
    (``{"kernel": [H, out], "bias": [out]}``). Without an input projection the tree is
    that of :class:`gbi_jax.models.FastRNN` with the same fields.

    Attributes:
      core: one of :data:`CORES`.
      hidden: core width H.
      out_features: readout width.
      input_projection: width of a linear layer applied to ``[inputs, z]`` before
        the core; ``None`` feeds them to the core directly.
      alpha, activation, leaky: RNN step size, nonlinearity and leak (``core="rnn"``
        only; see :class:`RNNCell`).
      weight_init: the core's initialisation (:data:`WEIGHT_INITS`).
      z_injection / latent_activation / temperature: see ``gbi_jax.models.latent``;
        ``concat`` appends ``z`` to every step's input, ``gate`` / ``film`` modulate the
        core input (after the input projection).
    """

    core: str = "lstm"
    hidden: int = 64
    out_features: int = 1
    input_projection: Optional[int] = None
    alpha: float = 1.0
    activation: str = "relu"
    leaky: bool = True
    weight_init: str = "torch"
    z_injection: str = "concat"
    latent_activation: str = "identity"
    temperature: float = 1.0

    def __post_init__(self):
        owner = "RecurrentNetwork"
        check_core(self.core, f"{owner}.core")
        check_latent_options(self.latent_activation, self.z_injection, self.temperature, owner)
        _check_cell(owner, self.hidden, self.weight_init)
        check_alpha(self.alpha, f"{owner}.alpha")
        get_activation(self.activation, f"{owner}.activation")
        check_int(f"{owner}.out_features", self.out_features, 1)
        if self.input_projection is not None:
            check_int(f"{owner}.input_projection", self.input_projection, 1)
        super().__post_init__()

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
        injection = parse_z_injection(self.z_injection)
        x = inputs
        if z is not None:
            zt = broadcast_latent(transform_latent(z, self.latent_activation, self.temperature), x)
            if injection.concat:
                x = jnp.concatenate([x, zt], -1)
        if self.input_projection is not None:
            x = nn.Dense(self.input_projection, name="input_projection")(x)
        if z is not None:
            x = modulate(x, zt, injection)

        scan = nn.scan(
            lambda cell, carry, u: cell(carry, u),
            variable_broadcast="params", split_rngs={"params": False},
            in_axes=0, out_axes=0)
        cell = make_cell(self.core, self.hidden, alpha=self.alpha, activation=self.activation,
                         leaky=self.leaky, weight_init=self.weight_init, name="core")
        batch_shape = x.shape[:-2]
        carry = cell.initial_state(batch_shape) if initial_state is None else initial_state
        time_major = jnp.moveaxis(x, -2, 0)
        carry, hs = scan(cell, carry, time_major)
        hs = jnp.moveaxis(hs, 0, -2)
        out = nn.Dense(self.out_features, name="readout")(hs)
        if return_hidden:
            return out, hs
        return out
