"""The architectures of the disentangling experiments (Vafidis et al. 2025), by name.

``Network(core, ...)`` gives ``init(key) -> params`` and
``apply(params, inputs [B, S, F], key=None, train=False) -> (out [B, S, N], hidden
[B, S, H])`` for the names of :data:`ARCHITECTURES`:

* ``"rnn"``: ``gbi_jax.models.FastRNN`` (ReLU, leaky with ``alpha = dt / tau``; the
  authors' ``alpha = 1`` is a plain ReLU Elman RNN);
* ``"noleak"``: the same with ``leaky=False`` (``h_t = h_{t-1} + alpha relu(...)``);
* ``"lstm"``, ``"gru"``: ``FastRNN`` with that core (torch init);
* ``"transformer"``: ``gbi_jax.models.CausalTransformer`` (dropout in training).

No latent input. Readouts are ``Linear(H -> N)`` with PyTorch's default init.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax

from gbi_jax.models import CausalTransformer, FastRNN
from gbi_jax.validation import check_choice

ARCHITECTURES = ("rnn", "noleak", "lstm", "gru", "transformer")
# config.model.rnn_input_init -> FastRNN.weight_init of the ReLU RNNs.
RNN_INPUT_INITS = {"fan_in": "fan_in", "hidden": "torch"}


@dataclasses.dataclass(frozen=True)
class Network:
    """One architecture of the paper with a linear readout (see module docstring).

    Attributes:
      core: one of :data:`ARCHITECTURES`.
      input_size: F.
      out_features: readout width (the padded ``max_tasks``).
      hidden: H (64).
      alpha: RNN step size ``dt / tau`` (``rnn`` / ``noleak``; 1 = authors).
      rnn_input_init: ``"fan_in"`` (default, the authors' ``nn.Linear`` input layer)
        draws the input weights from ``U(+-1/sqrt(F))``; ``"hidden"`` from
        ``U(+-1/sqrt(H))`` (``torch.nn.RNN``).
      custom_grad: use the hand-written backward pass of the RNN (``False``: plain
        autodiff of the scan; same numbers).
      transformer: ``dict`` items of :class:`CausalTransformer` fields (width, layers,
        heads, mlp, dropout).
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
        check_choice("Network.core", self.core, ARCHITECTURES)
        check_choice("Network.rnn_input_init", self.rnn_input_init, tuple(RNN_INPUT_INITS))
        _ = self.model  # building the library model checks the remaining fields

    @property
    def is_rnn(self) -> bool:
        return self.core in ("rnn", "noleak")

    @property
    def model(self):
        """The library model this architecture name stands for."""
        if self.core == "transformer":
            kw = dict(self.transformer)
            kw.setdefault("width", self.hidden)
            return CausalTransformer(self.out_features, **kw)
        if self.is_rnn:
            return FastRNN(self.input_size, self.out_features, core="rnn", hidden=self.hidden,
                           alpha=self.alpha, leaky=self.core == "rnn",
                           weight_init=RNN_INPUT_INITS[self.rnn_input_init],
                           custom_grad=self.custom_grad)
        return FastRNN(self.input_size, self.out_features, core=self.core, hidden=self.hidden)

    def init(self, key: jax.Array) -> dict:
        if self.core == "transformer":
            k_core, _, _ = jax.random.split(key, 3)
            x = jax.numpy.zeros((1, 2, self.input_size))
            return dict(self.model.init(k_core, x)["params"])
        return self.model.init(key)

    def rnn_step(self, params: dict, h: jax.Array, u: jax.Array) -> jax.Array:
        """One step ``F(h, u)`` of the RNN (for fixed points and Jacobians)."""
        return self.model.step(params, h, u)

    def apply(self, params: dict, inputs: jax.Array, *, key: Optional[jax.Array] = None,
              train: bool = False) -> tuple[jax.Array, jax.Array]:
        """``inputs [B, S, F] -> (readout [B, S, out], hidden [B, S, H])``."""
        if self.core == "transformer":
            dropout = train and key is not None
            return self.model.apply({"params": params}, inputs, deterministic=not dropout,
                                    return_hidden=True, rngs={"dropout": key} if dropout else None)
        return self.model.apply(params, inputs, return_hidden=True)
