"""GBI image-classifier experiment (MNIST, Fashion-MNIST, CIFAR-100).

    python -m experiments.gbi_images.main --config=experiments/gbi_images/config.py \
        --workdir=workdirs/gbi_images [--config.data.data_dir=~/tensorflow_datasets ...]

Variants: ``config.py:smoke`` (seconds), ``config.py:cifar100``. Rerunning resumes.
"""

from experiments import entry

if __name__ == "__main__":
    entry.main("experiments.gbi_images.experiment")
