"""Multi-layer perceptron that takes ``(inputs, z)``."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.models.latent import (check_latent_options, modulate, parse_z_injection,
                                   transform_latent)
from gbi_jax.validation import check_choice, check_int, require

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "elu": nn.elu, "softplus": nn.softplus,
}


def get_activation(name: str, field: str = "activation") -> Callable[[jax.Array], jax.Array]:
    """The nonlinearity called ``name`` (a key of :data:`ACTIVATIONS`)."""
    return ACTIVATIONS[check_choice(field, name, tuple(sorted(ACTIVATIONS)))]


class MLP(nn.Module):
    """``(inputs [..., F], z [..., K]) -> [..., out_features]``.

    ``Dense -> act`` per hidden layer, then a linear output layer (``dense_<i>``, ``out``).

    Attributes:
      hidden: widths of the hidden layers.
      out_features: output width.
      activation: hidden nonlinearity name (see ``ACTIVATIONS``).
      z_injection / latent_activation / temperature: see ``gbi_jax.models.latent``;
        ``concat`` appends ``z`` to the inputs, ``gate`` / ``film`` modulate the first
        hidden pre-activation (they need at least one hidden layer).
    """

    hidden: Sequence[int]
    out_features: int
    activation: str = "relu"
    z_injection: str = "concat"
    latent_activation: str = "identity"
    temperature: float = 1.0

    def __post_init__(self):
        injection = check_latent_options(self.latent_activation, self.z_injection,
                                         self.temperature, "MLP")
        get_activation(self.activation, "MLP.activation")
        for width in self.hidden:
            check_int("MLP.hidden", width, 1)
        check_int("MLP.out_features", self.out_features, 1)
        require(not (injection.gate or injection.film) or len(self.hidden) > 0,
                "MLP.z_injection", f"{self.z_injection!r} needs at least one hidden layer.")
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs: jax.Array, z: Optional[jax.Array] = None) -> jax.Array:
        """``z=None`` runs the network without a latent (no injection)."""
        injection = parse_z_injection(self.z_injection)
        act = get_activation(self.activation)
        h = inputs
        if z is not None:
            zt = transform_latent(z, self.latent_activation, self.temperature)
            zt = jnp.broadcast_to(zt, inputs.shape[:-1] + zt.shape[-1:])
            if injection.concat:
                # No features besides z (a decoder of z alone): z itself, not a concat
                # with the empty inputs, so under vmap over examples sharing one latent
                # the layers run once, not per example (same values and parameters).
                h = zt if inputs.shape[-1] == 0 else jnp.concatenate([inputs, zt], -1)
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, name=f"dense_{i}")(h)
            if i == 0 and z is not None:
                h = modulate(h, zt, injection)
            h = act(h)
        return nn.Dense(self.out_features, name="out")(h)
