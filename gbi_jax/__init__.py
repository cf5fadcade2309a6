"""gbi_jax: gradient-based inference of task abstractions, and multi-task
disentanglement experiments, in JAX/Flax."""

from gbi_jax import inference
from gbi_jax.inference import (exhaustive, exhaustive_batch, max_entropy_latent, one_step,
                               one_step_batch, online, ood_scores, optimize, optimize_batch,
                               per_example)

__version__ = "0.1.0"
