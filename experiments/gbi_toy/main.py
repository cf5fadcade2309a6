"""GBI toy experiment entry point.

    python -m experiments.gbi_toy.main --config=experiments/gbi_toy/config.py \
        --workdir=workdirs/gbi_toy [--config.train.blocks=40 ...]

Use ``config.py:smoke`` for a run of a few seconds. Rerunning with the same
workdir resumes training from its checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from experiments.gbi_toy import experiment

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to the config file (optionally ':smoke').", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.set_verbosity(logging.INFO)
    experiment.run(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
