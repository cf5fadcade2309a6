"""GBI toy experiment entry point.

    python -m experiments.gbi_toy.main --config=experiments/gbi_toy/config.py \
        --workdir=workdirs/gbi_toy [--config.train.blocks=40 ...]

Use ``config.py:smoke`` for a run of a few seconds. Rerunning with the same
workdir resumes training from its checkpoint.
"""

from experiments import entry
from experiments.gbi_toy import experiment

if __name__ == "__main__":
    entry.launch(experiment.run)
