"""A token-level sequence model: embedding -> :class:`RecurrentNetwork` -> logits.

:class:`TokenLM` embeds integer tokens and runs them, with the latent ``z``, through
:class:`~gbi_jax.models.RecurrentNetwork` (any of its cores; ``z`` enters as that model
documents, by default concatenated to every step's embedding). With
``out_features=None`` the readout predicts the next token (a language model); with
``out_features=K`` it gives class logits at every position (a sequence classifier on
the same backbone).

Language-model convention (:func:`lm_inputs`): a window of ``L`` tokens
``x_0 .. x_{L-1}`` is fed as ``[BOS, x_0, .., x_{L-2}]`` and scored against
``x_0 .. x_{L-1}``, so every token of the window is predicted, the first one from
``z`` alone (``BOS`` is the extra id ``vocab_size``). :func:`token_nll` gives the
negative log-likelihood of every position in nats.

Parameters: ``embed`` (``{"embedding": [vocab_size + 1, embed]}``) and
``network`` (the tree of :class:`RecurrentNetwork`).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from gbi_jax.models.recurrent import RecurrentNetwork
from gbi_jax.validation import check_int

__all__ = ["TokenLM", "lm_inputs", "token_nll"]


class TokenLM(nn.Module):
    """``tokens [..., T] int, z [..., K] -> logits [..., T, out]``.

    Attributes:
      vocab_size: number of token ids ``V``; the embedding has ``V + 1`` rows (the
        last is ``BOS``).
      embed: embedding width.
      hidden, core, weight_init, z_injection, latent_activation, temperature: as
        :class:`RecurrentNetwork`.
      out_features: readout width; ``None`` = ``vocab_size`` (next-token logits).
    """

    vocab_size: int
    embed: int = 32
    hidden: int = 256
    core: str = "lstm"
    out_features: Optional[int] = None
    weight_init: str = "torch"
    z_injection: str = "concat"
    latent_activation: str = "identity"
    temperature: float = 1.0

    def __post_init__(self):
        check_int("TokenLM.vocab_size", self.vocab_size, 2)
        check_int("TokenLM.embed", self.embed, 1)
        check_int("TokenLM.hidden", self.hidden, 1)
        if self.out_features is not None:
            check_int("TokenLM.out_features", self.out_features, 1)
        super().__post_init__()

    @property
    def bos(self) -> int:
        """The id of the beginning-of-window token (``vocab_size``)."""
        return self.vocab_size

    def network(self) -> RecurrentNetwork:
        return RecurrentNetwork(
            core=self.core, hidden=self.hidden,
            out_features=self.out_features or self.vocab_size, weight_init=self.weight_init,
            z_injection=self.z_injection, latent_activation=self.latent_activation,
            temperature=self.temperature, name="network")

    @nn.compact
    def __call__(self, tokens: jax.Array, z: Optional[jax.Array] = None,
                 return_hidden: bool = False):
        x = nn.Embed(self.vocab_size + 1, self.embed, name="embed")(tokens)
        return self.network()(x, z, return_hidden=return_hidden)


def lm_inputs(tokens: jax.Array, bos: int) -> jax.Array:
    """``[..., L]`` window -> the model input ``[BOS, x_0, .., x_{L-2}]``."""
    first = jnp.full(tokens.shape[:-1] + (1,), bos, tokens.dtype)
    return jnp.concatenate([first, tokens[..., :-1]], axis=-1)


def token_nll(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Negative log-likelihood (nats) of each target: ``[..., T, V], [..., T] -> [..., T]``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
