"""Multi-layer perceptron that takes ``(inputs, z)``."""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.models.latent import check_latent_options, transform_latent

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "elu": nn.elu, "softplus": nn.softplus,
}


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}.")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """``(inputs [..., F], z [..., K]) -> [..., out_features]``.

    Attributes:
      hidden: widths of the hidden layers.
      out_features: output width.
      activation: hidden nonlinearity name (see ``ACTIVATIONS``).
      z_injection / latent_activation / temperature: see ``gbi_jax.models.latent``.
    """

    hidden: Sequence[int]
    out_features: int
    activation: str = "relu"
    z_injection: str = "concat"
    latent_activation: str = "identity"
    temperature: float = 1.0

    @nn.compact
    def __call__(self, inputs: jax.Array, z: jax.Array) -> jax.Array:
        check_latent_options(self.latent_activation, self.z_injection, self.temperature)
        act = get_activation(self.activation)
        if self.z_injection == "gate" and not self.hidden:
            raise ValueError("z_injection='gate' needs at least one hidden layer.")
        zt = transform_latent(z, self.latent_activation, self.temperature)
        zt = jnp.broadcast_to(zt, inputs.shape[:-1] + zt.shape[-1:])
        h = jnp.concatenate([inputs, zt], -1) if self.z_injection == "concat" else inputs
        for i, width in enumerate(self.hidden):
            h = nn.Dense(width, name=f"dense_{i}")(h)
            if i == 0 and self.z_injection == "gate":
                h = h * (1.0 + nn.Dense(width, use_bias=False, name="gate")(zt))
            h = act(h)
        return nn.Dense(self.out_features, name="out")(h)
