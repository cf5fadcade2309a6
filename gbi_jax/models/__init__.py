"""Flax modules that take ``(inputs, z)``."""

from gbi_jax.models.latent import broadcast_latent, transform_latent
from gbi_jax.models.mlp import MLP
from gbi_jax.models.recurrent import (CORES, GRUCell, LSTMCell, RecurrentNetwork, RNNCell,
                                      make_cell)
from gbi_jax.models.transformer import CausalTransformer
