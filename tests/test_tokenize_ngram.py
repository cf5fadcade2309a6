"""Tokenizers (gbi_jax.data.tokenize), naive-Bayes n-gram classifiers (gbi_jax.analysis.ngram)."""

import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from gbi_jax.analysis.ngram import NGramNaiveBayes, ngram_codes
from gbi_jax.data import tokenize
from gbi_jax.data.text import normalize
from gbi_jax.data.tokenize import (PRINTABLE, CharTokenizer, encode_windows, from_state,
                                   make_tokenizer)
from gbi_jax.validation import FieldError


@pytest.fixture(scope="module")
def pydoc_text() -> str:
    from pydoc_data import topics

    return normalize("\n".join(topics.topics[k] for k in sorted(topics.topics)))


def _spm():
    return pytest.importorskip("sentencepiece", reason="the sentencepiece tokenizer needs "
                               "the sentencepiece package (pip install -e '.[experiments]')")


# ---------------------------------------------------------------- char tokenizer


def test_char_round_trip_every_printable_character():
    tok = CharTokenizer()
    assert tok.vocab_size == 95 == len(PRINTABLE) and tok.name == "char"
    ids = tok.encode(PRINTABLE)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, np.arange(95))
    assert tok.decode(ids) == PRINTABLE
    text = "".join(PRINTABLE[i] for i in np.random.default_rng(0).integers(0, 95, 1000))
    assert tok.decode(tok.encode(text)) == text
    block = np.frombuffer(text.encode("ascii"), np.uint8).reshape(10, 100)
    np.testing.assert_array_equal(tok.encode_codes(block), tok.encode(text).reshape(10, 100))
    assert [a.tolist() for a in tok.encode_batch(["ab", "", "c"])] == [[65, 66], [], [67]]


@pytest.mark.parametrize("code", [0, 9, 10, 31, 127, 200])
def test_char_out_of_range_codes_and_text(code):
    tok = CharTokenizer()
    codes = np.full((2, 3), 65, np.uint8)
    codes[1, 2] = code
    with pytest.raises(FieldError, match=rf"got {code} at index \(1, 2\)") as err:
        tok.encode_codes(codes)
    assert err.value.field == "codes"
    with pytest.raises(FieldError, match="position 2") as err:
        tok.encode("ab" + chr(code) + "cd")
    assert err.value.field == "text"
    with pytest.raises(FieldError) as err:
        tok.decode([0, 95])
    assert err.value.field == "ids"


def test_char_state_and_make_tokenizer():
    tok = make_tokenizer("char")
    assert isinstance(tok, CharTokenizer)
    again = from_state(json.loads(json.dumps(tok.state())))
    assert isinstance(again, CharTokenizer) and again.vocab_size == 95
    with pytest.raises(FieldError) as err:
        make_tokenizer("bytes")
    assert err.value.field == "tokenizer"
    with pytest.raises(FieldError) as err:
        from_state({"name": "bytes"})
    assert err.value.field == "state.name"
    with pytest.raises(FieldError) as err:
        from_state({"name": "char", "vocab_size": 96})
    assert err.value.field == "state.vocab_size"
    with pytest.raises(FieldError) as err:
        make_tokenizer("sentencepiece", train_texts=())
    assert err.value.field == "train_texts"


def test_encode_windows_pads_masks_and_counts_characters():
    tok = CharTokenizer()
    texts = ["abc", "", "hello", " x"]
    ids, mask, chars = encode_windows(tok, texts)
    assert ids.shape == mask.shape == (4, 5) and ids.dtype == np.int32 and mask.dtype == bool
    np.testing.assert_array_equal(chars, [3, 0, 5, 2])
    np.testing.assert_array_equal(mask.sum(1), [3, 0, 5, 2])
    for row, m, text in zip(ids, mask, texts):
        assert tok.decode(row[m]) == text
        assert not m[len(text):].any() and (row[~m] == 0).all()
    ids8, mask8, _ = encode_windows(tok, texts, length=8)
    assert ids8.shape == (4, 8)
    np.testing.assert_array_equal(ids8[:, :5], ids)
    np.testing.assert_array_equal(mask8[:, :5], mask)
    assert not mask8[:, 5:].any()
    with pytest.raises(FieldError, match=r"5 tokens, texts\[2\]") as err:
        encode_windows(tok, texts, length=4)
    assert err.value.field == "length"
    empty = encode_windows(tok, [])
    assert empty[0].shape == (0, 0) and empty[2].shape == (0,)


# ---------------------------------------------------------------- sentencepiece


def test_sentencepiece_is_optional(monkeypatch):
    code = "import sys, gbi_jax.data.tokenize; print('sentencepiece' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"  # imported only when the tokenizer is used
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    with pytest.raises(ImportError, match="pip install sentencepiece"):
        make_tokenizer("sentencepiece", train_texts=["some text"])


def test_sentencepiece_round_trip_vocab_size_and_compression(pydoc_text):
    _spm()
    train, held = pydoc_text[:250_000], pydoc_text[250_000:]
    tok = tokenize.SentencePieceTokenizer.train([train[:125_000], train[125_000:]],
                                                vocab_size=1000)
    assert tok.vocab_size == 1000 == len(tok.pieces()) and tok.name == "sentencepiece"
    ids = tok.encode(held)
    assert ids.dtype == np.int32 and ids.min() >= 1 and ids.max() < 1000  # no <unk> (id 0)
    assert tok.decode(ids) == held
    assert len(held) / len(ids) > 2.5  # subwords: several characters per token
    # Every printable character is a piece (none maps to <unk>), and the text is not
    # normalised: leading, trailing and doubled spaces survive.
    odd = "  " + PRINTABLE + "  `~{|}  "
    assert tok.decode(tok.encode(odd)) == odd and 0 not in tok.encode(odd)
    # encode() cuts long texts at spaces and encodes the pieces as a batch: the same ids
    # as sentencepiece's own encoding of the whole string.
    assert ids.tolist() == tok._sp.encode(held)
    windows = [held[i:i + 300] for i in range(0, 30_000, 300)]
    assert [w.tolist() for w in tok.encode_batch(windows)] == [
        tok.encode(w).tolist() for w in windows]
    with pytest.raises(FieldError) as err:
        tok.encode("tab\there")
    assert err.value.field == "text"


@pytest.mark.parametrize("model_type", ["bpe", "unigram"])
def test_sentencepiece_deterministic_and_state_round_trip(pydoc_text, model_type):
    _spm()
    train = [pydoc_text[:60_000], pydoc_text[60_000:120_000]]
    a = tokenize.SentencePieceTokenizer.train(train, vocab_size=500, model_type=model_type)
    b = tokenize.SentencePieceTokenizer.train(train, vocab_size=500, model_type=model_type)
    assert a.state() == b.state()
    assert a.state()["options"]["model_type"] == model_type
    c = from_state(json.loads(json.dumps(a.state())))
    assert isinstance(c, tokenize.SentencePieceTokenizer) and c.vocab_size == 500
    held = pydoc_text[200_000:260_000]
    np.testing.assert_array_equal(c.encode(held), a.encode(held))
    assert c.pieces() == a.pieces()
    other = tokenize.SentencePieceTokenizer.train(train[:1], vocab_size=500,
                                                  model_type=model_type)
    assert other.state()["model"] != a.state()["model"]  # trained on what it is given


def test_sentencepiece_errors_and_make_tokenizer(pydoc_text):
    _spm()
    with pytest.raises(FieldError) as err:
        tokenize.SentencePieceTokenizer.train(["abc abd abe"], vocab_size=150)
    assert err.value.field == "vocab_size" and "at most" in str(err.value)
    with pytest.raises(FieldError) as err:
        tokenize.SentencePieceTokenizer.train(["abc"], vocab_size=50)
    assert err.value.field == "vocab_size"
    with pytest.raises(FieldError) as err:
        tokenize.SentencePieceTokenizer.train(["caf\u00e9 ok"], vocab_size=200)
    assert err.value.field == "texts[0]"
    tok = make_tokenizer("sentencepiece", train_texts=[pydoc_text[:50_000]], vocab_size=300)
    assert tok.vocab_size == 300
    ids, mask, chars = encode_windows(tok, ["import sys", "x", pydoc_text[:40]])
    assert ids.shape[0] == 3 and mask.sum(1).tolist() == [len(tok.encode(t)) for t in
                                                           ["import sys", "x", pydoc_text[:40]]]
    assert chars.tolist() == [10, 1, 40]
    assert tok.decode(ids[2][mask[2]]) == pydoc_text[:40]


# ---------------------------------------------------------------- n-gram naive Bayes


def _brute_force(classes, windows, masks, n, alpha):
    """Log-likelihoods by dictionary counting, straight from the formula."""
    counts = [Counter(tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)) for seq in classes]
    seen = set().union(*counts)
    bins = len(seen) + 1
    out = np.zeros((len(windows), len(classes)))
    for w, (win, m) in enumerate(zip(windows, masks)):
        grams = [tuple(win[i:i + n]) for i in range(len(win) - n + 1) if all(m[i:i + n])]
        for c, cnt in enumerate(counts):
            total = sum(cnt.values())
            out[w, c] = sum(math.log((cnt.get(g, 0) + alpha) / (total + alpha * bins))
                            for g in grams)
    return out, bins


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_log_likelihood_equals_hand_computation(n):
    rng = np.random.default_rng(n)
    vocab, alpha = 5, 0.5
    # No class uses id 4 (its n-grams fall into the unseen bucket), class 2 never uses
    # id 3 (n-grams seen in other classes only: count 0 there).
    classes = [rng.integers(0, 4, 60), rng.integers(0, 4, 35), rng.integers(0, 3, 50)]
    windows = rng.integers(0, vocab, (12, 9))
    masks = rng.random((12, 9)) < 0.8
    masks[0] = True
    masks[1, :] = False
    nb = NGramNaiveBayes(n, vocab, alpha).fit(classes)
    want, bins = _brute_force([c.tolist() for c in classes], windows.tolist(), masks.tolist(),
                              n, alpha)
    assert nb.num_bins == bins and nb.num_classes == 3
    np.testing.assert_allclose(nb.log_likelihood(windows, masks), want, rtol=1e-12, atol=1e-12)
    full, _ = _brute_force([c.tolist() for c in classes], windows.tolist(),
                           np.ones_like(masks).tolist(), n, alpha)
    np.testing.assert_allclose(nb.log_likelihood(windows), full, rtol=1e-12)
    np.testing.assert_array_equal(nb.num_ngrams, [len(c) - n + 1 for c in classes])
    np.testing.assert_array_equal(nb.predict(windows, masks), np.argmax(want, axis=1))
    post = nb.posterior(windows, masks)
    np.testing.assert_allclose(post.sum(1), 1.0)
    np.testing.assert_allclose(post, np.exp(want) / np.exp(want).sum(1, keepdims=True))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_probabilities_sum_to_one(n):
    rng = np.random.default_rng(10 + n)
    vocab = 6
    classes = [rng.integers(0, 4, 200), rng.integers(1, 5, 30), np.array([0, 0, 0, 1, 1])]
    nb = NGramNaiveBayes(n, vocab, alpha=0.3).fit(classes)
    unseen = np.setdiff1d(np.arange(vocab ** n), nb.seen_codes)
    assert unseen.size  # the bucket stands for these
    seen_mass = np.exp(nb.log_prob(nb.seen_codes)).sum(axis=1)
    bucket = np.exp(nb.log_prob(unseen[:1]))[:, 0]
    np.testing.assert_allclose(seen_mass + bucket, 1.0, rtol=1e-12)
    # Every never-seen n-gram gets the bucket's probability.
    np.testing.assert_allclose(np.exp(nb.log_prob(unseen)), bucket[:, None] + 0 * unseen)


def test_ngram_codes_layout():
    ids = np.array([[1, 2, 3, 4]])
    np.testing.assert_array_equal(ngram_codes(ids, 2, 10), [[12, 23, 34]])
    np.testing.assert_array_equal(ngram_codes(ids, 4, 10), [[1234]])
    assert ngram_codes(ids, 5, 10).shape == (1, 0)


def test_ngram_predicts_disjoint_classes():
    rng = np.random.default_rng(0)
    classes = [rng.integers(0, 3, 2000), rng.integers(3, 6, 2000)]
    nb = NGramNaiveBayes(3, 6).fit(classes)
    windows = np.concatenate([rng.integers(0, 3, (20, 16)), rng.integers(3, 6, (20, 16))])
    labels = np.repeat([0, 1], 20)
    np.testing.assert_array_equal(nb.predict(windows), labels)
    post = nb.posterior(windows)
    assert (post[np.arange(40), labels] > 0.999).all()
    # Text of neither class (mixed letters: unseen trigrams) scores lower per n-gram.
    mixed = np.tile([0, 3], (5, 8))
    score = nb.per_char_log_likelihood(mixed).max(1)
    assert (score < nb.per_char_log_likelihood(windows).max(1).min()).all()


def test_ngram_short_windows_score_zero_and_mask_is_respected():
    rng = np.random.default_rng(1)
    nb = NGramNaiveBayes(3, 4).fit([rng.integers(0, 4, 100), rng.integers(0, 2, 100)])
    np.testing.assert_array_equal(nb.log_likelihood(rng.integers(0, 4, (5, 2))), 0.0)
    ids = rng.integers(0, 4, (6, 10))
    mask = np.ones((6, 10), bool)
    mask[0, 2:] = False          # 2 tokens: no trigram
    mask[1, :] = False
    mask[2, [0, 2, 4, 6, 8]] = False  # no 3 consecutive tokens
    mask[3, 7:] = False          # right padding: same as the first 7 tokens
    mask[4, 1] = False           # a hole: trigrams across it drop out
    ll = nb.log_likelihood(ids, mask)
    np.testing.assert_array_equal(ll[:3], 0.0)
    np.testing.assert_array_equal(nb.count_ngrams(ids, mask), [0, 0, 0, 5, 6, 8])
    np.testing.assert_allclose(ll[3], nb.log_likelihood(ids[3:4, :7])[0], rtol=1e-12)
    np.testing.assert_allclose(ll[4], nb.log_likelihood(ids[4:5, 2:])[0], rtol=1e-12)
    # Whatever sits under the mask (even out-of-vocabulary padding) changes nothing.
    noisy = ids.copy()
    noisy[~mask] = 99
    np.testing.assert_array_equal(nb.log_likelihood(noisy, mask), ll)
    per = nb.per_char_log_likelihood(ids, mask)
    assert np.isnan(per[:3]).all()
    np.testing.assert_allclose(per[3:], ll[3:] / np.array([5, 6, 8])[:, None])


def test_ngram_errors():
    with pytest.raises(FieldError, match="int64") as err:
        NGramNaiveBayes(10, 95)
    assert err.value.field == "n"
    NGramNaiveBayes(9, 95)  # 95**9 fits
    with pytest.raises(FieldError):
        NGramNaiveBayes(2, 5, alpha=0.0)
    nb = NGramNaiveBayes(2, 5)
    with pytest.raises(RuntimeError, match="fit"):
        nb.log_likelihood(np.zeros((1, 4), int))
    with pytest.raises(FieldError) as err:
        nb.fit([np.array([0, 1, 2]), np.array([0, 5, 1])])
    assert err.value.field == "class_ids[1]"
    with pytest.raises(FieldError) as err:
        nb.fit([np.array([0, 1, 2]), np.array([3])])
    assert err.value.field == "class_ids[1]"
    nb.fit([np.array([0, 1, 2]), np.array([3, 4])])
    with pytest.raises(FieldError) as err:
        nb.log_likelihood(np.array([[0, 7]]))
    assert err.value.field == "ids"
    with pytest.raises(FieldError) as err:
        nb.log_likelihood(np.array([0, 1]))
    assert err.value.field == "ids"
    with pytest.raises(FieldError) as err:
        nb.log_likelihood(np.array([[0, 1]]), np.array([[1, 1]]))
    assert err.value.field == "mask"
