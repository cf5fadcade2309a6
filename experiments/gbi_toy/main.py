"""GBI toy experiment (switching Gaussians, LSTM with a task latent).

    python -m experiments.gbi_toy.main --config=experiments/gbi_toy/config.py \
        --workdir=workdirs/gbi_toy [--config.train.blocks=40 ...]

``config.py:smoke`` runs in seconds. Rerunning with the same workdir resumes.
"""

from experiments import entry

if __name__ == "__main__":
    entry.main("experiments.gbi_toy.experiment")
