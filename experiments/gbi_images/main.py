"""GBI image-classifier experiment entry point.

    python -m experiments.gbi_images.main --config=experiments/gbi_images/config.py \
        --workdir=workdirs/gbi_images [--config.data.data_dir=~/tensorflow_datasets ...]

Variants: ``config.py:smoke`` (seconds), ``config.py:cifar100``. Rerunning with
the same workdir resumes training from its checkpoints. A missing dataset ends
the run with a message that says how to get it (exit status 2).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.gbi_images import experiment
from gbi_jax.data import DatasetNotFoundError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to the config file (optionally ':smoke').", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    try:
        experiment.run(_CONFIG.value, _WORKDIR.value)
    except DatasetNotFoundError as e:
        print(f"error: missing dataset.\n{e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
