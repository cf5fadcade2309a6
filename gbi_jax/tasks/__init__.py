"""On-device task generators (pure JAX, ``key -> data``)."""

from gbi_jax.tasks.switching_gaussian import Stream, SwitchingGaussianTask, compositional_code
from gbi_jax.tasks.evidence import Batch, EvidenceTask, TaskInstance, orthant_index, orthant_signs, stack_instances
