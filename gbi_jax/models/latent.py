"""How a task latent ``z`` enters a network.

Two choices, both config fields of every model (spec gbi.md 2.2):

* ``latent_activation``: ``"identity"`` feeds ``z`` as is (a one-hot during
  training, probabilities ``1/K`` at the max-entropy point); ``"softmax"`` feeds
  ``softmax(z / temperature)`` so an unconstrained latent (logits, max entropy at
  0) is mapped to the simplex. The authors' toy code uses softmax with
  temperature 0.1. At uniform logits the softmax Jacobian only centres the
  gradient, so one-step argmax inference is the same under both.
* ``z_injection``: ``"concat"`` appends ``z`` to the input features (default,
  as in the paper); ``"gate"`` multiplies the first hidden pre-activation by
  ``1 + W_z z`` (multiplicative, FiLM-like gating without a shift; ``W_z`` has no
  bias so a zero latent leaves the network ungated).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LATENT_ACTIVATIONS = ("identity", "softmax")
Z_INJECTIONS = ("concat", "gate")


def check_latent_options(latent_activation: str, z_injection: str, temperature: float) -> None:
    if latent_activation not in LATENT_ACTIVATIONS:
        raise ValueError(
            f"latent_activation must be one of {LATENT_ACTIVATIONS}, got {latent_activation!r}.")
    if z_injection not in Z_INJECTIONS:
        raise ValueError(f"z_injection must be one of {Z_INJECTIONS}, got {z_injection!r}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")


def transform_latent(z: jax.Array, latent_activation: str = "identity",
                     temperature: float = 1.0) -> jax.Array:
    """Map the latent to what the network sees (see module docstring)."""
    if latent_activation == "identity":
        return z
    if latent_activation == "softmax":
        return jax.nn.softmax(z / temperature, axis=-1)
    raise ValueError(
        f"latent_activation must be one of {LATENT_ACTIVATIONS}, got {latent_activation!r}.")


def broadcast_latent(z: jax.Array, inputs: jax.Array) -> jax.Array:
    """Broadcast ``z`` ([..., K]) against ``inputs`` ([..., T, F]) to [..., T, K].

    A latent whose rank equals the inputs' rank is taken as already time-varying.
    """
    if z.ndim == inputs.ndim:
        return z
    z = jnp.expand_dims(z, -2)
    return jnp.broadcast_to(z, inputs.shape[:-1] + z.shape[-1:])
