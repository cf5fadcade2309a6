"""GBI language-model experiment (the source corpus as z).

    python -m gbi_jax.data.corpora prepare          # once: the offline corpus (~2 min)
    python -m experiments.gbi_lm.main --config=experiments/gbi_lm/config.py \
        --workdir=workdirs/gbi_lm [--config.data.dir=DIR ...]

Variant ``config.py:smoke`` (under a minute). Rerunning resumes.
"""

from experiments import entry

if __name__ == "__main__":
    entry.main("experiments.gbi_lm.experiment")
