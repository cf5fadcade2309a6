"""Reading and writing IDX files (the MNIST / Fashion-MNIST file format).

An IDX file is a big-endian header -- two zero bytes, a type code, the number
of dimensions ``d`` -- followed by ``d`` int32 sizes and the raw data in C
order. Files may be gzipped (``.gz``); both are read transparently.

The standard four files of a split pair are
``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
"""

from __future__ import annotations

import gzip
import os
from typing import Optional

import numpy as np

__all__ = ["read_idx", "write_idx", "find_idx_file", "find_split_files", "IDX_STEMS",
           "missing_idx_files"]

# Type codes of the IDX format -> numpy big-endian dtypes.
_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_CODES = {v.newbyteorder("=").str: k for k, v in _DTYPES.items()}

# split -> (images file stem, labels file stem); the standard MNIST names.
IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _open(path: str):
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a native-endian numpy array.

    Raises:
      ValueError: the file is not a well-formed IDX file (the message names it).
    """
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r}).")
    dtype, ndim = _DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(s) for s in np.frombuffer(data[4:header], ">i4"))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes of data) but the file "
            f"holds {len(data) - header} bytes; the file is truncated or corrupt.")
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray, *, compress: Optional[bool] = None) -> str:
    """Write ``array`` as an IDX file; gzipped if ``compress`` (default: path ends in .gz)."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    payload = header + array.astype(_DTYPES[code]).tobytes()
    if compress is None:
        compress = path.endswith(".gz")
    opener = gzip.open if compress else open
    with opener(path, "wb") as f:
        f.write(payload)
    return path


def find_idx_file(directory: str, stem: str) -> Optional[str]:
    """``directory/stem.gz`` or ``directory/stem`` (also the ``stem.idx3-ubyte`` spelling)."""
    candidates = [stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz",
                  stem.replace("-idx", ".idx")]
    for name in candidates:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def missing_idx_files(directory: str) -> list[str]:
    """Standard file stems not found in ``directory`` (empty when complete)."""
    return [stem for pair in IDX_STEMS.values() for stem in pair
            if find_idx_file(directory, stem) is None]


def find_split_files(directory: str, split: str) -> tuple[str, str]:
    """Paths of the (images, labels) IDX files of ``split`` ("train" or "test")."""
    images, labels = (find_idx_file(directory, s) for s in IDX_STEMS[split])
    if images is None or labels is None:
        raise FileNotFoundError(f"IDX files of split {split!r} not found in {directory}.")
    return images, labels
