"""How a task latent ``z`` enters a network: one vocabulary for every model.

Every model that takes ``z`` (:class:`~gbi_jax.models.MLP`,
:class:`~gbi_jax.models.RecurrentNetwork`, :class:`~gbi_jax.models.FastRNN`,
:class:`~gbi_jax.models.CausalTransformer`,
:class:`~gbi_jax.models.ConditionalAutoencoder`) has the same three fields:

* ``latent_activation``: ``"identity"`` feeds ``z`` as is (a one-hot during training,
  probabilities ``1/K`` at the max-entropy point); ``"softmax"`` feeds
  ``softmax(z / temperature)`` so an unconstrained latent (logits, max entropy at 0) is
  mapped to the simplex. At uniform logits the softmax Jacobian only centres the
  gradient, so one-step argmax inference is the same under both.
* ``temperature``: the softmax temperature (> 0).
* ``z_injection``: one of :data:`Z_INJECTIONS`, i.e. one or more of the three ways below
  joined by ``"+"`` in this order (``"concat+film"``, ``"concat+gate+film"``, ...):

  - ``"concat"``: ``z`` is appended to the features at the model's input site;
  - ``"gate"``: the features ``h`` at the model's modulation site(s) become
    ``h * (1 + W_z z)``; ``W_z`` is bias-free with the default (lecun-normal) init, so a
    zero latent leaves the network ungated;
  - ``"film"``: ``h * (1 + gamma(z)) + beta(z)`` (FiLM, Perez et al. 2018) with bias-free,
    zero-initialised ``gamma``, ``beta``: the identity at ``z = 0`` and at initialisation.

Sites per model (``concat`` / ``gate`` and ``film``):

=========================  ===================================  ==========================
model                      concat                               gate, film
=========================  ===================================  ==========================
MLP                        the inputs                           first hidden pre-activation
RecurrentNetwork, FastRNN  every time step's input              the core input
CausalTransformer          every token                          the embedded tokens
ConditionalAutoencoder     the decoder input (with image code)  every decoder stage
=========================  ===================================  ==========================

Parameter names: the gate is a bias-free ``Dense`` named ``gate`` (``gate_in``,
``gate_<i>`` per stage in the autoencoder), FiLM a :class:`FiLM` module named ``film``
(``film_in``, ``film_<i>``). A model called with ``z=None`` uses none of them.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.validation import check_choice, check_positive, require

LATENT_ACTIVATIONS = ("identity", "softmax")
#: The three basic injections, in the order a combination lists them.
Z_INJECTION_PARTS = ("concat", "gate", "film")
#: Every valid ``z_injection``: a non-empty combination of the parts, joined by ``"+"``.
Z_INJECTIONS = tuple("+".join(c) for r in range(1, len(Z_INJECTION_PARTS) + 1)
                     for c in itertools.combinations(Z_INJECTION_PARTS, r))


class ZInjection(NamedTuple):
    """Which injections a ``z_injection`` string switches on."""

    concat: bool
    gate: bool
    film: bool


def parse_z_injection(z_injection: str, field: str = "z_injection") -> ZInjection:
    """``"concat+film"`` -> ``ZInjection(concat=True, gate=False, film=True)``.

    Raises ``FieldError`` (a ``ValueError``) naming ``field`` if ``z_injection`` is not in
    :data:`Z_INJECTIONS`.
    """
    require(isinstance(z_injection, str) and z_injection in Z_INJECTIONS, field,
            f"must be one of {Z_INJECTIONS} (parts of {Z_INJECTION_PARTS} joined by '+' in "
            f"that order), got {z_injection!r}.")
    parts = z_injection.split("+")
    return ZInjection(*(p in parts for p in Z_INJECTION_PARTS))


def check_latent_options(latent_activation: str, z_injection: str, temperature: float,
                         owner: str = "") -> ZInjection:
    """Validate the three latent fields of a model (named ``<owner>.<field>``); return the
    parsed injection."""
    prefix = f"{owner}." if owner else ""
    check_choice(f"{prefix}latent_activation", latent_activation, LATENT_ACTIVATIONS)
    check_positive(f"{prefix}temperature", temperature)
    return parse_z_injection(z_injection, f"{prefix}z_injection")


def transform_latent(z: jax.Array, latent_activation: str = "identity",
                     temperature: float = 1.0) -> jax.Array:
    """Map the latent to what the network sees (see module docstring)."""
    check_choice("latent_activation", latent_activation, LATENT_ACTIVATIONS)
    if latent_activation == "softmax":
        return jax.nn.softmax(z / temperature, axis=-1)
    return z


def broadcast_latent(z: jax.Array, inputs: jax.Array) -> jax.Array:
    """Broadcast ``z`` ([..., K]) against ``inputs`` ([..., T, F]) to [..., T, K].

    A latent whose rank equals the inputs' rank is taken as already time-varying.
    """
    if z.ndim == inputs.ndim:
        return z
    z = jnp.expand_dims(z, -2)
    return jnp.broadcast_to(z, inputs.shape[:-1] + z.shape[-1:])


def _over_channels(m: jax.Array, h: jax.Array) -> jax.Array:
    """Reshape a per-example modulation ``[..., C]`` to broadcast over ``h``'s extra axes
    (e.g. the spatial axes of ``h [B, H, W, C]`` for ``m [B, C]``)."""
    extra = h.ndim - m.ndim
    if extra <= 0:
        return m
    return m.reshape(m.shape[:-1] + (1,) * extra + m.shape[-1:])


def apply_gate(h: jax.Array, z: jax.Array, name: str = "gate") -> jax.Array:
    """``h * (1 + W_z z)`` over the channel axis (call inside a compact Flax module).

    ``W_z`` is a bias-free ``Dense`` named ``name``; the identity at ``z = 0``.
    """
    g = nn.Dense(h.shape[-1], use_bias=False, name=name)(z)
    return h * (1.0 + _over_channels(g, h))


class FiLM(nn.Module):
    """``h * (1 + gamma(z)) + beta(z)`` over the channel axis; identity at ``z = 0``.

    ``gamma`` and ``beta`` are one bias-free, zero-initialised ``Dense(z -> 2C)``, so the
    module is also the identity at initialisation. ``z [..., K]`` may have fewer axes than
    ``h [..., C]``: the modulation is then shared over ``h``'s extra (e.g. spatial) axes.
    """

    @nn.compact
    def __call__(self, h: jax.Array, z: jax.Array) -> jax.Array:
        c = h.shape[-1]
        gb = nn.Dense(2 * c, use_bias=False, kernel_init=nn.initializers.zeros)(z)
        gamma, beta = jnp.split(gb, 2, axis=-1)
        return h * (1.0 + _over_channels(gamma, h)) + _over_channels(beta, h)


def modulate(h: jax.Array, z: jax.Array, injection: ZInjection, suffix: str = "") -> jax.Array:
    """Apply the ``gate`` and/or ``film`` parts of ``injection`` to ``h`` (compact modules
    only); the parameters are named ``gate<suffix>`` and ``film<suffix>``."""
    if injection.gate:
        h = apply_gate(h, z, name=f"gate{suffix}")
    if injection.film:
        h = FiLM(name=f"film{suffix}")(h, z)
    return h
