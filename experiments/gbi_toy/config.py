"""Config of the GBI toy experiment (Hummos et al. 2024, Sec. 3.1).

``get_config()`` is the paper-scale protocol; ``get_config("smoke")`` finishes in
seconds. Override any field from the command line, e.g.
``--config.train.blocks=40 --config.seeds="(0,1)"``.

Details the paper leaves open, and what we chose (each a field here):
* training is online/continual over one stream of ``train.blocks`` blocks, one
  Adam update per time step on the window of the last ``window`` observations,
  every window run from a zero LSTM state (authors' code: BPTT horizon 5-10);
* the "forgetting" number is the next-step MSE, weights frozen, on fresh data
  from the context of the second-to-last training block (Table 1's protocol as
  we read it);
* the shuffled-z control sees a one-hot per block drawn independently of the
  true context (same size and statistics as the true code, no information);
* recomposition uses a Gaussian negative log-likelihood loss (the network
  outputs a mean and a log-std) so the std half of the compositional code
  matters; ``recomposition.loss = "mse"`` gives the paper's MSE;
* shared-unit ratio threshold (see ``experiment.shared_unit_ratio``).

Resuming a workdir with a changed config: :data:`RUNTIME_FIELDS` (``figures``: whether
figures are drawn; the divergence bounds ``train.max_loss`` / ``train.max_grad_norm``,
which stop a run but never change the numbers of one that finishes) are never compared;
:data:`EVALUATION_FIELDS` (``eval``, ``online``, ``latent``, ``modularity``: every
analysis runs again on each start, with the trained networks from the checkpoints) may
change, each change recorded in the workdir's
``history.jsonl``. Any other field (the task, the model, training, recomposition
training) is a conflict, unless listed in ``--config_override_ok=train.lr,...``.
"""

from __future__ import annotations

import ml_collections

RUNTIME_FIELDS = ("figures", "train.max_loss", "train.max_grad_norm")
EVALUATION_FIELDS = ("eval", "online", "latent", "modularity")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # seed offset; network m of a run uses seed + seeds[m]
    c.seeds = (0, 1, 2, 3, 4)  # networks per arm, trained together with vmap
    c.arms = ("gbi", "baseline", "shuffled")

    c.task = ml_collections.ConfigDict()
    c.task.means = (0.2, 0.8)
    c.task.stds = (0.2, 0.2)
    c.task.block_p = 0.05
    c.task.min_block = 20
    c.task.max_block = 50

    c.model = ml_collections.ConfigDict()
    c.model.core = "lstm"
    c.model.hidden = 64
    c.model.input_projection = 64
    c.model.z_injection = "concat"

    c.train = ml_collections.ConfigDict()
    c.train.blocks = 80  # training stream length in blocks (authors: 40-80)
    c.train.window = 5  # BPTT horizon H (observations per update)
    c.train.lr = 1e-3
    c.train.passes = 1  # >1 replays the same stream (not continual any more)
    c.train.chunk_size = 250
    c.train.log_every = 25
    # Divergence guard (``training.fit``): stop when a network's loss / gradient norm goes
    # above the bound (a non-finite one always stops). 1e8 is orders of magnitude above
    # any value of a healthy run (losses <= 2.4, gradient norms <= 75 in these experiments)
    # and below those of a diverging one (1e17 and more).
    c.train.max_loss = ml_collections.FieldReference(1e8, field_type=float)
    c.train.max_grad_norm = ml_collections.FieldReference(1e8, field_type=float)

    c.eval = ml_collections.ConfigDict()
    c.eval.test_blocks = 10  # fresh test stream (one-step and online inference)
    c.eval.forgetting_steps = 200  # observations from the second-to-last context
    c.eval.temperature = 1.0  # alpha of the one-step soft posterior

    c.online = ml_collections.ConfigDict()
    c.online.optimizer = "sgd"  # "sgd" (with momentum) or "adam"
    c.online.lr = 1.0
    c.online.momentum = 0.5
    c.online.steps_per_obs = 1
    c.online.penalty = 0.3  # pull of the logits toward 0 (max entropy)
    c.online.penalty_kind = "squared"  # "squared" or "norm" (the authors' toy code)
    # latent = softmax(logits / temperature). The authors use 0.1; with our
    # networks that saturates after one switch and the latent stops tracking the
    # context (measured: corr with the HMM posterior 0.13 vs 0.92 at 0.5).
    c.online.temperature = 0.5

    c.latent = ml_collections.ConfigDict()  # iterative optimisation (recomposition)
    c.latent.optimizer = "adam"
    c.latent.lr = 0.1
    c.latent.momentum = 0.5
    c.latent.steps = 200
    c.latent.penalty = 0.0
    c.latent.penalty_kind = "squared"

    c.recomposition = ml_collections.ConfigDict()
    c.recomposition.enabled = True
    c.recomposition.means = (0.2, 0.8, 0.2, 0.8)
    c.recomposition.stds = (0.1, 0.1, 0.3, 0.3)
    c.recomposition.train_contexts = (0, 1, 2)  # (0.8, 0.3) is held out
    c.recomposition.heldout_context = 3
    c.recomposition.inactive = 0.0  # value of "off" code units (authors: 0.3)
    c.recomposition.loss = "nll"  # "nll" (mean + log-std output) or "mse"
    c.recomposition.blocks = 160
    c.recomposition.test_length = 200

    c.modularity = ml_collections.ConfigDict()
    c.modularity.threshold = 0.2

    c.figures = True

    if arg == "smoke":
        c.seeds = (0, 1)
        c.train.blocks = 6
        c.train.chunk_size = 50
        c.train.log_every = 10
        c.eval.test_blocks = 3
        c.eval.forgetting_steps = 40
        c.latent.steps = 10
        c.recomposition.blocks = 6
        c.recomposition.test_length = 40
    elif arg not in (None, ""):
        raise ValueError(f"Unknown config variant {arg!r}; use '' (paper scale) or 'smoke'.")
    return c
