"""Flax modules and functional models that take ``(inputs, z)``.

* :class:`MLP` (``mlp``);
* recurrent cores :data:`CORES` (``RNNCell``, ``GRUCell``, ``LSTMCell``) and the
  sequence model :class:`RecurrentNetwork` (``recurrent``);
* the fast ReLU RNN: the functional sequence model :class:`FastRNN` with
  ``RecurrentNetwork``'s parameter tree, over the primitives ``relu_rnn.relu_rnn``
  (hand-written backward pass) and ``relu_rnn.linear`` (module ``relu_rnn``);
* :class:`CausalTransformer` (``transformer``);
* :class:`TokenLM`: embedding -> recurrent network -> next-token or class logits, with
  :func:`lm_inputs`, :func:`token_nll` (``language``);
* :class:`ConditionalAutoencoder`, :class:`Classifier`, :class:`Conv3x3`,
  :func:`depth_to_space`, :class:`Encoder` (``conv``);
* the latent vocabulary :data:`Z_INJECTIONS`, :class:`FiLM` (``latent``).
"""

from gbi_jax.models.conv import (Classifier, ConditionalAutoencoder, Conv3x3, Encoder,
                                 depth_to_space)
from gbi_jax.models.latent import (LATENT_ACTIVATIONS, Z_INJECTIONS, FiLM, broadcast_latent,
                                   parse_z_injection, transform_latent)
from gbi_jax.models.language import TokenLM, lm_inputs, token_nll
from gbi_jax.models.mlp import MLP
from gbi_jax.models.recurrent import (CORES, WEIGHT_INITS, GRUCell, LSTMCell,
                                      RecurrentNetwork, RNNCell, make_cell)
from gbi_jax.models.relu_rnn import FastRNN
from gbi_jax.models.transformer import CausalTransformer
