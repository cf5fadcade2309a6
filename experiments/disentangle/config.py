"""Configs of the disentangling experiments (Vafidis et al. 2025), one variant per figure.

    python -m experiments.disentangle.main --config=experiments/disentangle/config.py:fig1 \
        --workdir=workdirs/disentangle/fig1

Variants: ``fig1`` ... ``fig8_curved`` (paper scale) and the same names with
``_smoke`` (seconds); ``smoke`` is ``fig1_smoke``; no argument is ``fig1``; ``panels``
(and ``panels_smoke``: the same networks, smoke training and evaluation) is a packed run
of every network behind the panels.

A run trains every combination of the ``grid`` axes x ``seeds``. Combinations that
share a *static* setting (model, D, T, free-RT, boundary) form a group trained as
ONE vmapped program (``training.fit``); the *dynamic* axes (N, sigma, rho, encoder
kind) are data of each member, so e.g. the 5 N x 5 seeds of Fig. 1 train together
(readout padded to max N and masked). Then every network is evaluated (ID/OOD r^2,
decoder angles, decision accuracy vs Bayes-optimal) and the figure named by
``figure`` is drawn from ``results.json`` (``experiments/disentangle/figures.py``).

Choices where the paper does not give the setting (each is a field here):

* N sets of Figs. 5b / 5c: ``(3, 6, 9, 12)`` for D (as the authors' ``sparsity.py``)
  and ``(2, 6, 24)`` for sigma.
* T grid of Fig. 5a (free RT): ``(5, 10, 20, 40)``, N = 24 (the T values of the
  authors' ``Figures/Fig5a.py`` theory line).
* rho grid of Fig. S3b: ``(0, 0.3, 0.6, 0.9)`` at N = 24; the OOD test data for
  correlated nets are the standard (independent, uniform) quadrant data.
* Curved boundaries: the authors' hyperbolic tasks (N/4 thresholds per quadrant), so
  N in ``(4, 8, 12, 24)``.
* D > 2 OOD folds: ``eval.max_folds`` orthants (chosen at random with a fixed seed)
  are held out one at a time (the authors' leave-one-orthant-out is 2^D folds).
* Free-RT networks are evaluated on ``T + 1`` samples (stimulus also at the decision
  step), so their Eq. 7 ceiling is ``theory.r2_ceiling(sigma, T + 1)``.
* LSTM / GRU / non-leaky budgets are 1e5 steps (assumed), GPT 2e4.
* RNN input layer init ``U(+-1/sqrt(F))`` (authors' ``nn.Linear``), ``model.rnn_input_init``.
* Decoders for the OOD metric are trained on a fixed pool of ``eval.pool_trials``
  trials per fold (fresh batches of 16 drawn from it) instead of fresh trials per
  decoder step; test sets are 640 fresh trials per held-out orthant.

Packed runs (``parts``): the networks of several figure runs (:data:`PANEL_RUNS`, the
runs behind the paper's panels) trained in one workdir. Each part keeps the grid and
seeds of its run; networks whose programs would have the same shapes (static setting,
readout width = the run's max N, encoder kinds) are trained as ONE program, and a network
that two parts both train (the same condition, seed and shapes) is trained once. Every
network keeps its run's initialisation, data stream and evaluation keys: it is the
network of the per-figure run up to float rounding (XLA's CPU kernels may round the last
bit differently when a device holds another number of networks, and training amplifies
such differences, as between two machines). ``pack`` restricts a run to one such
program (one job per program: ``launch/sweeps/disentangle_packed.py``). Variant
``panels``: every part.

Resuming a workdir with a changed config: :data:`RUNTIME_FIELDS` (``runtime``:
performance-only settings; ``figures``: whether figures are drawn; the divergence bounds
``train.max_loss`` / ``train.max_grad_norm``) are never compared;
:data:`EVALUATION_FIELDS` (``attractor``: the Fig. 4 analysis, computed again on each
start) may change, each change recorded in the workdir's ``history.jsonl``. ``eval`` is a
conflict: each group's evaluation is stored in ``eval_<group>.json`` and reused. Any other
field is a conflict, unless listed in ``--config_override_ok=train.lr,...``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import ml_collections

RUNTIME_FIELDS = ("figures", "runtime", "train.max_loss", "train.max_grad_norm")
EVALUATION_FIELDS = ("attractor",)
FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "fig8_encoder",
           "fig8_corr", "fig8_rt", "fig8_curved")


def _base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.figure = "fig1"
    c.seed = 0  # seed offset: network k of a condition uses seed + seeds[k]
    c.seeds = (0, 1, 2, 3, 4)
    # Packed runs: names of PANEL_RUNS whose networks this run trains instead of grid x
    # seeds (empty: grid x seeds), and the one program of them to train (empty: all).
    c.parts = ml_collections.FieldReference((), field_type=tuple)
    c.pack = ""

    g = c.grid = ml_collections.ConfigDict()
    g.cores = ("rnn",)  # rnn | noleak | lstm | gru | transformer
    g.n_tasks = (2, 3, 6, 12, 24)
    g.sigmas = (0.2,)
    g.rhos = (0.0,)
    g.encoders = ("relu",)  # relu | quadratic
    g.dims = (2,)
    g.stim_steps = (20,)
    g.free_rt = (False,)
    g.boundaries = ("linear",)  # linear | hyperbolic

    t = c.task = ml_collections.ConfigDict()
    t.encoder_hidden = (100, 100)
    t.encoder_out = 40
    t.bound = 5.0  # free-RT absorbing bound

    m = c.model = ml_collections.ConfigDict()
    m.hidden = 64
    m.alpha = 1.0  # dt / tau; 1 = the authors' "leaky" RNN
    m.rnn_input_init = "fan_in"
    m.custom_grad = True
    m.transformer_layers = 1
    m.transformer_heads = 8
    m.transformer_mlp = 256
    m.transformer_dropout = 0.1

    tr = c.train = ml_collections.ConfigDict()
    tr.steps = 100_000
    tr.transformer_steps = 20_000
    tr.batch_size = 16
    tr.lr = 1e-3
    tr.chunk_size = 1000
    tr.log_every = 500
    tr.checkpoint_every = 5  # chunks
    # Divergence guard (``training.fit``): stop when a network's loss / gradient norm goes
    # above the bound (a non-finite one always stops). 1e8 is orders of magnitude above
    # any value of a healthy run (losses <= 2.4, gradient norms <= 75 in these experiments)
    # and below those of a diverging one (1e17 and more).
    tr.max_loss = ml_collections.FieldReference(1e8, field_type=float)
    tr.max_grad_norm = ml_collections.FieldReference(1e8, field_type=float)

    # Performance-only settings: they never change results, so a workdir may be
    # resumed or re-evaluated with other values (``Workdir.claim`` ignores them).
    rt = c.runtime = ml_collections.ConfigDict()
    # Cache blocking of training (``gbi_jax.training.make_chunk_fn``): each device
    # runs its networks in sequential blocks of at most this many (a value >= the
    # networks per device: one vmap over all). Unset: the platform default
    # (``training.resolve_member_block``): on CPU the fastest of one vmap and blocks
    # splitting each core's networks 2-6 ways, timed on the real program when training
    # starts and cached per machine (``training.tune_member_block``; the best size
    # differs between CPUs); no blocking on GPU/TPU. Results are bitwise equal either way.
    rt.member_block = ml_collections.config_dict.placeholder(int)

    e = c.eval = ml_collections.ConfigDict()
    e.decoder = "adam"  # adam (authors) | ridge (closed form)
    e.decoder_lr = 3e-3
    e.decoder_batch = 16
    # decoder Adam steps for N <= 3, N <= 6, else (gbi_jax.analysis.decoding.decoder_steps;
    # this default is its DECODER_STEPS, the authors' schedule).
    e.decoder_steps = (3000, 2000, 1000)
    e.ridge = 1e-4  # relative ridge strength (gbi_jax.analysis.decoding)
    e.fits = 5  # decoder re-initialisations per fold
    e.pool_trials = 4096  # decoder training trials per fold
    e.test_trials = 640  # per held-out orthant (40 batches x 16)
    e.max_folds = 4  # held-out orthants (all 4 at D = 2)
    e.accuracy_trials = 2048
    e.bayes = True  # compute the Bayes-optimal accuracy reference
    e.seed = 42

    a = c.attractor = ml_collections.ConfigDict()  # fig4 only
    a.trials = 40  # noise-free PCA trials
    a.components = 10
    a.inits = 128
    a.iterations = 10_000
    a.lr = 0.01
    a.init_noise = 6.0  # U[0, init_noise) added to visited states
    a.dedup_eps = 0.5
    a.speed_tol = 1e-4  # keep candidates with q = |F(h) - h|^2 / 2 below this

    c.figures = True
    return c


def _figure(c, name):
    g = c.grid
    c.figure = name
    if name == "fig2":
        g.cores = ("rnn", "noleak", "lstm", "gru", "transformer")
    elif name == "fig3":
        g.cores = ("rnn", "transformer")
    elif name == "fig4":
        g.n_tasks = (24,)
    elif name == "fig5":
        g.free_rt = (True,)
        g.n_tasks = (24,)
        g.stim_steps = (5, 10, 20, 40)
    elif name == "fig6":
        g.dims = (2, 4, 6, 8, 10)
        g.n_tasks = (3, 6, 9, 12)
    elif name == "fig7":
        g.sigmas = (0.1, 0.2, 0.3, 0.4, 0.6)
        g.n_tasks = (2, 6, 24)
    elif name == "fig8_encoder":
        g.encoders = ("relu", "quadratic")
    elif name == "fig8_corr":
        g.rhos = (0.0, 0.3, 0.6, 0.9)
        g.n_tasks = (24,)
    elif name == "fig8_rt":
        g.free_rt = (False, True)
    elif name == "fig8_curved":
        g.boundaries = ("hyperbolic",)
        g.n_tasks = (4, 8, 12, 24)
    elif name != "fig1":
        raise ValueError(f"unknown figure {name!r}; choose one of {FIGURES}")
    return c


SMOKE_OVERRIDES = {  # the smoke variants' training and evaluation (seconds on 2 CPU cores)
    "train.steps": 30,
    "train.transformer_steps": 30,
    "train.chunk_size": 10,
    "train.log_every": 10,
    "train.checkpoint_every": 1,
    "model.hidden": 16,
    "eval.decoder": "ridge",  # Adam loops cost compile time; the paper configs use Adam
    "eval.decoder_steps": (20, 20, 20),
    "eval.fits": 2,
    "eval.pool_trials": 64,
    "eval.test_trials": 32,
    "eval.accuracy_trials": 64,
    "eval.bayes": False,
    "attractor.trials": 4,
    "attractor.inits": 8,
    "attractor.iterations": 50,
}


def _smoke(c):
    """Seconds on 2 CPU cores: 2 seeds, a few steps, tiny evaluation."""
    c.seeds = (0, 1)
    g = c.grid
    g.n_tasks = tuple(g.n_tasks)[:1] + tuple(g.n_tasks)[-1:] if len(g.n_tasks) > 1 else g.n_tasks
    for axis in ("sigmas", "rhos", "dims", "stim_steps"):
        values = tuple(g[axis])
        g[axis] = values[:1] + values[-1:] if len(values) > 1 else values
    if c.figure == "fig6":
        g.dims = (2, 4)
    if c.figure == "fig5":
        g.stim_steps = (5, 10)
    c.update_from_flattened_dict(SMOKE_OVERRIDES)
    return c


# ---------------------------------------------------------------------------
# The runs behind the paper's panels (launch/sweeps/disentangle_panels.py runs them one
# workdir each; packed runs train them by program).
# ---------------------------------------------------------------------------
FIRST_SEEDS = (0, 1)
TWIN_SEEDS = (2, 3, 4)
ALL_SEEDS = FIRST_SEEDS + TWIN_SEEDS
TWIN_SUFFIX = "_s" + "".join(str(s) for s in TWIN_SEEDS)


@dataclasses.dataclass(frozen=True)
class FigureRun:
    """One training run: a config variant, grid overrides and the seeds it trains."""

    name: str
    variant: str
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seeds: Sequence[int] = FIRST_SEEDS
    optional: bool = False  # an add-on: panels are drawn without it until it finishes

    @property
    def twinned(self) -> bool:
        return tuple(self.seeds) == FIRST_SEEDS


RUNS = (
    # Figure 1 at paper scale (5 seeds): the shared reference networks.
    FigureRun("fig1", "fig1", seeds=ALL_SEEDS),
    FigureRun("fig2_noleak", "fig2", {"grid.cores": ("noleak",)}),
    FigureRun("fig2_lstm_gru", "fig2", {"grid.cores": ("lstm", "gru"),
                                        "grid.n_tasks": (2, 6, 24)}),
    FigureRun("fig2_transformer", "fig2", {"grid.cores": ("transformer",),
                                           "grid.n_tasks": (2, 6, 24)}),
    FigureRun("fig5", "fig5"),
    FigureRun("fig6", "fig6", {"grid.n_tasks": (3, 12)}),
    FigureRun("fig8_corr", "fig8_corr", {"grid.rhos": (0.3, 0.6, 0.9)}),
    FigureRun("fig8_curved", "fig8_curved"),
    FigureRun("fig8_encoder", "fig8_encoder", {"grid.encoders": ("quadratic",),
                                               "grid.n_tasks": (2, 6, 24)}),
    FigureRun("fig8_rt", "fig8_rt", {"grid.free_rt": (True,), "grid.n_tasks": (2, 6, 24)}),
    FigureRun("fig7_n2_24", "fig7", {"grid.n_tasks": (2, 24)}),
    FigureRun("fig7_n6", "fig7", {"grid.n_tasks": (6,)}),
    # The remaining N of Fig. 2 for the gated nets and the transformer, five seeds at once ...
    FigureRun("fig2_transformer_n312", "fig2", {"grid.cores": ("transformer",),
                                                "grid.n_tasks": (3, 12)},
              seeds=ALL_SEEDS, optional=True),
    FigureRun("fig2_lstm_gru_n312", "fig2", {"grid.cores": ("lstm", "gru"),
                                             "grid.n_tasks": (3, 12)},
              seeds=ALL_SEEDS, optional=True),
    # ... and of the Fig. 8 encoder and free-RT panels.
    FigureRun("fig8_encoder_n312", "fig8_encoder", {"grid.encoders": ("quadratic",),
                                                    "grid.n_tasks": (3, 12)},
              seeds=ALL_SEEDS, optional=True),
    FigureRun("fig8_rt_n312", "fig8_rt", {"grid.free_rt": (True,), "grid.n_tasks": (3, 12)},
              seeds=ALL_SEEDS, optional=True),
    # Fig. 6 at N = 6, 9 (with fig6's 3, 12: the set {3, 6, 9, 12}), every D, five seeds.
    FigureRun("fig6_n69", "fig6", {"grid.n_tasks": (6, 9)}, seeds=ALL_SEEDS, optional=True),
)


def twin(run: FigureRun) -> FigureRun:
    """The same run on the seeds 2, 3, 4."""
    return dataclasses.replace(run, name=run.name + TWIN_SUFFIX, seeds=TWIN_SEEDS)


def panel_runs() -> list[FigureRun]:
    """``RUNS`` and the seed-2,3,4 twin of every run on seeds 0, 1."""
    return list(RUNS) + [twin(r) for r in RUNS if r.twinned]


PANEL_RUNS = {r.name: r for r in panel_runs()}


def part_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """``config`` with the grid and seeds of panel run ``name`` (and no parts)."""
    run = PANEL_RUNS[name]
    c = config.copy_and_resolve_references()
    c.parts, c.pack = (), ""
    c.grid = _figure(_base(), run.variant).grid
    for key, value in run.overrides.items():
        node, _, leaf = key.rpartition(".")
        c[node][leaf] = value
    c.seeds = tuple(run.seeds)
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = (arg or "fig1").strip()
    smoke = arg == "smoke" or arg.endswith("_smoke")
    name = "fig1" if arg == "smoke" else arg[:-len("_smoke")] if smoke else arg
    if name == "panels":  # every network of the panels, trained by program
        c = _base()
        c.parts = tuple(PANEL_RUNS)
        c.figures = False
        if smoke:
            c.update_from_flattened_dict(SMOKE_OVERRIDES)
        return c
    if name not in FIGURES:
        raise ValueError(f"Unknown config variant {arg!r}; use one of {FIGURES} or 'panels', "
                         "each optionally with '_smoke', or 'smoke'.")
    c = _figure(_base(), name)
    return _smoke(c) if smoke else c
