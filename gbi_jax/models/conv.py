"""Convolutional models: a conditional autoencoder for GBI on images, and a classifier.

:class:`ConditionalAutoencoder`: image + class latent ``z`` -> reconstruction of the image
(Hummos et al. 2024, Sec. 4). The image pathway is an :class:`Encoder` (stride-2
convolutions) into a narrow, bounded bottleneck (``tanh``) with optional Gaussian noise
during training; the decoder (a dense layer and sub-pixel convolutions: 3x3 convolution +
:func:`depth_to_space`, each doubling H and W) receives the bottleneck code and ``z``.
Trained with the true one-hot class as ``z``; at test time ``z`` is inferred by GBI.

Why narrow + bounded + noisy: GBI fails when the image pathway alone can reconstruct the
image ("solutions that rely on the visual input features more than the image class
input", the paper's CIFAR-100 case), because ``dL/dz`` then carries no class
information. A few noisy, bounded bottleneck units can carry style (slant, thickness)
but not identity, so the decoder must take the class from ``z``.

:class:`Classifier`: the same encoder with a dense head (cross-entropy baseline; members
of a deep ensemble).

:class:`Conv3x3` is a SAME 3x3 convolution written as im2col + one matmul (see its
docstring for why).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.models.latent import (FiLM, check_latent_options, modulate, parse_z_injection,
                                   transform_latent)
from gbi_jax.validation import check_int, check_positive, require

__all__ = ["Classifier", "ConditionalAutoencoder", "Conv3x3", "Encoder", "FiLM",
           "depth_to_space"]


def _check_features(field: str, features: Sequence[int]) -> None:
    require(len(tuple(features)) > 0, field, "must list at least one stage's channel count.")
    for f in features:
        check_int(field, f, 1)


class Conv3x3(nn.Module):
    """3x3 convolution, SAME padding, stride ``s``, written as im2col + one matmul.

    ``[..., H, W, C] -> [..., ceil(H/s), ceil(W/s), features]``; parameters ``Dense_0``
    with ``kernel [9 C, features]`` (rows ordered ``(dy, dx, c)``, i.e. the ``HWIO``
    convolution kernel reshaped) and ``bias``. Exactly a convolution, but built from
    pad/slice/concatenate and a dense layer. Why: on XLA:CPU the weight-gradient
    convolutions of ``lax.conv`` run 3-80x slower inside a ``lax.scan`` body (where
    ``training.fit`` runs its steps) than at top level; the matmul form runs at full speed
    in both.
    """

    features: int
    stride: int = 1

    def __post_init__(self):
        check_int("Conv3x3.features", self.features, 1)
        check_int("Conv3x3.stride", self.stride, 1)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.stride
        h, w = x.shape[-3], x.shape[-2]
        ho, wo = -(-h // s), -(-w // s)
        ph, pw = max((ho - 1) * s + 3 - h, 0), max((wo - 1) * s + 3 - w, 0)  # as lax "SAME"
        xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(ph // 2, ph - ph // 2),
                                                   (pw // 2, pw - pw // 2), (0, 0)])
        cols = [xp[..., i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
                for i in range(3) for j in range(3)]
        return nn.Dense(self.features)(jnp.concatenate(cols, -1))


def depth_to_space(x: jax.Array, block: int = 2) -> jax.Array:
    """``[..., H, W, b*b*C] -> [..., b*H, b*W, C]`` (pixel shuffle).

    ``out[..., b*h + i, b*w + j, c] = x[..., h, w, (i*b + j)*C + c]``.
    """
    *lead, h, w, c = x.shape
    check_int("block", block, 1)
    require(c % (block * block) == 0, "block", f"** 2 must divide the channels ({c}), got "
            f"{block}.")
    x = x.reshape(*lead, h, w, block, block, c // (block * block))
    x = jnp.swapaxes(x, -4, -3)  # [..., h, i, w, j, C]
    return x.reshape(*lead, h * block, w * block, c // (block * block))


class Encoder(nn.Module):
    """Stride-2 3x3 convolutions + ReLU (each halves H and W):
    ``[..., H, W, C] -> [..., F]`` (the last stage's features, flattened)."""

    features: Sequence[int] = (32, 64)

    def __post_init__(self):
        _check_features("Encoder.features", self.features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for f in self.features:
            x = nn.relu(Conv3x3(f, stride=2)(x))
        return x.reshape(x.shape[:-3] + (-1,))


class ConditionalAutoencoder(nn.Module):
    """``(images [B, H, W, C], z [B, K]) -> reconstructions [B, H, W, C]``.

    Parameters: ``encoder``, ``code`` (image code), ``decoder_in``, ``up_<i>`` and ``out``
    (sub-pixel convolutions), plus ``gate_in`` / ``gate_<i>`` / ``film_in`` / ``film_<i>``
    per decoder stage when ``z_injection`` asks for them.

    Attributes:
      image_shape: ``(H, W, C)``; H and W divisible by ``2 ** len(features)``.
      features: encoder channels per stride-2 stage (mirrored by the decoder).
      bottleneck: width of the image code (after ``tanh``).
      image_noise: std of the Gaussian noise added to the code when ``noise_key``
        is given (training only).
      z_injection / latent_activation / temperature: see ``gbi_jax.models.latent``;
        ``concat`` appends ``z`` to the code at the decoder input, ``gate`` / ``film``
        modulate every decoder stage before its ReLU (``"concat+film"``: both).
    """

    image_shape: Sequence[int] = (28, 28, 1)
    features: Sequence[int] = (32, 64)
    bottleneck: int = 4
    image_noise: float = 0.0
    z_injection: str = "concat"
    latent_activation: str = "identity"
    temperature: float = 1.0

    def __post_init__(self):
        owner = "ConditionalAutoencoder"
        check_latent_options(self.latent_activation, self.z_injection, self.temperature, owner)
        _check_features(f"{owner}.features", self.features)
        shape = tuple(self.image_shape)
        require(len(shape) == 3, f"{owner}.image_shape", f"must be (H, W, C), got {shape}.")
        for d in shape:
            check_int(f"{owner}.image_shape", d, 1)
        scale = 2 ** len(self.features)
        require(shape[0] % scale == 0 and shape[1] % scale == 0, f"{owner}.image_shape",
                f"must have H and W divisible by {scale} (2 ** len(features)), got {shape}.")
        check_int(f"{owner}.bottleneck", self.bottleneck, 1)
        check_positive(f"{owner}.image_noise", self.image_noise, allow_zero=True)
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jax.Array, z: Optional[jax.Array] = None,
                 noise_key: Optional[jax.Array] = None) -> jax.Array:
        """``z=None`` decodes from the image code alone; ``noise_key`` adds the code noise."""
        injection = parse_z_injection(self.z_injection)
        h, w, c = self.image_shape
        n = len(self.features)
        # Image pathway: narrow, bounded, optionally noisy code.
        code = jnp.tanh(nn.Dense(self.bottleneck, name="code")(
            Encoder(self.features, name="encoder")(images)))
        if noise_key is not None and self.image_noise > 0:
            code = code + self.image_noise * jax.random.normal(noise_key, code.shape, code.dtype)
        # Decoder: code (+ z) -> image, optionally modulated by z at every stage.
        u = code
        if z is not None:
            z = transform_latent(z, self.latent_activation, self.temperature)
            if injection.concat:
                u = jnp.concatenate([code, z], -1)
        s_h, s_w = h // 2 ** n, w // 2 ** n
        d = nn.Dense(s_h * s_w * self.features[-1], name="decoder_in")(u)
        d = d.reshape(d.shape[:-1] + (s_h, s_w, self.features[-1]))
        if z is not None:
            d = modulate(d, z, injection, suffix="_in")
        d = nn.relu(d)
        for i, f in enumerate(reversed(self.features[:-1])):
            d = depth_to_space(Conv3x3(4 * f, name=f"up_{i}")(d))  # sub-pixel 2x upsampling
            if z is not None:
                d = modulate(d, z, injection, suffix=f"_{i}")
            d = nn.relu(d)
        return depth_to_space(Conv3x3(4 * c, name="out")(d))


class Classifier(nn.Module):
    """The autoencoder's :class:`Encoder` + ``Dense(hidden) -> ReLU -> Dense(num_classes)``:
    ``images [B, H, W, C] -> logits [B, num_classes]``."""

    num_classes: int
    features: Sequence[int] = (32, 64)
    hidden: int = 128

    def __post_init__(self):
        check_int("Classifier.num_classes", self.num_classes, 1)
        _check_features("Classifier.features", self.features)
        check_int("Classifier.hidden", self.hidden, 1)
        super().__post_init__()

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        h = Encoder(self.features, name="encoder")(images)
        h = nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.num_classes)(h)
