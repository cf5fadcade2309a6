"""Datasets: offline image data, loading, batching, preprocessing.

The offline datasets are read straight from their source files
(:mod:`gbi_jax.data.sources`; loading them writes nothing); registered TFDS
datasets are read without TensorFlow (``array_record`` files read with
``tfds.data_source``). See :mod:`gbi_jax.data.loading` for the dataset names and
:mod:`gbi_jax.data.builders` for TFDS copies of the offline data.

    from gbi_jax import data
    train = data.load("mnist_subset", "train")           # ImageData: uint8 images, labels
    for batch in data.batches({"image": train.images, "label": train.labels}, 128, seed=0):
        ...
"""

from gbi_jax.data.iterator import batch_indices, batches, epoch_permutation, steps_per_epoch
from gbi_jax.data.loading import (LOCAL_DATASETS, DatasetNotFoundError, ImageData,
                                  default_data_dir, describe, load, prepare)
from gbi_jax.data.transforms import NORMALIZATIONS, normalize
