"""GBI language model (Hummos et al. 2024, Sec. 3.3, Fig. 5): the corpus as the task.

``run(config, workdir)``:

1. reads the corpora (BabyLM layout; the offline default from
   ``python -m gbi_jax.data.corpora prepare``), cuts them into blocks and tokens;
2. trains the three arms of ``config.arms`` (GBI-LSTM with the true one-hot corpus as
   ``z``, the plain LSTM with ``z`` fixed at uniform, a shuffled-``z`` control),
   ``config.seeds`` networks each, all in one ``vmap``ped program, and a classifier on
   the same backbone;
3. measures, from the checkpointed networks (re-run on every start):

   * ``loss``: validation bits per character of every arm (with the true and with the
     uniform ``z``), the learning curves and the loss by position in the window;
   * ``identification``: which training corpus a test window of each length in
     ``eval.window_chars`` comes from, by one-step GBI (``argmax -dL/dz`` at uniform
     ``z``: one forward and one backward pass whatever K), iterative GBI, exhaustive
     likelihood (K forward passes), the classifier and naive-Bayes n-gram models; the
     cost per window of each; the confusion matrix; the rank correlation of
     ``-dL/dz_k`` with the per-corpus log-likelihood ``-L(e_k)``;
   * ``adaptation``: one ``z`` per held-out corpus optimised on a few of its windows and
     evaluated on disjoint ones (Fig. 5D), for every arm (on the plain LSTM it is
     input optimisation), with the best one-hot ``z`` and tuned readout biases as
     references;
   * ``ood``: AUROC of never-seen corpora (far: documentation; near: the held-out
     corpora) against the test windows of the training corpora, for the GBI scores
     (``inference.ood_scores``) and the exhaustive loss, the plain LSTM's loss, naive
     Bayes and the classifier's max-softmax;

4. writes ``results.json``, ``results.md`` (tables with the paper's claims beside ours)
   and ``figures/``.

Every loss handed to the inference primitives is the mean NLL per character of one
window (nats), every reported loss is in bits per character.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.common import run_experiment
from experiments.gbi_lm import config as config_lib
from experiments.gbi_lm.config import ARMS
from gbi_jax import inference, training
from gbi_jax.analysis import metrics as M
from gbi_jax.analysis.ngram import NGramNaiveBayes
from gbi_jax.data import DatasetNotFoundError
from gbi_jax.data import text as gtext
from gbi_jax.data import tokenize as gtok
from gbi_jax.models import TokenLM, lm_inputs, token_nll
from gbi_jax.validation import FieldError, renamed
from gbi_jax.workdir import Workdir

LN2 = math.log(2.0)
ARM_TITLES = {"gbi": "GBI-LSTM (true one-hot z)", "uniform": "LSTM (z fixed at uniform)",
              "shuffled": "shuffled-z control"}
PAPER = {
    "loss": "training with z lowers the loss (curves only, BabyLM)",
    "identification": "one-step GBI infers the source corpus (no number given)",
    "adaptation": "GBI-LSTM starts higher but its loss falls as z is optimised; the LSTM "
                  "with optimised inputs does not improve (Fig. 5D, curves only)",
    "ood": "not reported for the language model (images: AUROC 0.89)",
}
# +1: a larger value means "more out of distribution" (see inference.OODScores).
OOD_ORIENTATION = {"loss": 1, "max_score": -1, "grad_norm": -1, "posterior_entropy": 1,
                   "loss_after_step": 1}


# ---------------------------------------------------------------------------
# Config checks.
# ---------------------------------------------------------------------------
def validate(config: ml_collections.ConfigDict) -> None:
    """Raise ValueError naming the first bad field."""

    def need(cond, field, msg):
        if not cond:
            raise FieldError(f"config.{field}", msg)

    need(len(config.arms) >= 1 and len(set(config.arms)) == len(config.arms)
         and all(a in ARMS for a in config.arms), "arms",
         f"must be distinct names from {ARMS}, got {tuple(config.arms)}")
    need("gbi" in config.arms, "arms", "must include 'gbi' (every result is about it)")
    need(config.seeds >= 1, "seeds", "must be >= 1")
    need(config.runtime.member_block >= 0, "runtime.member_block",
         "must be >= 0 (0 = one vmap over all networks)")
    d = config.data
    need(d.source in ("files", "tfds"), "data.source", f"must be 'files' or 'tfds', got "
         f"{d.source!r}")
    need(d.tokenizer in gtok.TOKENIZERS, "data.tokenizer",
         f"must be one of {gtok.TOKENIZERS}, got {d.tokenizer!r}")
    need(d.vocab_size >= 100, "data.vocab_size", "must be >= 100")
    need(d.block_chars >= 64, "data.block_chars", "must be >= 64")
    need(d.budget_chars >= 10 * d.block_chars, "data.budget_chars",
         f"must be at least 10 blocks ({10 * d.block_chars} characters)")
    need(d.eval_budget_chars >= 10 * d.block_chars, "data.eval_budget_chars",
         f"must be at least 10 blocks ({10 * d.block_chars} characters)")
    need(bool(d.train), "data.train", "must name the directory of the training corpora")
    with renamed({"TokenLM.": "model."}, prefix="config."):
        lm_from(config, 95)
    t = config.train
    for f in ("steps", "batch_size", "chunk_size", "log_every"):
        need(t[f] >= 1, f"train.{f}", "must be >= 1")
    need(2 <= t.window <= d.block_chars, "train.window",
         f"must be in [2, data.block_chars = {d.block_chars}]")
    need(t.lr > 0, "train.lr", "must be > 0")
    need(t.clip > 0, "train.clip", "must be > 0")
    need(t.schedule in SCHEDULES, "train.schedule", f"must be one of {SCHEDULES}, got "
         f"{t.schedule!r}")
    need(config.classifier.steps >= 1, "classifier.steps", "must be >= 1")
    need(config.classifier.lr > 0, "classifier.lr", "must be > 0")
    e = config.eval
    lengths = tuple(e.window_chars) + (e.val_window, config.adapt.window, config.ood.window)
    need(len(e.window_chars) >= 1, "eval.window_chars", "needs at least one length")
    for name, n in (("eval.window_chars", min(e.window_chars)), ("eval.val_window", e.val_window),
                    ("adapt.window", config.adapt.window), ("ood.window", config.ood.window)):
        need(n >= 2, name, "window lengths must be >= 2 characters")
    need(max(lengths) <= d.block_chars, "eval.window_chars",
         f"window lengths must be <= data.block_chars = {d.block_chars}")
    need(e.windows_per_corpus >= 2 and e.val_windows_per_corpus >= 2, "eval.windows_per_corpus",
         "windows per corpus must be >= 2")
    need(len(e.iterative_steps) >= 1 and all(k >= 1 for k in e.iterative_steps),
         "eval.iterative_steps", "needs step counts >= 1")
    need(e.latent_lr > 0, "eval.latent_lr", "must be > 0")
    need(e.latent_space in LATENT_SPACES, "eval.latent_space",
         f"must be one of {LATENT_SPACES}, got {e.latent_space!r}")
    need(0 <= e.latent_momentum < 1, "eval.latent_momentum", "must be in [0, 1)")
    need(len(e.ngram_orders) >= 1 and all(1 <= n <= 6 for n in e.ngram_orders),
         "eval.ngram_orders", "orders must be in 1..6")
    need(e.ngram_alpha > 0, "eval.ngram_alpha", "must be > 0")
    need(e.timing_repeats >= 1, "eval.timing_repeats", "must be >= 1")
    a = config.adapt
    need(a.windows >= 1 and a.eval_windows >= 1, "adapt.windows", "must be >= 1")
    need(len(a.steps) >= 1 and all(s >= 0 for s in a.steps) and list(a.steps) == sorted(a.steps),
         "adapt.steps", "must be increasing step counts >= 0")
    need(a.lr > 0, "adapt.lr", "must be > 0")
    need(config.ood.windows_per_corpus >= 2, "ood.windows_per_corpus", "must be >= 2")
    need(config.ood.step_length > 0, "ood.step_length", "must be > 0")


def lm_from(config, vocab_size: int, out_features: Optional[int] = None) -> TokenLM:
    """The language model (``out_features=None``) or classifier of ``config.model``; K is
    the width of the ``z`` it is called with."""
    return TokenLM(vocab_size, embed=config.model.embed, hidden=config.model.hidden,
                   out_features=out_features, z_injection=config.model.z_injection)


# ---------------------------------------------------------------------------
# Data.
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class Corpora:
    """The blocks of every group and split a run reads (see :func:`find_data`)."""

    root: str
    train: dict[str, gtext.TextBlocks]  # split -> blocks of the K training corpora
    heldout: dict[str, gtext.TextBlocks]  # "train" (adaptation) / "test"; {} if none
    ood: Optional[gtext.TextBlocks]  # test blocks of the far-OOD corpora; None if none

    @property
    def names(self) -> tuple[str, ...]:
        return self.train["train"].class_names


def text_dir(config) -> str:
    return os.path.abspath(os.path.expanduser(config.data.dir or gtext.default_text_dir()))


def _group_dir(config, sub: str) -> str:
    return sub if os.path.isabs(os.path.expanduser(sub)) else os.path.join(text_dir(config), sub)


def _read_group(config, sub: str, splits: Sequence[str], budget: int, field: str
                ) -> dict[str, gtext.TextBlocks]:
    directory = _group_dir(config, sub)
    try:
        if config.data.source == "tfds":
            builder = gtext.prepare(directory, config.data.tfds_dir or os.environ.get(
                "TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets")),
                budget_chars=budget, block_chars=config.data.block_chars)
            return {s: gtext.tfds_blocks(builder, s) for s in splits}
        return gtext.load_splits(directory, splits, budget_chars=budget,
                                 block_chars=config.data.block_chars)
    except DatasetNotFoundError as e:
        raise DatasetNotFoundError(
            f"config.{field} (with config.data.dir = {text_dir(config)!r}): {e}\nThe "
            "experiment reads --config.data.dir (default $GBI_JAX_TEXT_DIR or "
            "~/gbi_jax_data/text, where the prepare command writes without --out).") from None
    except FieldError as e:
        budget = "budget_chars" if field == "data.train" else "eval_budget_chars"
        raise FieldError(f"config.data.{budget}", getattr(e, "message", str(e))) from None


def _select(blocks: gtext.TextBlocks, names: Sequence[str]) -> gtext.TextBlocks:
    """The blocks of the classes ``names`` of ``blocks``, relabelled 0.. in that order."""
    index = [blocks.class_names.index(n) for n in names]
    keep = np.isin(blocks.labels, index)
    relabel = np.full(len(blocks.class_names), -1, np.int32)
    relabel[index] = np.arange(len(index))
    return gtext.TextBlocks(blocks.blocks[keep], relabel[blocks.labels[keep]], blocks.keys[keep],
                            tuple(names), blocks.split, blocks.source)


def find_data(config) -> tuple[Corpora]:
    """Read every corpus the run needs, or fail (before the workdir is claimed) with an
    error naming the field and how to get the data."""
    d = config.data
    train = _read_group(config, d.train, gtext.SPLITS, d.budget_chars, "data.train")
    names = train["train"].class_names
    held = tuple(d.holdout_classes)
    bad = [n for n in held if n not in names]
    if bad:
        raise FieldError("config.data.holdout_classes", f"{bad} are not corpora of "
                         f"{_group_dir(config, d.train)} (it has {list(names)})")
    kept = tuple(n for n in names if n not in held)
    if len(kept) < 2:
        raise FieldError("config.data.train", f"needs at least 2 training corpora, has "
                         f"{list(kept)}")
    heldout: dict[str, gtext.TextBlocks] = {}
    if held:
        heldout = {s: _select(train[s], held) for s in ("train", "test")}
        train = {s: _select(b, kept) for s, b in train.items()}
    if d.heldout:
        got = _read_group(config, d.heldout, ("train", "test"), d.eval_budget_chars,
                          "data.heldout")
        heldout = got if not heldout else {s: _merge(heldout[s], got[s]) for s in got}
    ood = None
    if d.ood:
        ood = _read_group(config, d.ood, ("test",), d.eval_budget_chars, "data.ood")["test"]
    return (Corpora(text_dir(config), train, heldout, ood),)


def _merge(a: gtext.TextBlocks, b: gtext.TextBlocks) -> gtext.TextBlocks:
    k = len(a.class_names)
    return gtext.TextBlocks(np.concatenate([a.blocks, b.blocks]),
                            np.concatenate([a.labels, b.labels + k]),
                            np.concatenate([a.keys, b.keys]), a.class_names + b.class_names,
                            a.split, a.source)


def windows(blocks: gtext.TextBlocks, length: int, per_class: int, *, field: str,
            skip: int = 0) -> tuple[list[str], np.ndarray]:
    """``per_class`` windows of ``length`` characters of every class (texts, labels).

    Deterministic: window ``j`` of a class is cut from its block ``j mod n`` at offset
    ``(j // n) * length`` (``n`` = the class's blocks), so windows are spread over the
    whole corpus and never overlap. ``skip`` drops the first windows of that order (to
    take disjoint sets from the same blocks)."""
    per_block = blocks.blocks.shape[1] // length
    texts, labels = [], []
    for c in range(len(blocks.class_names)):
        idx = np.flatnonzero(blocks.labels == c)
        n = len(idx)
        if (skip + per_class) > n * per_block:
            raise FieldError(f"config.{field}", f"corpus {blocks.class_names[c]!r} has room "
                             f"for {n * per_block} windows of {length} characters in its "
                             f"{blocks.split} split, fewer than {skip + per_class}; ask for "
                             "fewer windows or more data (data.*budget_chars)")
        for j in range(skip, skip + per_class):
            b, off = idx[j % n], (j // n) * length
            texts.append(blocks.blocks[b, off:off + length].tobytes().decode("ascii"))
            labels.append(c)
    return texts, np.asarray(labels, np.int32)


@dataclasses.dataclass
class Windows:
    """Encoded windows: ``ids [N, L]``, ``mask [N, L]``, ``chars [N]``, ``labels [N]``."""

    ids: np.ndarray
    mask: np.ndarray
    chars: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.labels)


def encode(tokenizer, texts: Sequence[str], labels) -> Windows:
    ids, mask, chars = gtok.encode_windows(tokenizer, texts)
    return Windows(ids.astype(np.int32), mask, chars.astype(np.int32), np.asarray(labels))


def token_blocks(tokenizer, blocks: gtext.TextBlocks) -> tuple[np.ndarray, np.ndarray]:
    """Every block as tokens: ``ids int32 [N, L]`` (right-padded) and ``lengths [N]``."""
    if isinstance(tokenizer, gtok.CharTokenizer):
        ids = tokenizer.encode_codes(blocks.blocks)
        return ids.astype(np.int32), np.full(len(blocks), ids.shape[1], np.int32)
    ids, mask, _ = gtok.encode_windows(tokenizer, [blocks.text(i) for i in range(len(blocks))])
    return ids.astype(np.int32), mask.sum(1).astype(np.int32)


def make_tokenizer(config, corpora: Corpora):
    train = corpora.train["train"]
    texts = [train.text(i) for i in range(len(train))] if config.data.tokenizer != "char" else ()
    return gtok.make_tokenizer(config.data.tokenizer, texts, config.data.vocab_size)


# ---------------------------------------------------------------------------
# Training.
# ---------------------------------------------------------------------------
def _sample(key, ids, lengths, batch: int, window: int):
    """``batch`` windows of ``window`` tokens drawn uniformly from the token blocks:
    ``(tokens [B, T], mask [B, T], block index [B])``."""
    kb, ko = jax.random.split(key)
    b = jax.random.randint(kb, (batch,), 0, ids.shape[0])
    room = jnp.maximum(lengths[b] - window, 0) + 1
    off = jnp.floor(jax.random.uniform(ko, (batch,)) * room).astype(jnp.int32)
    tok = jax.vmap(lambda i, o: jax.lax.dynamic_slice(ids[i], (o,), (window,)))(b, off)
    mask = (off[:, None] + jnp.arange(window)[None, :]) < lengths[b][:, None]
    return tok, mask, b


def arm_latent(arm, labels, key, num_corpora: int):
    """``z [B, K]`` of an arm (index into :data:`ARMS`): 0 true one-hot, 1 uniform, 2 a
    one-hot of a corpus drawn at random for every window."""
    true = jax.nn.one_hot(labels, num_corpora)
    uniform = jnp.full_like(true, 1.0 / num_corpora)
    shuffled = jax.nn.one_hot(jax.random.randint(key, labels.shape, 0, num_corpora),
                              num_corpora)
    return jnp.where(arm == 0, true, jnp.where(arm == 1, uniform, shuffled))


def lm_loss_fn(model: TokenLM, num_corpora: int, batch: int, window: int):
    def loss_fn(params, data, key, step):
        arm, (ids, lengths, labels) = data
        ks, kz = jax.random.split(key)
        tok, mask, b = _sample(ks, ids, lengths, batch, window)
        z = arm_latent(arm, labels[b], kz, num_corpora)
        nll = token_nll(model.apply(params, lm_inputs(tok, model.bos), z), tok)
        loss = jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1)
        return loss, {}

    return loss_fn


def classifier_loss_fn(model: TokenLM, batch: int, window: int):
    def loss_fn(params, data, key, step):
        _, (ids, lengths, labels) = data
        tok, mask, b = _sample(key, ids, lengths, batch, window)
        logp = jax.nn.log_softmax(model.apply(params, tok), -1)  # [B, T, K]
        nll = -jnp.take_along_axis(logp, labels[b][:, None, None], -1)[..., 0]
        loss = jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1)
        return loss, {}

    return loss_fn


SCHEDULES = ("cosine", "constant")


def optimizer(config, lr: float, steps: int) -> optax.GradientTransformation:
    """Adam after global-norm clipping; ``train.schedule = "cosine"`` decays the rate
    from ``lr`` to ``lr / 10`` over ``steps`` (the step count lives in the optimiser
    state, so a resumed run follows the same schedule)."""
    rate = optax.cosine_decay_schedule(lr, steps, alpha=0.1) \
        if config.train.schedule == "cosine" else lr
    return optax.chain(optax.clip_by_global_norm(config.train.clip), optax.adam(rate))


def train_networks(config, shared, vocab_size: int, num_corpora: int, wd: Optional[Workdir]):
    """Train every arm and seed (one fit, name ``lm``) and the classifiers (``classifier``).

    Returns ``(lm FitResult, classifier FitResult, arms [M] names)``."""
    t = config.train
    arms = tuple(config.arms)
    seeds = [config.seed + s for _ in arms for s in range(config.seeds)]
    arm_index = np.asarray([ARMS.index(a) for a in arms for _ in range(config.seeds)], np.int32)
    lm = lm_from(config, vocab_size)
    dummy_tok = jnp.zeros((2, t.window), jnp.int32)
    dummy_z = jnp.zeros((2, num_corpora))
    common = dict(chunk_size=t.chunk_size, log_every=t.log_every, workdir=wd,
                  max_loss=t.max_loss, max_grad_norm=t.max_grad_norm, shared_data=shared,
                  member_block=config.runtime.member_block or None)
    lm_fit = training.fit(
        init_fn=lambda key, _: lm.init(key, dummy_tok, dummy_z),
        loss_fn=lm_loss_fn(lm, num_corpora, t.batch_size, t.window),
        tx=optimizer(config, t.lr, t.steps), num_steps=t.steps, seeds=seeds,
        member_data=arm_index,
        name="lm", **common)
    clf = lm_from(config, vocab_size, out_features=num_corpora)
    clf_fit = training.fit(
        init_fn=lambda key, _: clf.init(key, dummy_tok),
        loss_fn=classifier_loss_fn(clf, t.batch_size, t.window),
        tx=optimizer(config, config.classifier.lr, config.classifier.steps),
        num_steps=config.classifier.steps,
        seeds=[config.seed + s for s in range(config.seeds)],
        member_data=np.zeros(config.seeds, np.int32), name="classifier", **common)
    return lm_fit, clf_fit, np.asarray([a for a in arms for _ in range(config.seeds)])


# ---------------------------------------------------------------------------
# Evaluation programs (weights frozen; vmapped over networks, batched over windows).
# ---------------------------------------------------------------------------
def window_nll(model: TokenLM, params, z, ids, mask):
    """Per-position NLL (nats, 0 at padding) of ONE window ``ids [L]`` under ``z [K]``."""
    logits = model.apply(params, lm_inputs(ids, model.bos), z)
    return token_nll(logits, ids) * mask


def window_loss(model: TokenLM, params, z, ids, mask, chars):
    """Mean NLL per character (nats) of one window: the loss GBI differentiates."""
    return jnp.sum(window_nll(model, params, z, ids, mask)) / chars


LATENT_SPACES = ("simplex", "probs")


def programs_for(config, model: TokenLM, num_corpora: int) -> dict:
    ec = config.eval
    return programs(model, num_corpora, tuple(int(s) for s in ec.iterative_steps),
                    float(ec.latent_lr), float(ec.latent_momentum), str(ec.latent_space))


@functools.lru_cache(maxsize=None)
def programs(model: TokenLM, num_corpora: int, iterative_steps: tuple, lr: float,
             momentum: float, latent_space: str = "simplex") -> dict:
    """Jitted ``(stacked params [M], windows [B]) -> per-network results [M, B, ...]``.

    Iterative GBI optimises ``z`` in ``latent_space``: ``"simplex"`` feeds
    ``softmax(logits)`` and moves the logits from 0 (so ``z`` stays a distribution over
    corpora), ``"probs"`` moves ``z`` itself from ``1/K`` (free, it can leave the
    simplex). Either way the first normalised step from the uniform point gives the
    one-step answer; the prediction is the argmax of what is optimised."""
    k = num_corpora
    z0 = inference.max_entropy_latent(k)
    opt = inference.normalized_sgd(lr, momentum)
    ks = jnp.asarray(iterative_steps) - 1

    def loss_of(params):
        return lambda z, ex: window_loss(model, params, z, *ex)

    def iterative_loss_of(params):
        if latent_space == "simplex":
            return lambda logits, ex: window_loss(model, params, jax.nn.softmax(logits), *ex)
        return loss_of(params)

    zi = jnp.zeros(k) if latent_space == "simplex" else z0

    def over_members(fn):
        return jax.jit(jax.vmap(fn, in_axes=(0, None)))

    def one_step(params, ex):
        r = inference.one_step_batch(loss_of(params), z0, ex, outputs=("scores", "loss"))
        return {"scores": r.scores, "loss": r.loss}

    def exhaustive(params, ex):
        return inference.exhaustive_batch(loss_of(params), k, ex,  # [B, K] losses
                                          outputs=("grad",)).grad

    def iterative(params, ex):
        _, trace = inference.optimize_batch(iterative_loss_of(params), zi, ex, opt,
                                            int(max(iterative_steps)))
        return trace.z[:, ks]  # [B, S, K]

    def nll_at(params, ex_z):  # per-position NLL at given latents [B, K]
        (ids, mask, _), z = ex_z
        return jax.vmap(lambda zz, i, m: window_nll(model, params, zz, i, m))(z, ids, mask)

    def ood(params, ex, step_size):
        loss = loss_of(params)
        return jax.vmap(lambda e: inference.ood_scores(lambda z: loss(z, e), z0,
                                                       step_size=step_size))(ex)

    return {"one_step": over_members(one_step), "exhaustive": over_members(exhaustive),
            "iterative": over_members(iterative),
            "nll_at": over_members(nll_at),
            "ood": jax.jit(jax.vmap(ood, in_axes=(0, None, 0)))}


@functools.lru_cache(maxsize=None)
def classifier_program(model: TokenLM):
    def probs(params, ids, mask):
        logits = model.apply(params, ids)  # [B, L, K]
        last = jnp.sum(mask, -1).astype(jnp.int32) - 1
        out = jnp.take_along_axis(logits, last[:, None, None], 1)[:, 0]
        return jax.nn.softmax(out, -1)

    return jax.jit(jax.vmap(probs, in_axes=(0, None, None)))


def batch_size_for(length: int) -> int:
    """Windows per evaluation batch: about 4,096 tokens, at most 150 windows."""
    return max(1, min(150, 4096 // max(1, length)))


def batched(fn, params, w: Windows, batch: int, *extra, per_window=()):
    """``fn(params, ((ids, mask, chars), *per_window) [b], *extra)`` over windows in
    fixed-size batches (the last one padded, so one compiled program serves all; without
    ``per_window`` the second argument is just ``(ids, mask, chars)``); results
    concatenated on axis 1 (axis 0 is the network)."""
    n = len(w)
    arrays = (w.ids, w.mask.astype(np.float32), w.chars.astype(np.float32)) + tuple(per_window)
    outs = []
    for s in range(0, n, batch):
        sl = slice(s, min(s + batch, n))
        pad = batch - (sl.stop - sl.start)
        parts = [jnp.asarray(np.concatenate([a[sl], np.repeat(a[sl][-1:], pad, 0)])
                             if pad else a[sl]) for a in arrays]
        ex = tuple(parts[:3])
        out = fn(params, (ex, *parts[3:]) if per_window else ex, *extra)
        outs.append(jax.tree_util.tree_map(lambda a: np.asarray(a)[:, :batch - pad], out))
    return jax.tree_util.tree_map(lambda *a: np.concatenate(a, axis=1), *outs)


def select(params, rows) -> Any:
    return jax.tree_util.tree_map(lambda a: a[np.asarray(rows)], params)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation along the last axis (average ranks for ties)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=-1), rankdata(b, axis=-1)
    ra = ra - ra.mean(-1, keepdims=True)
    rb = rb - rb.mean(-1, keepdims=True)
    den = np.sqrt((ra ** 2).sum(-1) * (rb ** 2).sum(-1))
    return np.where(den > 0, (ra * rb).sum(-1) / np.where(den > 0, den, 1), 0.0)


def _stats(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "per_seed": v.tolist()}


def _time_per_window(fn, repeats: int) -> float:
    """Seconds per call of ``fn`` (compiled by a first call), best of ``repeats``."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


# ---------------------------------------------------------------------------
# The four results.
# ---------------------------------------------------------------------------
@dataclasses.dataclass
class Trained:
    lm: TokenLM
    clf: TokenLM
    params: Any  # stacked [M]
    clf_params: Any  # stacked [seeds]
    arms: np.ndarray  # [M] arm names
    tokenizer: Any
    names: tuple[str, ...]

    def rows(self, arm: str) -> np.ndarray:
        return np.flatnonzero(self.arms == arm)


def loss_results(config, tr: Trained, corpora: Corpora, lm_fit) -> dict:
    """Validation bits/char of every arm with true and uniform z; learning curves; loss by
    position."""
    k = len(tr.names)
    texts, labels = windows(corpora.train["validation"], config.eval.val_window,
                            config.eval.val_windows_per_corpus, field="eval.val_windows_per_corpus")
    w = encode(tr.tokenizer, texts, labels)
    progs = programs_for(config, tr.lm, k)
    bs = batch_size_for(config.eval.val_window)
    out = {"windows": len(w), "window_chars": int(config.eval.val_window), "arms": {}}
    eye = np.eye(k, dtype=np.float32)
    for name, z in (("true_z", eye[w.labels]), ("uniform_z", np.full((len(w), k), 1 / k,
                                                                     np.float32))):
        nll = batched(progs["nll_at"], tr.params, w, bs, per_window=(z,))  # [M, N, L]
        bpc = nll.sum((1, 2)) / w.chars.sum() / LN2  # [M]
        by_pos = nll.sum(1) / np.maximum(w.mask.sum(0), 1) / LN2  # [M, L] bits per token
        for arm in config.arms:
            r = tr.rows(arm)
            a = out["arms"].setdefault(arm, {})
            a[name] = _stats(bpc[r])
            a[f"by_position_{name}"] = by_pos[r].mean(0).tolist()
    hist = lm_fit.history.get("loss")
    if hist is not None and len(hist):
        h = np.asarray(hist)  # [rows, M] nats per token
        for arm in config.arms:
            out["arms"][arm]["curve"] = (h[:, tr.rows(arm)].mean(1) / LN2).tolist()
        out["curve_steps"] = np.asarray(lm_fit.steps).tolist()
        out["curve_unit"] = "training loss, bits per token"
    gap = out["arms"]["gbi"]["uniform_z"]["mean"] - out["arms"]["gbi"]["true_z"]["mean"]
    out["gbi_true_vs_uniform_z_gap"] = gap
    if "uniform" in config.arms:
        out["gbi_true_z_vs_lstm"] = (out["arms"]["uniform"]["uniform_z"]["mean"]
                                     - out["arms"]["gbi"]["true_z"]["mean"])
    return out


def identification(config, tr: Trained, corpora: Corpora, nb: dict) -> dict:
    """Which training corpus a test window comes from, by every method, at every length."""
    k = len(tr.names)
    ec = config.eval
    progs = programs_for(config, tr.lm, k)
    clf_prog = classifier_program(tr.clf)
    gbi = tr.rows("gbi")
    out = {"chance": 1.0 / k, "corpora": list(tr.names), "lengths": {}}
    for length in ec.window_chars:
        texts, labels = windows(corpora.train["test"], length, ec.windows_per_corpus,
                                field="eval.windows_per_corpus")
        w = encode(tr.tokenizer, texts, labels)
        bs = batch_size_for(length)
        one = batched(progs["one_step"], tr.params, w, bs)  # every arm
        exh = batched(progs["exhaustive"], select(tr.params, gbi), w, bs)  # [S, N, K]
        it = batched(progs["iterative"], select(tr.params, gbi), w, bs)  # [S, N, steps, K]
        probs = np.asarray(clf_prog(tr.clf_params, jnp.asarray(w.ids), jnp.asarray(w.mask)))
        y = w.labels
        acc = lambda pred: (np.asarray(pred) == y).mean(-1)  # noqa: E731
        one_pred = one["scores"].argmax(-1)  # [M, N]
        r: dict[str, Any] = {"windows": len(w), "accuracy": {}}
        r["accuracy"]["one_step"] = _stats(acc(one_pred[gbi]))
        for j, s in enumerate(ec.iterative_steps):
            r["accuracy"][f"iterative_{s}"] = _stats(acc(it[:, :, j].argmax(-1)))
        r["accuracy"]["exhaustive"] = _stats(acc(exh.argmin(-1)))
        r["accuracy"]["classifier"] = _stats(acc(probs.argmax(-1)))
        for n, model in nb.items():
            r["accuracy"][f"naive_bayes_{n}"] = _stats([acc(model.predict(w.ids, w.mask))])
        for arm in config.arms:
            if arm != "gbi":
                r["accuracy"][f"one_step_{arm}_arm"] = _stats(acc(one_pred[tr.rows(arm)]))
        # -dL/dz_k against the per-corpus log-likelihood -L(e_k), over the K corpora.
        rho = spearman(one["scores"][gbi], -exh)  # [S, N]
        r["rank_correlation"] = _stats(np.nanmean(rho, -1))
        r["agreement_one_step_exhaustive"] = _stats((one_pred[gbi] == exh.argmin(-1)).mean(-1))
        r["confusion_one_step"] = confusion(y, one_pred[gbi], k)
        r["confusion_exhaustive"] = confusion(y, exh.argmin(-1), k)
        r["cost_us_per_window"] = cost_per_window(config, tr, progs, clf_prog, nb, w, bs)
        out["lengths"][str(length)] = r
    return out


def confusion(labels: np.ndarray, predictions: np.ndarray, k: int) -> list:
    """Row-normalised ``[K, K]`` confusion (rows: true class) pooled over the networks of
    ``predictions [S, N]``."""
    conf = np.zeros((k, k))
    np.add.at(conf, (np.broadcast_to(labels, predictions.shape), predictions), 1)
    return (conf / conf.sum(1, keepdims=True)).tolist()


def cost_per_window(config, tr: Trained, progs, clf_prog, nb: dict, w: Windows, bs: int
                    ) -> dict:
    """Microseconds per window of each method on one network, one batch of ``bs``."""
    one = select(tr.params, tr.rows("gbi")[:1])
    clf = select(tr.clf_params, [0])
    ex = (jnp.asarray(w.ids[:bs]), jnp.asarray(w.mask[:bs], jnp.float32),
          jnp.asarray(w.chars[:bs], jnp.float32))
    n = ex[0].shape[0]
    reps = int(config.eval.timing_repeats)
    us = lambda f: 1e6 * _time_per_window(f, reps) / n  # noqa: E731
    out = {"one_step": us(lambda: progs["one_step"](one, ex)),
           "exhaustive": us(lambda: progs["exhaustive"](one, ex)),
           f"iterative_{max(config.eval.iterative_steps)}": us(lambda: progs["iterative"](one, ex)),
           "classifier": us(lambda: clf_prog(clf, ex[0], ex[1]))}
    ids, mask = w.ids[:bs], w.mask[:bs]
    for order, model in nb.items():
        out[f"naive_bayes_{order}"] = us(lambda m=model: m.log_likelihood(ids, mask))
    out["exhaustive_over_one_step"] = out["exhaustive"] / out["one_step"]
    # One-step GBI's cost in forward passes (exhaustive = K of them): exhaustive scoring
    # is the cheaper of the two below this many corpora, one-step above.
    out["one_step_in_forward_passes"] = out["one_step"] / (out["exhaustive"] / len(tr.names))
    out["batch"] = n
    return out


def adaptation(config, tr: Trained, corpora: Corpora) -> dict:
    """Fig. 5D: one z per held-out corpus optimised on its adaptation windows."""
    if not corpora.heldout:
        return {"skipped": "no held-out corpora (config.data.heldout / holdout_classes)"}
    a = config.adapt
    k = len(tr.names)
    held = corpora.heldout
    names = held["train"].class_names
    steps = [int(s) for s in a.steps]
    total = max(steps)
    out = {"corpora": list(names), "steps": steps, "windows": int(a.windows),
           "eval_windows": int(a.eval_windows), "window_chars": int(a.window), "arms": {}}
    texts, labels = windows(held["train"], a.window, a.windows, field="adapt.windows")
    wa = encode(tr.tokenizer, texts, labels)
    texts, labels = windows(held["test"], a.window, a.eval_windows, field="adapt.eval_windows")
    we = encode(tr.tokenizer, texts, labels)
    fns = adaptation_program(tr.lm, k, total, float(a.lr), tuple(steps))
    for c, name in enumerate(names):
        sa, se = wa.labels == c, we.labels == c
        data_a = tuple(jnp.asarray(x) for x in (wa.ids[sa], wa.mask[sa].astype(np.float32),
                                               wa.chars[sa].astype(np.float32)))
        data_e = tuple(jnp.asarray(x) for x in (we.ids[se], we.mask[se].astype(np.float32),
                                               we.chars[se].astype(np.float32)))
        res = jax.tree_util.tree_map(np.asarray, fns(tr.params, data_a, data_e))
        for arm in config.arms:
            r = tr.rows(arm)
            d = out["arms"].setdefault(arm, {})
            d[name] = {
                "z_curve": (res["z_curve"][r].mean(0) / LN2).tolist(),
                "z_curve_sd": (res["z_curve"][r].std(0) / LN2).tolist(),
                "bias_curve": (res["bias_curve"][r].mean(0) / LN2).tolist(),
                "best_one_hot": _stats(res["best_one_hot"][r] / LN2),
                "best_one_hot_corpus": [tr.names[i] for i in res["best_index"][r]],
                "z_final": res["z_final"][r].mean(0).tolist(),
            }
    # Summary: start and end of the z curve per arm (mean over held-out corpora).
    for arm, d in out["arms"].items():
        start = np.mean([d[n]["z_curve"][0] for n in names])
        end = np.mean([d[n]["z_curve"][-1] for n in names])
        out.setdefault("summary", {})[arm] = {
            "start": start, "end": end, "change": end - start,
            "bias_end": float(np.mean([d[n]["bias_curve"][-1] for n in names])),
            "best_one_hot": float(np.mean([d[n]["best_one_hot"]["mean"] for n in names]))}
    return out


@functools.lru_cache(maxsize=None)
def adaptation_program(model: TokenLM, k: int, total: int, lr: float, steps: tuple):
    z0 = inference.max_entropy_latent(k)
    eye = jnp.eye(k)
    at = jnp.asarray(steps)

    def corpus_loss(params, z, data):  # mean NLL per character over the windows
        ids, mask, chars = data
        nll = jax.vmap(lambda i, m: jnp.sum(window_nll(model, params, z, i, m)))(ids, mask)
        return jnp.sum(nll) / jnp.sum(chars)

    def one(params, data_a, data_e):
        # z: Adam on the corpus-level latent, weights frozen.
        _, trace = inference.optimize(lambda z: corpus_loss(params, z, data_a), z0,
                                      optax.adam(lr), total)
        zs = jnp.concatenate([z0[None], trace.z])[at]  # z after 0, s1, s2, ... steps
        z_curve = jax.vmap(lambda z: corpus_loss(params, z, data_e))(zs)
        # Reference 1: the best single one-hot z, chosen on the adaptation windows.
        on_a = jax.vmap(lambda z: corpus_loss(params, z, data_a))(eye)
        best = jnp.argmin(on_a)
        best_loss = corpus_loss(params, eye[best], data_e)
        # Reference 2: the readout biases tuned the same way, at uniform z.
        bias0 = params["params"]["network"]["readout"]["bias"]

        def with_bias(b):
            p = jax.tree_util.tree_map(lambda x: x, params)
            p["params"]["network"]["readout"]["bias"] = b
            return p

        tx = optax.adam(lr)

        def bias_step(carry, _):
            b, s = carry
            g = jax.grad(lambda bb: corpus_loss(with_bias(bb), z0, data_a))(b)
            u, s = tx.update(g, s, b)
            b = optax.apply_updates(b, u)
            return (b, s), b

        _, bs = jax.lax.scan(bias_step, (bias0, tx.init(bias0)), None, length=total)
        bs = jnp.concatenate([bias0[None], bs])[at]
        bias_curve = jax.vmap(lambda b: corpus_loss(with_bias(b), z0, data_e))(bs)
        return {"z_curve": z_curve, "bias_curve": bias_curve, "best_one_hot": best_loss,
                "best_index": best, "z_final": zs[-1]}

    return jax.jit(jax.vmap(one, in_axes=(0, None, None)))


def ood(config, tr: Trained, corpora: Corpora, nb: dict) -> dict:
    """AUROC of far- and near-OOD windows against the training corpora's test windows."""
    oc = config.ood
    k = len(tr.names)
    sets = {"in": (corpora.train["test"], "ood.windows_per_corpus")}
    if corpora.ood is not None:
        sets["far"] = (corpora.ood, "ood.windows_per_corpus")
    if corpora.heldout:
        sets["near"] = (corpora.heldout["test"], "ood.windows_per_corpus")
    if len(sets) == 1:
        return {"skipped": "no OOD corpora (config.data.ood, config.data.heldout)"}
    progs = programs_for(config, tr.lm, k)
    clf_prog = classifier_program(tr.clf)
    bs = batch_size_for(oc.window)
    gbi = select(tr.params, tr.rows("gbi"))
    encoded = {}
    for key, (blocks, field) in sets.items():
        texts, labels = windows(blocks, oc.window, oc.windows_per_corpus, field=field)
        encoded[key] = encode(tr.tokenizer, texts, labels)
    # Step length of loss_after_step: ood.step_length / median in-distribution |dL/dz|.
    one_in = batched(progs["one_step"], gbi, encoded["in"], bs)
    gnorm = np.median(np.linalg.norm(one_in["scores"], axis=-1), axis=1)  # [S]
    scores = {}
    for key, w in encoded.items():
        s: dict[str, np.ndarray] = {}
        res = batched(progs["ood"], gbi, w, bs, jnp.asarray(oc.step_length / gnorm, jnp.float32))
        for f, sign in OOD_ORIENTATION.items():
            s[f"gbi_{f}"] = sign * getattr(res, f)  # [S, N]
        s["gbi_exhaustive_loss"] = batched(progs["exhaustive"], gbi, w, bs).min(-1)
        if "uniform" in config.arms:
            s["lstm_loss"] = batched(progs["one_step"], select(tr.params, tr.rows("uniform")),
                                     w, bs)["loss"]
        probs = np.asarray(clf_prog(tr.clf_params, jnp.asarray(w.ids), jnp.asarray(w.mask)))
        s["classifier_max_softmax"] = -probs.max(-1)
        for n, model in nb.items():
            ll = model.per_char_log_likelihood(w.ids, w.mask)  # [N, K]
            s[f"naive_bayes_{n}"] = -ll.max(-1)[None]
        scores[key] = s
    out = {"window_chars": int(oc.window), "windows": {k_: len(w) for k_, w in encoded.items()},
           "corpora": {"in": list(tr.names)}, "auroc": {}}
    if "far" in sets:
        out["corpora"]["far"] = list(corpora.ood.class_names)
    if "near" in sets:
        out["corpora"]["near"] = list(corpora.heldout["test"].class_names)
    for key in [k_ for k_ in ("far", "near") if k_ in scores]:
        out["auroc"][key] = {
            name: _stats([float(M.auroc(scores["in"][name][i], scores[key][name][i]))
                          for i in range(scores["in"][name].shape[0])])
            for name in scores["in"]}
    return out


# ---------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------
def run(config: ml_collections.ConfigDict, workdir: str, *,
        override_ok: Sequence[str] = ()) -> dict[str, Any]:
    """Train, evaluate, write ``results.json`` / ``results.md`` / figures; return the
    results. The data is found before the workdir is claimed."""
    return run_experiment(config, workdir, config_lib, _run_claimed, validate=validate,
                          prepare=find_data, override_ok=override_ok)


def _run_claimed(config, wd: Workdir, corpora: Corpora) -> dict[str, Any]:
    t_start = time.time()
    tokenizer = make_tokenizer(config, corpora)
    train = corpora.train["train"]
    ids, lengths = token_blocks(tokenizer, train)
    shared = (jnp.asarray(ids), jnp.asarray(lengths), jnp.asarray(train.labels))
    k = len(corpora.names)
    t0 = time.time()
    lm_fit, clf_fit, arms = train_networks(config, shared, tokenizer.vocab_size, k, wd)
    train_s = time.time() - t0
    tr = Trained(lm_from(config, tokenizer.vocab_size),
                 lm_from(config, tokenizer.vocab_size, out_features=k),
                 lm_fit.state.params, clf_fit.state.params, arms, tokenizer, corpora.names)
    t0 = time.time()
    nb = {}
    class_ids = [np.concatenate([ids[i, :lengths[i]] for i in np.flatnonzero(train.labels == c)])
                 for c in range(k)]  # each corpus's training tokens, block padding dropped
    for n in config.eval.ngram_orders:
        nb[int(n)] = NGramNaiveBayes(int(n), tokenizer.vocab_size,
                                     float(config.eval.ngram_alpha)).fit(class_ids)
    results: dict[str, Any] = {
        "experiment": "gbi_lm",
        "data": describe_data(config, corpora, tokenizer),
        "paper": PAPER,
    }
    results["loss"] = loss_results(config, tr, corpora, lm_fit)
    results["identification"] = identification(config, tr, corpora, nb)
    results["adaptation"] = adaptation(config, tr, corpora)
    results["ood"] = ood(config, tr, corpora, nb)
    results["train_s"] = train_s
    results["eval_s"] = time.time() - t0
    results["wall_time_s"] = time.time() - t_start
    results["devices"] = f"{jax.device_count()} x {jax.devices()[0].platform}"
    from experiments.gbi_lm import figures

    table = format_table(results)
    wd.finish(results, table, figures.draw if config.figures else None)
    print(table)
    return results


def describe_data(config, corpora: Corpora, tokenizer) -> dict:
    train = corpora.train
    out = {"root": corpora.root, "train_corpora": list(corpora.names),
           "blocks": {s: len(b) for s, b in train.items()},
           "block_chars": int(config.data.block_chars),
           "budget_chars": int(config.data.budget_chars),
           "heldout_corpora": list(corpora.heldout["train"].class_names) if corpora.heldout else [],
           "ood_corpora": list(corpora.ood.class_names) if corpora.ood is not None else [],
           "tokenizer": tokenizer.name, "vocab_size": int(tokenizer.vocab_size)}
    manifest = os.path.join(corpora.root, "corpora.json")
    out["offline_corpus"] = os.path.exists(manifest)
    return out


# ---------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------
def _ms(s: dict, scale: float = 1.0, digits: int = 3) -> str:
    if s["sd"]:
        return f"{scale * s['mean']:.{digits}f} ± {scale * s['sd']:.{digits}f}"
    return f"{scale * s['mean']:.{digits}f}"


def _pct(s: dict) -> str:
    return _ms(s, 100, 1) + " %"


METHOD_TITLES = {"one_step": "one-step GBI (1 forward + 1 backward)",
                 "exhaustive": "exhaustive likelihood (K forward passes)",
                 "classifier": "classifier, same backbone",
                 "one_step_uniform_arm": "control: one-step on the LSTM (z uniform in training)",
                 "one_step_shuffled_arm": "control: one-step on the shuffled-z network"}
OOD_TITLES = {"gbi_loss": "GBI: loss at uniform z", "gbi_max_score": "GBI: max_k -dL/dz_k",
              "gbi_grad_norm": "GBI: ||dL/dz||", "gbi_posterior_entropy": "GBI: posterior entropy",
              "gbi_loss_after_step": "GBI: loss after one step",
              "gbi_exhaustive_loss": "GBI: exhaustive min_k L(e_k)",
              "lstm_loss": "LSTM loss (z uniform)",
              "classifier_max_softmax": "classifier max-softmax"}


def _method_title(m: str) -> str:
    if m in METHOD_TITLES:
        return METHOD_TITLES[m]
    if m.startswith("iterative_"):
        s = m.split("_")[1]
        return f"iterative GBI, {s} step{'s' if s != '1' else ''}"
    if m.startswith("naive_bayes_"):
        n = int(m.split("_")[-1])
        return "naive Bayes, bag of characters" if n == 1 else f"naive Bayes, {n}-grams"
    return m


def format_table(results: dict) -> str:
    d = results["data"]
    lines = ["", "# GBI language model: the source corpus as z", "",
             f"Training corpora (K = {len(d['train_corpora'])}): {', '.join(d['train_corpora'])}; "
             f"held out: {', '.join(d['heldout_corpora']) or 'none'}; far OOD: "
             f"{', '.join(d['ood_corpora']) or 'none'}. "
             + ("The offline corpus stands in for BabyLM, whose numbers the paper gives only "
                "as curves; " if d["offline_corpus"] else "")
             + f"tokens: {d['tokenizer']} ({d['vocab_size']}). Mean ± sd over seeds."]
    L = results["loss"]
    lines += ["", f"## 1. Validation loss (bits per character, {L['windows']} windows of "
              f"{L['window_chars']} characters)", "",
              "| arm | with true z | with uniform z | paper |", "|---|---|---|---|"]
    for arm, a in L["arms"].items():
        lines.append(f"| {ARM_TITLES.get(arm, arm)} | {_ms(a['true_z'])} | {_ms(a['uniform_z'])} | "
                     + (PAPER["loss"] if arm == "gbi" else "") + " |")
    lines.append("")
    lines.append(f"GBI-LSTM with true z is {L['gbi_true_vs_uniform_z_gap']:.3f} bits/char below "
                 "itself at uniform z" + (f" and {L['gbi_true_z_vs_lstm']:.3f} below the LSTM."
                                          if "gbi_true_z_vs_lstm" in L else "."))
    pos = L["arms"]["gbi"]
    tpos = [0, 1, 3, 7, 15, 31, 63, 127]
    tpos = [p for p in tpos if p < len(pos["by_position_true_z"])]
    lines += ["", "Loss by position in the window (bits):", "",
              "| position | " + " | ".join(str(p + 1) for p in tpos) + " |",
              "|---" * (len(tpos) + 1) + "|"]
    for arm, a in L["arms"].items():
        for zname in ("true_z", "uniform_z"):
            if arm != "gbi" and zname == "true_z":
                continue
            lines.append(f"| {arm}, {zname.replace('_', ' ')} | "
                         + " | ".join(f"{a[f'by_position_{zname}'][p]:.2f}" for p in tpos) + " |")
    ident = results["identification"]
    lens = list(ident["lengths"])
    lines += ["", "## 2. Corpus identification (test windows, accuracy)", "",
              "| method | " + " | ".join(f"{n} chars ({ident['lengths'][n]['windows']} windows)"
                                      for n in lens)
              + " | µs/window (" + lens[-1] + " chars) |", "|---" * (len(lens) + 2) + "|"]
    methods = list(ident["lengths"][lens[0]]["accuracy"])
    cost = ident["lengths"][lens[-1]]["cost_us_per_window"]
    for m in methods:
        c = cost.get(m)
        lines.append(f"| {_method_title(m)} | " + " | ".join(
            _pct(ident["lengths"][n]["accuracy"][m]) for n in lens)
            + f" | {'' if c is None else f'{c:.0f}'} |")
    lines.append("| chance | " + " | ".join(f"{100 * ident['chance']:.1f} %" for _ in lens)
                 + " | |")
    lines += ["", "| | " + " | ".join(f"{n} chars" for n in lens) + " |",
              "|---" * (len(lens) + 1) + "|",
              "| rank correlation of -dL/dz_k with -L(e_k) (Spearman, over K) | "
              + " | ".join(_ms(ident["lengths"][n]["rank_correlation"]) for n in lens) + " |",
              "| one-step argmax = exhaustive argmax | "
              + " | ".join(_pct(ident["lengths"][n]["agreement_one_step_exhaustive"]) for n in lens)
              + " |",
              "| exhaustive / one-step cost | "
              + " | ".join(f"{ident['lengths'][n]['cost_us_per_window']['exhaustive_over_one_step']:.2f}x"
                           for n in lens) + " |",
              "| one-step cost in forward passes (break-even K; exhaustive costs K) | "
              + " | ".join(f"{ident['lengths'][n]['cost_us_per_window']['one_step_in_forward_passes']:.1f}"
                           for n in lens) + " |"]
    names = ident["corpora"]
    conf = ident["lengths"][lens[-1]]["confusion_one_step"]
    lines += ["", f"Confusion of one-step GBI at {lens[-1]} characters (rows: true corpus, "
              "fraction of its windows):", "", "| true \\ inferred | " + " | ".join(names) + " |",
              "|---" * (len(names) + 1) + "|"]
    for i, row in enumerate(conf):
        lines.append(f"| {names[i]} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    ad = results["adaptation"]
    lines += ["", "## 3. Adapting z to a held-out corpus (bits per character on disjoint windows)"]
    if "skipped" in ad:
        lines += ["", f"Skipped: {ad['skipped']}."]
    else:
        lines += ["", f"One z per corpus optimised by Adam on {ad['windows']} windows of "
                  f"{ad['window_chars']} characters, evaluated on {ad['eval_windows']} other "
                  f"windows. Paper: {PAPER['adaptation']}.", "",
                  "| arm | corpus | " + " | ".join(f"step {s}" for s in ad["steps"])
                  + " | best one-hot z | output biases tuned |",
                  "|---" * (len(ad["steps"]) + 4) + "|"]
        for arm, per in ad["arms"].items():
            for name, r in per.items():
                lines.append(f"| {arm} | {name} | " + " | ".join(f"{v:.3f}" for v in r["z_curve"])
                             + f" | {_ms(r['best_one_hot'])} ({', '.join(sorted(set(r['best_one_hot_corpus'])))})"
                             + f" | {r['bias_curve'][-1]:.3f} |")
        lines += ["", "| arm | start (uniform z) | after z optimisation | change | best one-hot | "
                  "output biases |", "|---|---|---|---|---|---|"]
        for arm, s in ad["summary"].items():
            lines.append(f"| {ARM_TITLES.get(arm, arm)} | {s['start']:.3f} | {s['end']:.3f} | "
                         f"{s['change']:+.3f} | {s['best_one_hot']:.3f} | {s['bias_end']:.3f} |")
    o = results["ood"]
    lines += ["", "## 4. OOD detection of never-seen corpora (AUROC)"]
    if "skipped" in o:
        lines += ["", f"Skipped: {o['skipped']}."]
    else:
        keys = list(o["auroc"])
        lines += ["", f"Windows of {o['window_chars']} characters; in distribution: test windows "
                  "of the training corpora; " + "; ".join(
                      f"{k_}: {', '.join(o['corpora'][k_])}" for k_ in keys)
                  + f". Paper: {PAPER['ood']}.", "",
                  "| score | " + " | ".join(f"{k_} OOD" for k_ in keys) + " |",
                  "|---" * (len(keys) + 1) + "|"]
        for name in o["auroc"][keys[0]]:
            title = OOD_TITLES.get(name) or _method_title(name)
            lines.append(f"| {title} | " + " | ".join(_ms(o["auroc"][k_][name]) for k_ in keys)
                         + " |")
    lines.append(f"\ntraining {results['train_s']:.0f} s, evaluation {results['eval_s']:.0f} s, "
                 f"wall time {results['wall_time_s']:.0f} s on {results['devices']}")
    return "\n".join(lines)
