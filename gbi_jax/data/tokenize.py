"""Tokenizers for the normalised text corpora: characters, or trained subwords.

The corpora of :mod:`gbi_jax.data.text` are printable ASCII (codes 32..126) after
normalisation; a tokenizer turns such text into ``int32`` ids and back. Two kinds
(:data:`TOKENIZERS`, built by :func:`make_tokenizer`):

``char`` (:class:`CharTokenizer`, the default)
    The 95 printable characters, id = code - 32 (space is 0, ``~`` is 94). Needs no
    training and no package; vectorised (:meth:`CharTokenizer.encode_codes` maps a
    ``uint8`` block of codes at memory speed).

``sentencepiece`` (:class:`SentencePieceTokenizer`)
    Subword pieces (BPE by default) trained in memory on the texts the caller passes,
    which should be the training split only (nothing of validation / test / OOD
    text may leak into the vocabulary). Needs the ``sentencepiece`` package
    (``pip install sentencepiece`` or ``pip install -e '.[experiments]'``), imported
    only when this tokenizer is used. One thread, deterministic (the same texts and
    options give byte-identical models). On one CPU core, 5 MB of text: training
    0.4 s (BPE) / 2 s (unigram); encoding about 5 MB/s (BPE) / 15 MB/s (unigram).

Every tokenizer has ``name``, ``vocab_size``, ``encode(text) -> int32[T]``,
``encode_batch(texts)``, ``decode(ids) -> str`` and ``state() -> dict`` (JSON
serialisable; :func:`from_state` rebuilds an identical tokenizer, so a workdir can
store the tokenizer next to the model it was trained with). Input text must be
printable ASCII; anything else raises :class:`~gbi_jax.validation.FieldError`.

:func:`encode_windows` encodes a list of texts (e.g. windows of characters) into a
right-padded id matrix with its mask and the number of characters of each text, the
denominator of bits per character.

    tok = make_tokenizer("sentencepiece", train_texts=train_texts, vocab_size=2000)
    ids, mask, chars = encode_windows(tok, windows)        # int32[N, L], bool[N, L], int32[N]
    json.dump(tok.state(), f); tok2 = from_state(json.load(f))
"""

from __future__ import annotations

import base64
import io
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from gbi_jax.validation import FieldError, check_choice, check_int

__all__ = ["Tokenizer", "CharTokenizer", "SentencePieceTokenizer", "make_tokenizer",
           "from_state", "encode_windows", "TOKENIZERS", "FIRST_CODE", "LAST_CODE",
           "PRINTABLE"]

TOKENIZERS = ("char", "sentencepiece")
FIRST_CODE, LAST_CODE = 32, 126
PRINTABLE = "".join(chr(c) for c in range(FIRST_CODE, LAST_CODE + 1))
_NOT_PRINTABLE = re.compile(r"[^ -~]")
_INSTALL = ("The sentencepiece tokenizer needs the sentencepiece package: "
            "pip install sentencepiece (or pip install -e '.[experiments]').")


def _check_printable(text: Any, field: str = "text") -> str:
    if not isinstance(text, str):
        raise FieldError(field, f"must be a str, got {type(text).__name__}.")
    bad = _NOT_PRINTABLE.search(text)
    if bad is not None:
        raise FieldError(field, f"must be printable ASCII (codes {FIRST_CODE}..{LAST_CODE}, "
                         f"normalise it with gbi_jax.data.text.normalize); character "
                         f"{bad.group()!r} (code {ord(bad.group())}) at position "
                         f"{bad.start()} is not.")
    return text


def _as_ids(ids: Any, vocab_size: int, field: str = "ids") -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise FieldError(field, f"must be a 1-D integer array, got shape {ids.shape} "
                         f"dtype {ids.dtype}.")
    ids = ids.astype(np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = int(ids[(ids < 0) | (ids >= vocab_size)][0])
        raise FieldError(field, f"must be in [0, {vocab_size - 1}] (the vocabulary), "
                         f"got {bad}.")
    return ids


class Tokenizer:
    """What every tokenizer provides (see the module docstring)."""

    name: str = ""

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        """``int32[T]`` ids of ``text`` (printable ASCII)."""
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """``[encode(t) for t in texts]`` (faster where the tokenizer can batch)."""
        return [self.encode(t) for t in texts]

    def decode(self, ids) -> str:
        """The text of ``ids`` (the inverse of :meth:`encode`)."""
        raise NotImplementedError

    def state(self) -> dict:
        """JSON-serialisable state; :func:`from_state` rebuilds the tokenizer."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """The 95 printable ASCII characters, ``id = code - 32`` (space 0 ... ``~`` 94)."""

    name = "char"

    @property
    def vocab_size(self) -> int:
        return LAST_CODE - FIRST_CODE + 1

    def encode(self, text: str) -> np.ndarray:
        _check_printable(text)
        return self.encode_codes(np.frombuffer(text.encode("ascii"), np.uint8))

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        texts = [_check_printable(t, f"texts[{i}]") for i, t in enumerate(texts)]
        if not texts:
            return []
        ids = self.encode_codes(np.frombuffer("".join(texts).encode("ascii"), np.uint8))
        return np.split(ids, np.cumsum([len(t) for t in texts])[:-1])

    def encode_codes(self, codes) -> np.ndarray:
        """``int32`` ids of an array of ASCII codes (any shape, e.g. ``TextBlocks.blocks``).

        Raises FieldError naming ``codes`` if a code is outside 32..126.
        """
        codes = np.asarray(codes)
        if codes.size and not np.issubdtype(codes.dtype, np.integer):
            raise FieldError("codes", f"must be an integer array of ASCII codes, got dtype "
                             f"{codes.dtype}.")
        ids = codes.astype(np.int32) - FIRST_CODE
        if ids.size and (ids.min() < 0 or ids.max() > LAST_CODE - FIRST_CODE):
            where = np.argwhere((ids < 0) | (ids > LAST_CODE - FIRST_CODE))[0]
            raise FieldError("codes", f"must be printable ASCII codes in {FIRST_CODE}..."
                             f"{LAST_CODE}, got {int(codes[tuple(where)])} at index "
                             f"{tuple(int(i) for i in where)}.")
        return ids

    def decode(self, ids) -> str:
        ids = _as_ids(ids, self.vocab_size)
        return (ids + FIRST_CODE).astype(np.uint8).tobytes().decode("ascii")

    def state(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size}


def _sentencepiece():
    try:
        import sentencepiece
    except ImportError as e:
        raise ImportError(_INSTALL) from e
    return sentencepiece


def _pieces(text: str, size: int, *, keep_words: bool) -> list[str]:
    """``text`` cut into pieces of at most ~``size`` characters, each cut just before a space.

    ``keep_words``: a stretch of more than ``size`` characters without a space stays
    whole (the piece runs on to the next space), so encoding the pieces one by one
    gives the same ids as encoding ``text`` (pieces never span a space); otherwise
    it is cut hard at ``size``.
    """
    out, start, n = [], 0, len(text)
    while start < n:
        end = start + size
        if end >= n:
            out.append(text[start:])
            break
        cut = text.rfind(" ", start + 1, end + 1)
        if cut <= start:
            cut = text.find(" ", end) if keep_words else end
            if cut < 0:
                cut = n
        out.append(text[start:cut])
        start = cut
    return out


class SentencePieceTokenizer(Tokenizer):
    """Subword pieces of a sentencepiece model; build with :meth:`train` or :func:`from_state`.

    Trainer options (fixed, recorded in :meth:`state`; see :data:`TRAINER_OPTIONS`):

    * ``normalization_rule_name="identity"``, ``remove_extra_whitespaces=False``,
      ``add_dummy_prefix=False``: the text is not changed, so ``decode(encode(t)) == t``
      exactly for every printable-ASCII ``t``, including leading, trailing and doubled
      spaces (a window cut mid-sentence keeps its first space).
    * ``character_coverage=1.0``, ``byte_fallback=False``; every one of the 95 printable
      characters has its own piece: besides the caller's texts the trainer sees each
      character once as a one-character sentence (this adds no pair statistics, so no
      merge comes from it), hence no printable input ever maps to ``<unk>``.
    * ``split_by_whitespace=True`` (a piece never spans a word boundary; a space is the
      first character of the piece that follows it), ``split_digits=True`` (numbers are
      spelled digit by digit, no memorised numerals), ``max_sentencepiece_length=16``.
    * ids: ``<unk>`` is 0 (never produced for printable input), no ``<s>``, ``</s>``
      or ``<pad>`` pieces (padding is a mask, see :func:`encode_windows`);
      ``vocab_size`` counts ``<unk>``.
    * deterministic: ``num_threads=1``, ``shuffle_input_sentence=False``, the
      library's random generator seeded with ``seed`` (a process-wide setting of the
      sentencepiece package).

    The texts are fed as sentences of at most ``sentence_chars`` characters, cut at
    spaces; at most ``max_sentences`` of them, taken evenly spaced over all texts if
    there are more (so every text contributes, from start to end).
    """

    name = "sentencepiece"
    MODEL_TYPES = ("bpe", "unigram")
    TRAINER_OPTIONS = dict(
        num_threads=1, character_coverage=1.0, byte_fallback=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=False, split_by_whitespace=True, split_digits=True,
        max_sentencepiece_length=16, input_sentence_size=0, shuffle_input_sentence=False,
        unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, hard_vocab_limit=True)
    # Encoding cuts long texts at spaces into pieces of about this many characters
    # and encodes them as one batch (several times faster than one long string; the
    # ids are the same because no piece spans a space).
    ENCODE_CHUNK = 2048

    def __init__(self, model_proto: bytes, options: Optional[Mapping[str, Any]] = None):
        spm = _sentencepiece()
        self._model = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._model)
        self.options = dict(options or {})

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int = 2000, model_type: str = "bpe", *,
              seed: int = 0, sentence_chars: int = 1000,
              max_sentences: int = 20_000) -> "SentencePieceTokenizer":
        """Train on ``texts`` (the training split, printable ASCII) in memory.

        ``vocab_size`` is the exact number of pieces (``<unk>`` included, at least 96);
        FieldError naming ``vocab_size`` if the texts cannot support that many.
        """
        spm = _sentencepiece()
        vocab_size = check_int("vocab_size", vocab_size, minimum=len(PRINTABLE) + 1)
        check_choice("model_type", model_type, cls.MODEL_TYPES)
        seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
        sentence_chars = check_int("sentence_chars", sentence_chars, minimum=16,
                                   maximum=4000)
        max_sentences = check_int("max_sentences", max_sentences, minimum=1)
        if isinstance(texts, str):
            raise FieldError("texts", "must be a sequence of str, got one str.")
        sentences = []
        for i, text in enumerate(texts):
            sentences += [s for s in _pieces(_check_printable(text, f"texts[{i}]"),
                                             sentence_chars, keep_words=False) if s.strip()]
        if not sentences:
            raise FieldError("texts", "holds no text to train the sentencepiece model on.")
        if len(sentences) > max_sentences:
            keep = np.arange(max_sentences) * len(sentences) // max_sentences
            sentences = [sentences[k] for k in keep]
        sentences += list(PRINTABLE)
        options = dict(cls.TRAINER_OPTIONS, vocab_size=vocab_size, model_type=model_type,
                       seed=seed, sentence_chars=sentence_chars, max_sentences=max_sentences)
        trainer = {k: v for k, v in options.items()
                   if k not in ("seed", "sentence_chars", "max_sentences")}
        writer = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences),
                                           model_writer=writer, minloglevel=2,
                                           max_sentence_length=4 * sentence_chars + 64,
                                           **trainer)
        except RuntimeError as e:
            most = re.search(r"value <= (\d+)", str(e))
            if "Vocabulary size too high" in str(e):
                raise FieldError("vocab_size", f"must be at most {most.group(1) if most else '?'}"
                                 f" for these training texts (sentencepiece cannot find "
                                 f"more pieces), got {vocab_size}.") from None
            raise
        return cls(writer.getvalue(), options)

    @property
    def vocab_size(self) -> int:
        return int(self._sp.get_piece_size())

    def pieces(self) -> list[str]:
        """The vocabulary, in id order (``"\u2581"`` stands for a space)."""
        return [self._sp.id_to_piece(i) for i in range(self.vocab_size)]

    def encode(self, text: str) -> np.ndarray:
        _check_printable(text)
        chunks = _pieces(text, self.ENCODE_CHUNK, keep_words=True)
        if len(chunks) <= 1:
            return np.asarray(self._sp.encode(text), np.int32)
        return np.concatenate([np.asarray(c, np.int32) for c in self._sp.encode(chunks)])

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        texts = [_check_printable(t, f"texts[{i}]") for i, t in enumerate(texts)]
        if any(len(t) > self.ENCODE_CHUNK for t in texts):
            return [self.encode(t) for t in texts]
        return [np.asarray(ids, np.int32) for ids in self._sp.encode(texts)]

    def decode(self, ids) -> str:
        return self._sp.decode(_as_ids(ids, self.vocab_size).tolist())

    def state(self) -> dict:
        return {"name": self.name, "vocab_size": self.vocab_size, "options": dict(self.options),
                "model": base64.b64encode(self._model).decode("ascii")}


def make_tokenizer(kind: str, train_texts: Sequence[str] = (), vocab_size: int = 2000
                   ) -> Tokenizer:
    """The tokenizer ``kind`` (one of :data:`TOKENIZERS`).

    ``char`` ignores ``train_texts`` and ``vocab_size``; ``sentencepiece`` trains on
    ``train_texts`` (pass the training split only) with :meth:`SentencePieceTokenizer.train`'s
    defaults. A bad ``kind`` raises FieldError naming ``tokenizer``.
    """
    check_choice("tokenizer", kind, TOKENIZERS)
    if kind == "char":
        return CharTokenizer()
    if isinstance(train_texts, str) or not len(train_texts):
        raise FieldError("train_texts", "must hold the training texts for the sentencepiece "
                         "tokenizer (a non-empty sequence of str).")
    return SentencePieceTokenizer.train(train_texts, vocab_size)


def from_state(state: Mapping[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer whose :meth:`Tokenizer.state` is ``state``."""
    if not isinstance(state, Mapping) or "name" not in state:
        raise FieldError("state", f"must be a dict from Tokenizer.state(), got {state!r:.80}.")
    check_choice("state.name", state["name"], TOKENIZERS)
    if state["name"] == "char":
        tok: Tokenizer = CharTokenizer()
    else:
        try:
            model = base64.b64decode(state["model"], validate=True)
        except (KeyError, TypeError, ValueError):
            raise FieldError("state.model", "must be the base64 sentencepiece model of "
                             "SentencePieceTokenizer.state().") from None
        tok = SentencePieceTokenizer(model, state.get("options"))
    if "vocab_size" in state and state["vocab_size"] != tok.vocab_size:
        raise FieldError("state.vocab_size", f"is {state['vocab_size']} but the {state['name']}"
                         f" tokenizer it describes has {tok.vocab_size} ids.")
    return tok


def encode_windows(tokenizer: Tokenizer, texts: Sequence[str], length: Optional[int] = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids int32[N, L], mask bool[N, L], chars int32[N])`` of ``N`` texts.

    Each text is encoded on its own and right-padded with id 0 to ``L`` tokens
    (``mask`` is True on real tokens); ``L = length``, or the longest encoding when
    ``length`` is None. ``chars[i]`` is the number of characters of ``texts[i]``, so
    ``bits per character = -sum(log2 p) / chars``. A text longer than ``length``
    tokens raises FieldError naming ``length``.
    """
    if isinstance(texts, str):
        raise FieldError("texts", "must be a sequence of str, got one str.")
    texts = list(texts)
    encoded = tokenizer.encode_batch(texts)
    sizes = np.asarray([len(e) for e in encoded], np.int64)
    longest = int(sizes.max()) if len(sizes) else 0
    if length is None:
        length = longest
    else:
        length = check_int("length", length, minimum=1)
        if longest > length:
            i = int(np.argmax(sizes))
            raise FieldError("length", f"must be >= the longest encoded text ({longest} "
                             f"tokens, texts[{i}]), got {length}.")
    n = len(encoded)
    mask = np.arange(length)[None, :] < sizes[:, None]
    ids = np.zeros((n, length), np.int32)
    if n and longest:
        ids[mask] = np.concatenate(encoded)
    chars = np.asarray([len(t) for t in texts], np.int32).reshape(n)
    return ids, mask, chars
