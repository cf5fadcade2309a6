"""Disentangling experiments, one config variant per figure (``fig1`` .. ``fig8_curved``).

    python -m experiments.disentangle.main --config=experiments/disentangle/config.py:fig1 \
        --workdir=workdirs/disentangle/fig1 [--config.train.steps=20000 ...]

``_smoke`` variants run in seconds. One host device per usable core, unless
``DISENTANGLE_HOST_DEVICES`` or ``GBI_HOST_DEVICES`` = n (see experiments.entry).
"""

from experiments import entry

if __name__ == "__main__":
    entry.main("experiments.disentangle.experiment", host_devices="auto")
