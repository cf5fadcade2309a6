"""GPT-style causal transformer for continuous inputs (Vafidis et al. 2025).

The disentangling authors use HuggingFace ``GPT2Model`` with ``n_embd=64``,
``n_layer=1``, ``n_head=8`` fed through ``inputs_embeds`` by a linear input
projection, with positional embeddings zeroed and frozen (the causal mask is the
only order signal). This module is that network written in Flax:

``Linear(F -> d) -> dropout -> [pre-LN block: x + Attn(LN x); x + MLP(LN x)] x L
-> LN -> Linear(d -> out)``

* attention: causal, ``heads`` heads of width ``d / heads``, scale ``1/sqrt(head)``,
  dropout on the attention probabilities and after the output projection;
* MLP: ``d -> 4d -> d`` with ``gelu`` (tanh approximation, HF's ``gelu_new``);
* init as GPT-2: every kernel ``N(0, 0.02)``, the two residual output projections
  ``N(0, 0.02 / sqrt(2 L))``, biases 0, LayerNorm ``(1, 0)`` with eps 1e-5; the input
  projection ``N(0, 0.02)``; the readout uses PyTorch's ``nn.Linear`` default
  ``U(+-1/sqrt(d))`` (it is a plain ``Linear`` in the authors' code);
* no positional embedding at all (``positional=False``, the default: the authors'
  zeroed, frozen embedding adds nothing); ``positional=True`` adds a learned one;
* an optional latent ``z`` (``gbi_jax.models.latent``): ``concat`` appends it to every
  token before the input projection, ``gate`` / ``film`` modulate the embedded tokens.
  Without ``z`` (the default) the network and its parameters are exactly the above.

Shapes: ``inputs [..., S, F]`` (and ``z [..., K]`` or ``[..., S, K]``) ``-> outputs
[..., S, out_features]``; with ``return_hidden=True`` also the final-LayerNorm states
``[..., S, d]`` (the representation the readout and the decoders see). Pass
``deterministic=False`` and a ``"dropout"`` rng for training.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.models.latent import (broadcast_latent, check_latent_options, modulate,
                                   parse_z_injection, transform_latent)
from gbi_jax.models.recurrent import torch_uniform
from gbi_jax.validation import check_int, check_range, require


def _normal(std):
    return nn.initializers.normal(stddev=std)


class CausalSelfAttention(nn.Module):
    width: int
    heads: int
    dropout: float
    proj_std: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        *batch, seq, _ = x.shape
        head = self.width // self.heads
        qkv = nn.Dense(3 * self.width, kernel_init=_normal(0.02), name="c_attn")(x)
        q, k, v = jnp.split(qkv, 3, axis=-1)
        split = lambda a: a.reshape(*batch, seq, self.heads, head)
        q, k, v = split(q), split(k), split(v)
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(head)
        causal = jnp.tril(jnp.ones((seq, seq), bool))
        logits = jnp.where(causal, logits, jnp.finfo(logits.dtype).min)
        probs = jax.nn.softmax(logits, axis=-1)
        probs = nn.Dropout(self.dropout)(probs, deterministic=deterministic)
        out = jnp.einsum("...hqk,...khd->...qhd", probs, v).reshape(*batch, seq, self.width)
        out = nn.Dense(self.width, kernel_init=_normal(self.proj_std), name="c_proj")(out)
        return nn.Dropout(self.dropout)(out, deterministic=deterministic)


class Block(nn.Module):
    width: int
    heads: int
    mlp: int
    dropout: float
    proj_std: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        ln = lambda name: nn.LayerNorm(epsilon=1e-5, name=name)
        x = x + CausalSelfAttention(self.width, self.heads, self.dropout, self.proj_std,
                                    name="attn")(ln("ln_1")(x), deterministic)
        h = nn.Dense(self.mlp, kernel_init=_normal(0.02), name="c_fc")(ln("ln_2")(x))
        h = jax.nn.gelu(h, approximate=True)
        h = nn.Dense(self.width, kernel_init=_normal(self.proj_std), name="c_proj")(h)
        return x + nn.Dropout(self.dropout)(h, deterministic=deterministic)


class CausalTransformer(nn.Module):
    """GPT-2-style causal transformer over continuous input sequences.

    Attributes:
      out_features: readout width.
      width: model width d (64).
      layers: number of blocks (1).
      heads: attention heads (8).
      mlp: MLP inner width (256 = 4d).
      dropout: dropout rate on embeddings, attention probabilities and residuals (0.1).
      positional: add a learned positional embedding (default off, as the authors).
      max_len: length of the positional table when ``positional``.
      z_injection / latent_activation / temperature: how an optional ``z`` enters (see
        ``gbi_jax.models.latent``).
    """

    out_features: int
    width: int = 64
    layers: int = 1
    heads: int = 8
    mlp: int = 256
    dropout: float = 0.1
    positional: bool = False
    max_len: int = 64
    z_injection: str = "concat"
    latent_activation: str = "identity"
    temperature: float = 1.0

    def __post_init__(self):
        for field in ("out_features", "width", "layers", "heads", "mlp", "max_len"):
            check_int(f"CausalTransformer.{field}", getattr(self, field), 1)
        require(self.width % self.heads == 0, "CausalTransformer.width",
                f"must be divisible by heads ({self.heads}), got {self.width}.")
        check_range("CausalTransformer.dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_latent_options(self.latent_activation, self.z_injection, self.temperature,
                             "CausalTransformer")
        super().__post_init__()

    @nn.compact
    def __call__(self, inputs, z: Optional[jax.Array] = None, *, deterministic: bool = True,
                 return_hidden: bool = False):
        """``z=None`` (the default) runs without a latent."""
        injection = parse_z_injection(self.z_injection)
        tokens = inputs
        if z is not None:
            zt = broadcast_latent(transform_latent(z, self.latent_activation, self.temperature),
                                  inputs)
            if injection.concat:
                tokens = jnp.concatenate([inputs, zt], -1)
        x = nn.Dense(self.width, kernel_init=_normal(0.02), name="input_projection")(tokens)
        if self.positional:
            seq = inputs.shape[-2]
            if seq > self.max_len:
                raise ValueError(f"sequence length {seq} exceeds max_len={self.max_len}.")
            x = x + self.param("wpe", _normal(0.01), (self.max_len, self.width))[:seq]
        if z is not None:
            x = modulate(x, zt, injection)
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        proj_std = 0.02 / math.sqrt(2 * self.layers)
        for i in range(self.layers):
            x = Block(self.width, self.heads, self.mlp, self.dropout, proj_std,
                      name=f"h_{i}")(x, deterministic)
        hidden = nn.LayerNorm(epsilon=1e-5, name="ln_f")(x)
        init = torch_uniform(self.width)
        out = nn.Dense(self.out_features, kernel_init=init, bias_init=init,
                       name="readout")(hidden)
        if return_hidden:
            return out, hidden
        return out
