"""Figures of the GBI language-model experiment (one PNG per result plus a summary).

``python -m experiments.figures --workdir=DIR`` redraws them from ``results.json``.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

from experiments.plotting import save_panels  # noqa: E402

ARM_LABELS = {"gbi": "GBI-LSTM", "uniform": "LSTM (z uniform)", "shuffled": "shuffled z"}
COLORS = {"gbi": "C0", "uniform": "C1", "shuffled": "C2"}


def _curves(ax, results):
    L = results["loss"]
    steps = L.get("curve_steps")
    for arm, a in L["arms"].items():
        if "curve" in a and steps:
            ax.plot(steps, a["curve"], label=ARM_LABELS.get(arm, arm), color=COLORS.get(arm))
    ax.set(xlabel="training step", ylabel="training loss (bits / token)",
           title="Learning curves (mean over seeds)")
    ax.legend(fontsize=8)


def _by_position(ax, results):
    L = results["loss"]
    for arm, a in L["arms"].items():
        pos = np.arange(1, len(a["by_position_uniform_z"]) + 1)
        if arm == "gbi":
            ax.plot(pos, a["by_position_true_z"], color=COLORS[arm], label="GBI-LSTM, true z")
            ax.plot(pos, a["by_position_uniform_z"], color=COLORS[arm], ls="--",
                    label="GBI-LSTM, uniform z")
        else:
            ax.plot(pos, a["by_position_uniform_z"], color=COLORS.get(arm),
                    label=f"{ARM_LABELS.get(arm, arm)}, uniform z")
    ax.set_xscale("log")
    ax.set(xlabel="position in the window", ylabel="validation loss (bits)",
           title="Loss by position")
    ax.legend(fontsize=7)


def _grouped_bars(ax, groups: dict, names: list, scale: float = 1.0, *, errors: bool):
    """One bar per entry of ``names`` for every group ``{label: {name: stats}}``, side by
    side; ``stats`` has ``mean`` (and ``sd``, drawn as error bars with ``errors``)."""
    x = np.arange(len(names))
    width = 0.8 / len(groups)
    for i, (label, stats) in enumerate(groups.items()):
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, [scale * stats[n]["mean"] for n in names],
               width, yerr=[scale * stats[n]["sd"] for n in names] if errors else None,
               label=label)
    return x


def _identification(ax, results):
    ident = results["identification"]
    lens = list(ident["lengths"])
    methods = list(ident["lengths"][lens[0]]["accuracy"])
    x = _grouped_bars(ax, {f"{n} chars": ident["lengths"][n]["accuracy"] for n in lens},
                      methods, 100, errors=True)
    ax.axhline(100 * ident["chance"], color="k", ls=":", lw=0.8, label="chance")
    short = [m.replace("naive_bayes_", "NB ").replace("iterative_", "iter ")
             .replace("one_step_", "1-step ").replace("_arm", "") for m in methods]
    ax.set_xticks(x, short, rotation=35, ha="right", fontsize=7)
    ax.set(ylabel="accuracy (%)", ylim=(0, 100), title="Which corpus? (test windows)")
    ax.legend(fontsize=7)


def _confusion(ax, results):
    ident = results["identification"]
    n = list(ident["lengths"])[-1]
    conf = np.asarray(ident["lengths"][n]["confusion_one_step"])
    names = ident["corpora"]
    ax.imshow(conf, vmin=0, vmax=1, cmap="Blues")
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            ax.text(j, i, f"{conf[i, j]:.2f}", ha="center", va="center", fontsize=6,
                    color="w" if conf[i, j] > 0.5 else "k")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="inferred (one-step GBI)", ylabel="true corpus",
           title=f"Confusion at {n} characters")


def _adaptation(ax, results):
    ad = results["adaptation"]
    if "skipped" in ad:
        ax.set_axis_off()
        return
    steps = np.asarray(ad["steps"], float)
    xs = np.where(steps == 0, 0.5, steps)
    styles = ["-", "--", ":", "-."]
    for arm, per in ad["arms"].items():
        for j, (name, r) in enumerate(per.items()):
            ax.plot(xs, r["z_curve"], color=COLORS.get(arm), ls=styles[j % len(styles)],
                    marker="o", ms=3, label=f"{ARM_LABELS.get(arm, arm)}: {name}")
            if arm == "gbi":
                ax.axhline(r["best_one_hot"]["mean"], color="grey", ls=styles[j % len(styles)],
                           lw=0.8)
    ax.set_xscale("log")
    ax.set(xlabel="z optimisation steps (0 plotted at 0.5)", ylabel="held-out loss (bits/char)",
           title="Adapting z to a held-out corpus (grey: best one-hot)")
    ax.legend(fontsize=6)


def _ood(ax, results):
    o = results["ood"]
    if "skipped" in o:
        ax.set_axis_off()
        return
    keys = list(o["auroc"])
    names = list(o["auroc"][keys[0]])
    x = _grouped_bars(ax, {f"{k} OOD": o["auroc"][k] for k in keys}, names, errors=False)
    ax.axhline(0.5, color="k", ls=":", lw=0.8)
    ax.set_xticks(x, [n.replace("gbi_", "GBI ").replace("naive_bayes_", "NB ") for n in names],
                  rotation=40, ha="right", fontsize=7)
    ax.set(ylabel="AUROC", ylim=(0, 1), title="OOD detection")
    ax.legend(fontsize=7)


def make_all(results: dict, out_dir: str) -> list[str]:
    panels = {"learning_curves": lambda ax: _curves(ax, results),
              "loss_by_position": lambda ax: _by_position(ax, results),
              "identification": lambda ax: _identification(ax, results),
              "confusion": lambda ax: _confusion(ax, results),
              "adaptation": lambda ax: _adaptation(ax, results),
              "ood_auroc": lambda ax: _ood(ax, results)}
    return save_panels(panels, out_dir, grid=(2, 3), summary_size=(17, 9.5),
                       panel_size=(6.4, 4.6), summary_dpi=100)


def draw(workdir: str) -> list[str]:
    """Draw the figures of the finished run in ``workdir`` into ``workdir/figures``."""
    from experiments.plotting import finished_results

    wd, results = finished_results(workdir)
    return make_all(results, wd.figures_dir)
