"""Convolutional backbone for the image experiments (spec gbi.md 3.2).

``ConditionalAutoencoder``: image + class latent ``z`` -> reconstruction of the
image. The image pathway is an encoder (stride-2 convolutions) into a narrow,
bounded bottleneck (``tanh``) with optional Gaussian noise during training;
the decoder (a dense layer and sub-pixel
convolutions: 3x3 convolution + pixel shuffle, each doubling H and W) receives the
bottleneck code and ``z``. Trained with the true one-hot class as ``z``; at test
time ``z`` is inferred by GBI.

Why narrow + bounded + noisy: the paper's CIFAR-100 failure ("solutions that rely
on the visual input features more than the image class input") happens when the
image pathway alone can reconstruct the image, so ``dL/dz`` carries no class
information. A few noisy, bounded bottleneck units can carry style (slant,
thickness) but not identity, so the decoder must take the class from ``z``.

``z`` injection (``z_injection``):
* ``"concat"``: ``z`` is concatenated with the bottleneck code at the decoder input;
* ``"film"``: every decoder layer's features are modulated, ``h * (1 + gamma(z)) +
  beta(z)`` (FiLM; ``gamma``/``beta`` are bias-free linear maps of ``z``);
* ``"both"``: concatenation and FiLM.

``Classifier``: the same encoder with a linear head (cross-entropy baseline;
members of the deep ensemble).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Z_INJECTIONS = ("concat", "film", "both")


class Conv3x3(nn.Module):
    """3x3 convolution, SAME padding, stride 1 or 2, written as im2col + one matmul.

    Exactly a convolution, but built from pad/slice/concatenate and a dense
    layer. Why: on XLA:CPU the weight-gradient convolutions of ``lax.conv``
    run 3-80x slower inside a ``lax.scan`` body (where ``training.fit`` runs
    its steps) than at top level; the matmul form runs at full speed in both.
    """

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, H/s, W/s, F]
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
    x = x.reshape(*lead, h, w, block, block, c // (block * block))
    x = jnp.swapaxes(x, -4, -3)  # [..., h, i, w, j, C]
    return x.reshape(*lead, h * block, w * block, c // (block * block))


class Encoder(nn.Module):
    """Stride-2 3x3 convolutions (each halves H and W) -> flat features."""

    features: Sequence[int] = (32, 64)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, H, W, C] -> [B, F]
        for f in self.features:
            x = nn.relu(Conv3x3(f, stride=2)(x))
        return x.reshape(x.shape[:-3] + (-1,))


class FiLM(nn.Module):
    """``h * (1 + gamma(z)) + beta(z)`` over the channel axis; identity at ``z = 0``."""

    @nn.compact
    def __call__(self, h: jax.Array, z: jax.Array) -> jax.Array:
        c = h.shape[-1]
        gb = nn.Dense(2 * c, use_bias=False, kernel_init=nn.initializers.zeros)(z)
        gamma, beta = jnp.split(gb, 2, axis=-1)
        extra = h.ndim - gamma.ndim
        gamma = gamma.reshape(gamma.shape[:-1] + (1,) * extra + (c,))
        beta = beta.reshape(beta.shape[:-1] + (1,) * extra + (c,))
        return h * (1.0 + gamma) + beta


class ConditionalAutoencoder(nn.Module):
    """``(images [B, H, W, C], z [B, K]) -> reconstructions [B, H, W, C]``.

    Attributes:
      image_shape: ``(H, W, C)``; H and W divisible by ``2 ** len(features)``.
      features: encoder channels per stride-2 stage (mirrored by the decoder).
      bottleneck: width of the image code (after ``tanh``).
      image_noise: std of the Gaussian noise added to the code when ``noise_key``
        is given (training only).
      z_injection: "concat" | "film" | "both" (see module docstring).
    """

    image_shape: Sequence[int] = (28, 28, 1)
    features: Sequence[int] = (32, 64)
    bottleneck: int = 4
    image_noise: float = 0.0
    z_injection: str = "concat"

    def _check(self):
        if self.z_injection not in Z_INJECTIONS:
            raise ValueError(f"z_injection must be one of {Z_INJECTIONS}, got "
                             f"{self.z_injection!r}.")
        h, w, _ = self.image_shape
        scale = 2 ** len(self.features)
        if h % scale or w % scale:
            raise ValueError(f"image size {h}x{w} must be divisible by {scale} "
                             f"(2 ** len(features)).")

    @nn.compact
    def __call__(self, images: jax.Array, z: jax.Array,
                 noise_key: Optional[jax.Array] = None) -> jax.Array:
        self._check()
        h, w, c = self.image_shape
        n = len(self.features)
        # Image pathway: narrow, bounded, optionally noisy code.
        code = jnp.tanh(nn.Dense(self.bottleneck, name="code")(
            Encoder(self.features, name="encoder")(images)))
        if noise_key is not None and self.image_noise > 0:
            code = code + self.image_noise * jax.random.normal(noise_key, code.shape, code.dtype)
        # Decoder: code (+ z) -> image, optionally FiLM-modulated by z.
        film = self.z_injection in ("film", "both")
        u = jnp.concatenate([code, z], -1) if self.z_injection in ("concat", "both") else code
        s_h, s_w = h // 2 ** n, w // 2 ** n
        d = nn.Dense(s_h * s_w * self.features[-1], name="decoder_in")(u)
        d = d.reshape(d.shape[:-1] + (s_h, s_w, self.features[-1]))
        if film:
            d = FiLM(name="film_in")(d, z)
        d = nn.relu(d)
        for i, f in enumerate(reversed(self.features[:-1])):
            d = depth_to_space(Conv3x3(4 * f, name=f"up_{i}")(d))  # sub-pixel 2x upsampling
            if film:
                d = FiLM(name=f"film_{i}")(d, z)
            d = nn.relu(d)
        return depth_to_space(Conv3x3(4 * c, name="out")(d))


class Classifier(nn.Module):
    """The autoencoder's encoder + a linear head: ``images [B, H, W, C] -> logits [B, K]``."""

    num_classes: int
    features: Sequence[int] = (32, 64)
    hidden: int = 128

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        h = Encoder(self.features, name="encoder")(images)
        h = nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.num_classes)(h)
