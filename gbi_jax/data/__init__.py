"""Datasets: TFDS builders for offline image data, loading, batching, preprocessing.

Loading goes through TFDS without TensorFlow (``array_record`` files read with
``tfds.data_source``); see :mod:`gbi_jax.data.loading` for the dataset names and
:mod:`gbi_jax.data.builders` for the offline sources.

    from gbi_jax import data
    train = data.load("mnist_subset", "train")           # ImageData: uint8 images, labels
    for batch in data.batches({"image": train.images, "label": train.labels}, 128, seed=0):
        ...
"""

from gbi_jax.data.iterator import batch_indices, batches, epoch_permutation, steps_per_epoch
from gbi_jax.data.loading import (LOCAL_DATASETS, DatasetNotFoundError, ImageData,
                                  default_data_dir, describe, load, prepare)
from gbi_jax.data.transforms import NORMALIZATIONS, normalize
