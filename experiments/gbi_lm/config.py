"""Config of the GBI language-model experiment (Hummos et al. 2024, Sec. 3.3, Fig. 5).

``get_config()`` trains character-level LSTM language models on the offline corpus
(``python -m gbi_jax.data.corpora prepare``: six training corpora, two held-out and two
documentation corpora, standing in for BabyLM) with the identity of the source corpus
as ``z``, and measures the four results of the experiment module. About 25 minutes on 2
CPU cores. ``get_config("smoke")`` runs the same pipeline on a small slice in under a
minute.

With the real BabyLM: ``--config.data.dir=babylm_data --config.data.train=train_10M
--config.data.holdout_classes=switchboard,qed --config.data.heldout="" `` holds two
sources out of training (adaptation and near-OOD corpora); ``--config.data.ood=DIR``
names a directory of far-OOD text (any BabyLM-layout directory).

Details the paper leaves open, and what we chose (each a field here):
* tokens: printable ASCII characters (95 ids, ``data.tokenizer = "char"``), or a
  sentencepiece BPE of ``data.vocab_size`` pieces trained on the training split only
  (``"sentencepiece"``); bits per character are reported either way;
* model: ``TokenLM`` = embedding (``model.embed``) -> 1-layer LSTM (``model.hidden``)
  -> linear readout, ``z`` (K = number of training corpora) concatenated to the
  embedding at every step (``model.z_injection``); each window starts from a zero
  state with a beginning-of-window token, so the first character is predicted from
  ``z`` alone;
* arms (``arms``), same architecture, same seeds (so the same initial weights and the
  same batches): ``gbi`` (z = the true one-hot corpus), ``uniform`` (z fixed at
  ``1/K``: the plain LSTM), ``shuffled`` (z = a one-hot of a corpus drawn uniformly at
  random for every window: the same input statistics as ``gbi``, no information);
* training: Adam (``train.lr``, cosine decay to a tenth over the run with
  ``train.schedule = "cosine"``) with global-norm clipping (``train.clip``), batches of
  ``train.batch_size`` windows of ``train.window`` tokens drawn uniformly from the
  training blocks; ``seeds`` networks per arm, every arm and seed in one ``vmap``;
* classifier baseline: the same backbone with a K-way readout, cross-entropy of the
  corpus at every position of the window (so one network answers at every length);
* iterative GBI: SGD with momentum on the unit-normalised gradient
  (``eval.latent_lr``, ``eval.latent_momentum``) from the uniform point, on the simplex
  (``eval.latent_space = "simplex"``: ``z = softmax(logits)``, logits from 0) or on a
  free ``z`` (``"probs"``, which drifts off the simplex and loses accuracy after a few
  steps); step 1 gives the one-step answer either way;
* adaptation to a held-out corpus: one ``z`` per corpus, free in probability
  coordinates, optimised by Adam (``adapt.lr``) on ``adapt.windows`` windows of the
  corpus's training split and evaluated on ``adapt.eval_windows`` windows of its test
  split; the same on the plain LSTM's ``z`` inputs; references: the best one-hot ``z``
  chosen on the adaptation windows and the readout biases tuned the same way (at
  uniform ``z``);
* naive Bayes: multinomial over the window's n-grams (``eval.ngram_orders``), add-alpha
  smoothing (``eval.ngram_alpha``), trained on the training split.

Resuming a workdir with a changed config: :data:`RUNTIME_FIELDS` (where the data is
read from, figures, ``runtime.*``, divergence bounds) are never compared; :data:`EVALUATION_FIELDS`
(``eval``, ``adapt``, ``ood``) may change, each change recorded in ``history.jsonl``
(every evaluation runs again on each start from the checkpointed networks). Any other
field is a conflict unless listed in ``--config_override_ok=train.lr,...``.
"""

from __future__ import annotations

import ml_collections

ARMS = ("gbi", "uniform", "shuffled")
RUNTIME_FIELDS = ("data.dir", "data.tfds_dir", "figures", "runtime", "train.max_loss",
                  "train.max_grad_norm")
EVALUATION_FIELDS = ("eval", "adapt", "ood")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.seeds = 3  # networks per arm (seed, seed + 1, ...), trained together
    c.arms = ARMS

    c.data = ml_collections.ConfigDict()
    # "" -> $GBI_JAX_TEXT_DIR or ~/gbi_jax_data/text (python -m gbi_jax.data.corpora prepare)
    c.data.dir = ""
    c.data.train = "train"  # sub-directory of the training corpora (K = its files)
    c.data.heldout = "heldout"  # held-out corpora ("" = none; see holdout_classes)
    c.data.ood = "ood"  # far-OOD corpora ("" = none)
    c.data.holdout_classes = ()  # corpora of data.train kept out of training (held out)
    c.data.source = "files"  # "files" (read the text) | "tfds" (a TFDS copy in tfds_dir)
    c.data.tfds_dir = ""  # "" -> $TFDS_DATA_DIR or ~/tensorflow_datasets
    c.data.block_chars = 1024
    c.data.budget_chars = 1_000_000  # per training corpus (equal for all)
    c.data.eval_budget_chars = 300_000  # per held-out / OOD corpus
    c.data.tokenizer = "char"  # "char" | "sentencepiece"
    c.data.vocab_size = 2000  # sentencepiece pieces

    c.model = ml_collections.ConfigDict()
    c.model.embed = 32
    c.model.hidden = 192
    c.model.z_injection = "concat"

    c.train = ml_collections.ConfigDict()
    c.train.steps = 2500
    c.train.batch_size = 32
    c.train.window = 128  # tokens per training window
    c.train.lr = 5e-3
    c.train.schedule = "cosine"  # "cosine" (decay to lr / 10) | "constant"
    c.train.clip = 1.0
    c.train.chunk_size = 100
    c.train.log_every = 50
    c.train.max_loss = ml_collections.FieldReference(1e4, field_type=float)
    c.train.max_grad_norm = ml_collections.FieldReference(1e8, field_type=float)

    c.classifier = ml_collections.ConfigDict()
    c.classifier.steps = 2500
    c.classifier.lr = 5e-3

    c.eval = ml_collections.ConfigDict()
    c.eval.window_chars = (32, 128)  # identification windows
    c.eval.windows_per_corpus = 150  # test windows per corpus and length
    c.eval.val_windows_per_corpus = 150  # validation windows (bits per character)
    c.eval.val_window = 128
    c.eval.iterative_steps = (1, 5, 20)
    c.eval.latent_space = "simplex"  # "simplex" (softmax of logits) | "probs" (free z)
    c.eval.latent_lr = 0.5
    c.eval.latent_momentum = 0.5
    c.eval.ngram_orders = (1, 3, 5)
    c.eval.ngram_alpha = 0.5
    c.eval.timing_repeats = 3

    c.adapt = ml_collections.ConfigDict()
    c.adapt.window = 128
    c.adapt.windows = 8  # adaptation windows per held-out corpus
    c.adapt.eval_windows = 100  # disjoint evaluation windows
    c.adapt.steps = (0, 1, 2, 5, 10, 20, 50, 100)
    c.adapt.lr = 0.05

    c.ood = ml_collections.ConfigDict()
    c.ood.window = 128
    c.ood.windows_per_corpus = 150
    c.ood.step_length = 0.5  # of the GBI loss-after-one-step score (latent-space length)

    c.runtime = ml_collections.ConfigDict()
    # Networks per sequential block on each device: 0 = one vmap over all of them
    # (measured about 10 % faster than blocks of 5 for these LSTMs on a 2-core CPU).
    c.runtime.member_block = 0

    c.figures = True

    if arg == "smoke":
        c.seeds = 2
        c.data.budget_chars = 40_960
        c.data.eval_budget_chars = 20_480
        c.model.embed = 8
        c.model.hidden = 32
        c.train.steps = 60
        c.train.batch_size = 8
        c.train.window = 64
        c.train.chunk_size = 20
        c.train.log_every = 10
        c.classifier.steps = 40
        c.eval.window_chars = (16, 64)
        c.eval.windows_per_corpus = 12
        c.eval.val_windows_per_corpus = 12
        c.eval.val_window = 64
        c.eval.iterative_steps = (1, 3)
        c.eval.timing_repeats = 1
        c.adapt.window = 64
        c.adapt.windows = 4
        c.adapt.eval_windows = 8
        c.adapt.steps = (0, 1, 5)
        c.ood.window = 64
        c.ood.windows_per_corpus = 12
    elif arg not in (None, ""):
        raise ValueError(f"Unknown config variant {arg!r}; use '' (default) or 'smoke'.")
    return c
