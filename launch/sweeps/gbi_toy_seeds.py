"""GBI toy: 3 seeds x 2 latent learning rates on the smoke config (6 runs).

    python -m launch.run --sweep=launch/sweeps/gbi_toy_seeds.py \
        --root=workdirs/sweeps/gbi_toy_seeds [--mode=vmap]

gbi_toy trains one network per entry of ``seeds``, network m with seed
``seed + seeds[m]``; fixing ``seeds=(0,)`` makes each job train exactly the
network ``seed``. With ``--mode=vmap`` the three seeds of each learning rate
train in one process (``--config.seeds=(0, 1, 2)``): 2 processes instead of 6,
same networks.
"""

from launch.sweep import Sweep, fixed, product, sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="experiments.gbi_toy.main",
        config="experiments/gbi_toy/config.py:smoke",
        jobs=product(
            fixed("seeds", (0,)),
            sweep("seed", (0, 1, 2)),
            sweep("latent.lr", (0.1, 0.3)),
        ),
    )
