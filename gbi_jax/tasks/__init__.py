"""On-device task generators (pure JAX, ``key -> data``)."""

from gbi_jax.tasks.evidence import (Batch, EvidenceTask, TaskInstance, line_angles,
                                    orthant_index, orthant_signs, stack_instances)
from gbi_jax.tasks.switching_gaussian import (Stream, SwitchingGaussianTask, compositional_code,
                                              mean_block_length)
