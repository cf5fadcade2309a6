"""Naive-Bayes n-gram classifiers: which corpus does a window of text come from?

A baseline for the text experiment (the identity of the source corpus is the task
latent, Hummos et al. 2024, Sec. 3.3): multinomial naive Bayes over the n-grams of a
window of token ids (characters or subword ids of :mod:`gbi_jax.data.tokenize`).
Pure NumPy, CPU, no training loop.

Model
-----
:meth:`NGramNaiveBayes.fit` counts, for each class ``c``, the n-grams of that class's
training ids (one array per class, its whole training text; n-grams overlap, every
position ``0 .. T - n`` starts one). With ``N_c`` the number of n-grams of class ``c``
and ``B`` the number of distinct n-grams seen in the training data of **any** class
plus one bucket that stands for every n-gram never seen::

    p(g | c) = (count_c(g) + alpha) / (N_c + alpha * B)

(additive smoothing over the ``B`` outcomes). An n-gram seen only in other classes
has ``count_c(g) = 0``; an n-gram seen nowhere falls into the unseen bucket, whose
probability is ``alpha / (N_c + alpha * B)``. For every class the probabilities of
the ``B - 1`` seen n-grams plus the bucket sum to 1. The bucket is one outcome, not
one per possible n-gram, so the score of a window full of never-seen n-grams is
comparable across classes but is not a likelihood over all ``vocab_size**n``
strings.

The score of a window is ``sum_g log p(g | c)`` over every n-gram lying wholly in its
unmasked positions (a window with fewer than ``n`` unmasked tokens scores 0 for every
class); :meth:`~NGramNaiveBayes.predict` takes the argmax (uniform class prior),
:meth:`~NGramNaiveBayes.posterior` the softmax, and
:meth:`~NGramNaiveBayes.per_char_log_likelihood` divides by the number of n-grams
(the OOD score: its maximum over classes is low for text unlike every class).

Cost
----
An n-gram is one ``int64`` code (base ``vocab_size``; ``vocab_size**n`` must fit in
int64). ``fit`` sorts each class's codes, then all of them together (one sort each,
not ``np.unique``, whose hash path in NumPy >= 2.3 is far slower here). Scoring sorts
the n-grams of all windows once and does one ``np.searchsorted`` per class into that
class's sorted codes. On one CPU core, n = 5: ``fit`` on 6 classes x 0.8 M ids takes
0.7-1 s (random ids, 4.6 M distinct 5-grams; real text, fewer distinct ones, is
faster), ``log_likelihood`` of 5000 windows of 128 ids about 0.15-0.2 s.
Memory: 24 bytes per distinct n-gram per class (code, count, log-probability).

    nb = NGramNaiveBayes(n=5, vocab_size=95).fit([tok.encode(t) for t in train_texts])
    pred = nb.predict(ids, mask)                 # ids int[N, L], mask bool[N, L]
    ood_score = -nb.per_char_log_likelihood(ids, mask).max(axis=1)
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from gbi_jax.validation import FieldError, check_int, check_positive

__all__ = ["NGramNaiveBayes", "ngram_codes"]

_INT64_MAX = np.iinfo(np.int64).max


def _check_codes_fit(n: int, vocab_size: int) -> None:
    if vocab_size ** n - 1 > _INT64_MAX:
        raise FieldError("n", f"is too large for vocab_size {vocab_size}: vocab_size**n = "
                         f"{vocab_size}**{n} n-gram codes do not fit in int64 (at most "
                         f"{_max_n(vocab_size)} for this vocabulary), got {n}.")


def _max_n(vocab_size: int) -> int:
    n = 1
    while vocab_size ** (n + 1) - 1 <= _INT64_MAX:
        n += 1
    return n


def ngram_codes(ids: np.ndarray, n: int, vocab_size: int) -> np.ndarray:
    """``int64`` codes of the n-grams along the last axis of ``ids``.

    ``ids[..., T]`` -> ``codes[..., T - n + 1]`` (empty last axis if ``T < n``), the
    code of ``ids[..., t : t + n]`` being ``sum_j ids[..., t + j] * vocab_size**(n-1-j)``.
    """
    ids = np.asarray(ids).astype(np.int64, copy=False)
    width = max(ids.shape[-1] - n + 1, 0)
    codes = ids[..., :width].copy()
    for j in range(1, n):
        codes *= vocab_size
        codes += ids[..., j:j + width]
    return codes


def _sorted_unique(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted distinct values, their counts)``, by one sort (NumPy >= 2.3's
    ``np.unique`` takes a hash-table path that is ~30x slower on millions of codes)."""
    values = np.sort(values, kind="quicksort")
    if not values.size:
        return values, np.zeros(0, np.int64)
    first = np.concatenate([[True], values[1:] != values[:-1]])
    starts = np.flatnonzero(first)
    return values[starts], np.diff(np.append(starts, values.size)).astype(np.int64)


class NGramNaiveBayes:
    """Multinomial naive Bayes over the n-grams of token windows (see the module docstring).

    After :meth:`fit`: ``num_classes``; ``seen_codes`` (sorted ``int64`` codes of the
    n-grams seen in any class; ``num_bins = len(seen_codes) + 1``); per class
    ``codes[c]`` (sorted distinct codes), ``counts[c]`` (their counts),
    ``num_ngrams[c]`` (``N_c``).
    """

    def __init__(self, n: int, vocab_size: int, alpha: float = 0.5):
        self.n = check_int("n", n, minimum=1)
        self.vocab_size = check_int("vocab_size", vocab_size, minimum=1)
        _check_codes_fit(self.n, self.vocab_size)
        check_positive("alpha", alpha)
        self.alpha = float(alpha)
        self.codes: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.num_ngrams = np.zeros(0, np.int64)
        self.seen_codes = np.zeros(0, np.int64)
        self._log_p: list[np.ndarray] = []
        self._log_unseen = np.zeros(0)

    def __repr__(self) -> str:
        return (f"NGramNaiveBayes(n={self.n}, vocab_size={self.vocab_size}, alpha={self.alpha}"
                f", classes={self.num_classes})")

    @property
    def num_classes(self) -> int:
        return len(self.codes)

    @property
    def num_bins(self) -> int:
        """``B``: distinct n-grams seen in any class, plus the unseen bucket."""
        return len(self.seen_codes) + 1

    def fit(self, class_ids: Sequence[np.ndarray]) -> "NGramNaiveBayes":
        """Count the n-grams of each class's training ids; returns ``self``.

        ``class_ids[c]``: 1-D integer ids of class ``c``'s training text, in
        ``[0, vocab_size)``, at least ``n`` of them.
        """
        if isinstance(class_ids, np.ndarray) and class_ids.ndim == 1:
            raise FieldError("class_ids", "must be one id array per class, got a single "
                             "1-D array.")
        class_ids = list(class_ids)
        if not class_ids:
            raise FieldError("class_ids", "must hold at least one class.")
        codes, counts = [], []
        for c, ids in enumerate(class_ids):
            ids = self._check_ids(ids, f"class_ids[{c}]", ndim=1)
            if ids.shape[0] < self.n:
                raise FieldError(f"class_ids[{c}]", f"must hold at least n = {self.n} ids, "
                                 f"got {ids.shape[0]}.")
            u, k = _sorted_unique(ngram_codes(ids, self.n, self.vocab_size))
            codes.append(u)
            counts.append(k)
        self.codes, self.counts = codes, counts
        self.num_ngrams = np.asarray([k.sum() for k in counts], np.int64)
        self.seen_codes = _sorted_unique(np.concatenate(codes))[0]
        denom = self.num_ngrams + self.alpha * self.num_bins
        self._log_p = [np.log(k + self.alpha) - np.log(d) for k, d in zip(counts, denom)]
        self._log_unseen = np.log(self.alpha) - np.log(denom)
        return self

    def _check_fitted(self) -> None:
        if not self.codes:
            raise RuntimeError("NGramNaiveBayes is not fitted: call fit(class_ids) first.")

    def _check_ids(self, ids, field: str, ndim: int, mask=None) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.ndim != ndim or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise FieldError(field, f"must be a {ndim}-D integer array of token ids, got "
                             f"shape {ids.shape} dtype {ids.dtype}.")
        ids = ids.astype(np.int64, copy=False)
        real = ids if mask is None else ids[mask]
        if real.size and (real.min() < 0 or real.max() >= self.vocab_size):
            bad = real[(real < 0) | (real >= self.vocab_size)][0]
            raise FieldError(field, f"must be token ids in [0, {self.vocab_size - 1}], got "
                             f"{int(bad)}.")
        return ids

    def log_prob(self, codes) -> np.ndarray:
        """``float64[K, M]``: ``log p(g | c)`` of the n-grams with ``int64`` codes ``codes[M]``
        (a code not in ``seen_codes`` gets the unseen bucket's probability)."""
        self._check_fitted()
        codes = np.asarray(codes, np.int64)
        flat = codes.reshape(-1)
        # Sorted queries make the binary searches walk memory in order (~5x faster on
        # hundreds of thousands of queries); results are put back in input order.
        order = np.argsort(flat)
        query = flat[order]
        out = np.empty((self.num_classes, flat.size))
        for c, (known, log_p) in enumerate(zip(self.codes, self._log_p)):
            idx = np.minimum(np.searchsorted(known, query), len(known) - 1)
            out[c, order] = np.where(known[idx] == query, log_p[idx], self._log_unseen[c])
        return out.reshape((self.num_classes,) + codes.shape)

    def _window_ngrams(self, ids, mask):
        """``(codes int64[N, W], valid bool[N, W])``, W = L - n + 1 (at least 0)."""
        self._check_fitted()
        if mask is not None:
            mask = np.asarray(mask)
            if mask.dtype != np.bool_ or mask.shape != np.shape(ids):
                raise FieldError("mask", f"must be a bool array of the shape of ids "
                                 f"{np.shape(ids)}, got shape {mask.shape} dtype "
                                 f"{mask.dtype}.")
        ids = self._check_ids(ids, "ids", ndim=2, mask=mask)
        width = max(ids.shape[1] - self.n + 1, 0)
        if mask is None:
            return (ngram_codes(ids, self.n, self.vocab_size),
                    np.ones((ids.shape[0], width), bool))
        ids = np.where(mask, ids, 0)   # padding may hold anything
        valid = mask[:, :width].copy()
        for j in range(1, self.n):
            valid &= mask[:, j:j + width]
        return ngram_codes(ids, self.n, self.vocab_size), valid

    def _scores(self, ids, mask):
        """``(log-likelihoods float64[N, K], n-grams per window int64[N])``."""
        codes, valid = self._window_ngrams(ids, mask)
        lp = self.log_prob(codes[valid])                      # [K, M]
        rows = np.nonzero(valid)[0]
        out = np.zeros((codes.shape[0], self.num_classes))
        for c in range(self.num_classes):
            out[:, c] = np.bincount(rows, weights=lp[c], minlength=codes.shape[0])
        return out, valid.sum(axis=1).astype(np.int64)

    def log_likelihood(self, ids, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """``float64[N, K]``: ``sum_g log p(g | c)`` over the n-grams of each window.

        ``ids``: ``int[N, L]`` token ids; ``mask``: ``bool[N, L]``, True on real tokens
        (None: all). Only n-grams wholly inside unmasked positions count; a window
        with none scores 0.
        """
        return self._scores(ids, mask)[0]

    def count_ngrams(self, ids, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """``int64[N]``: the number of n-grams each window is scored on."""
        return self._window_ngrams(ids, mask)[1].sum(axis=1).astype(np.int64)

    def per_char_log_likelihood(self, ids, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """``float64[N, K]``: :meth:`log_likelihood` divided by the window's number of n-grams.

        NaN for a window with no n-gram (no evidence either way; a 0 would read as
        the most typical text). The OOD score is ``-max over classes``.
        """
        total, num = self._scores(ids, mask)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(num[:, None] > 0, total / np.maximum(num, 1)[:, None], np.nan)

    def predict(self, ids, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """``int64[N]``: the most likely class of each window (uniform prior; ties: lowest)."""
        return np.argmax(self.log_likelihood(ids, mask), axis=1)

    def posterior(self, ids, mask: Optional[np.ndarray] = None) -> np.ndarray:
        """``float64[N, K]``: ``p(c | window)`` under a uniform class prior."""
        ll = self.log_likelihood(ids, mask)
        ll -= ll.max(axis=1, keepdims=True)
        p = np.exp(ll)
        return p / p.sum(axis=1, keepdims=True)
