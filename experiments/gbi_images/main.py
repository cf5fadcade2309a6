"""GBI image-classifier experiment entry point.

    python -m experiments.gbi_images.main --config=experiments/gbi_images/config.py \
        --workdir=workdirs/gbi_images [--config.data.data_dir=~/tensorflow_datasets ...]

Variants: ``config.py:smoke`` (seconds), ``config.py:cifar100``. Rerunning with
the same workdir resumes training from its checkpoints. A missing dataset ends
the run with a message that says how to get it (exit status 2).
"""

from experiments import entry
from experiments.gbi_images import experiment
from gbi_jax.data import DatasetNotFoundError

if __name__ == "__main__":
    entry.launch(experiment.run, user_errors={DatasetNotFoundError: "missing dataset"})
