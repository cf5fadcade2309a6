"""GPT-style causal transformer for continuous inputs (spec disentangle.md 3.1).

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
  zeroed, frozen embedding adds nothing); ``positional=True`` adds a learned one.

Shapes: ``inputs [..., S, F] -> outputs [..., S, out_features]``; with
``return_hidden=True`` also the final-LayerNorm states ``[..., S, d]`` (the
representation the readout and the decoders see). Pass ``deterministic=False`` and
a ``"dropout"`` rng for training.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.models.recurrent import torch_uniform


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
    """

    out_features: int
    width: int = 64
    layers: int = 1
    heads: int = 8
    mlp: int = 256
    dropout: float = 0.1
    positional: bool = False
    max_len: int = 64

    def setup(self):
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads}).")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}.")

    @nn.compact
    def __call__(self, inputs, *, deterministic: bool = True, return_hidden: bool = False):
        x = nn.Dense(self.width, kernel_init=_normal(0.02), name="input_projection")(inputs)
        if self.positional:
            seq = inputs.shape[-2]
            if seq > self.max_len:
                raise ValueError(f"sequence length {seq} exceeds max_len={self.max_len}.")
            x = x + self.param("wpe", _normal(0.01), (self.max_len, self.width))[:seq]
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
