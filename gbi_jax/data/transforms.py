"""Image preprocessing that runs on host (numpy) or inside ``jit`` (jax.numpy).

Normalisation matters for OOD detection (Hummos et al. 2024, Sec. 3.2): MNIST and
Fashion-MNIST differ in mean intensity, so a detector can look good by reading
brightness alone. ``"per_image"`` standardises every image to zero mean and unit
standard deviation, removing those statistics for every model alike.
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["NORMALIZATIONS", "normalize"]

NORMALIZATIONS = ("per_image", "unit", "none")


def normalize(images, method: str = "per_image", eps: float = 1e-6):
    """Map ``uint8[..., H, W, C]`` images to float32.

    ``"per_image"``: ``(x - mean(x)) / std(x)`` over each image's pixels and
    channels (x scaled to [0, 1] first); ``"unit"``: ``x / 255``; ``"none"``:
    float32 cast only.
    """
    x = jnp.asarray(images).astype(jnp.float32)
    if method == "none":
        return x
    x = x / 255.0
    if method == "unit":
        return x
    if method == "per_image":
        axes = (-3, -2, -1)
        mean = jnp.mean(x, axis=axes, keepdims=True)
        std = jnp.std(x, axis=axes, keepdims=True)
        return (x - mean) / (std + eps)
    raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {method!r}.")
