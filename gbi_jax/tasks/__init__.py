"""On-device task generators (pure JAX, ``key -> data``)."""

from gbi_jax.tasks.switching_gaussian import Stream, SwitchingGaussianTask, compositional_code
