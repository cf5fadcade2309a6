"""Figures of the GBI image experiment (one PNG per result plus a summary panel)."""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.plotting import save_panels, section_or_blank  # noqa: E402

TITLES = {"mnist": "MNIST", "fashion": "Fashion-MNIST", "cifar100": "CIFAR-100"}
OOD_LABELS = {"loss": "GBI loss", "max_score": "GBI max -dL/dz", "grad_norm": "GBI |dL/dz|",
              "posterior_entropy": "GBI entropy", "loss_after_step": "GBI loss after step",
              "softmax": "CE max-softmax", "ensemble": "ensemble max-prob",
              "ensemble_entropy": "ensemble entropy"}


def _accuracy(ax, results):
    ds = results["datasets"]
    methods = [("one-step GBI", lambda a: a["one_step"])]
    steps = sorted({int(s) for d in ds.values() for s in d["accuracy"]["iterative"]})
    methods += [(f"iter. {s}", lambda a, s=s: a["iterative"][str(s)]) for s in steps]
    methods += [("exhaustive", lambda a: a["exhaustive"]), ("CE", lambda a: a["ce_classifier"]),
                ("ensemble", lambda a: a["ensemble"])]
    width = 0.8 / max(len(ds), 1)
    x = np.arange(len(methods))
    for i, (name, r) in enumerate(ds.items()):
        vals = [100 * get(r["accuracy"]) for _, get in methods]
        ax.bar(x + (i - (len(ds) - 1) / 2) * width, vals, width,
               label=f"{TITLES[name]} ({r['data']['num_train']} train)")
    if "mnist" in ds:
        ax.axhline(85.46, color="k", ls="--", lw=0.8, label="paper one-step (full MNIST)")
        ax.axhline(91.44, color="k", ls=":", lw=0.8, label="paper CE (full MNIST)")
    ax.set_xticks(x, [m for m, _ in methods], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="test accuracy (%)", title="Classification accuracy", ylim=(0, 100))
    ax.legend(fontsize=7, loc="lower left")


def _iterative(ax, results):
    for name, r in results["datasets"].items():
        c = np.asarray(r["iterative_loss_curve"])
        ax.plot(np.arange(len(c)), c / c[0], label=TITLES[name])
    ax.set(xlabel="latent optimisation step", ylabel="loss / loss at uniform z",
           title="Iterative GBI: test loss vs steps")
    ax.legend(fontsize=7)


def _throughput(ax, results):
    ds = results["datasets"]
    names = list(ds)
    x = np.arange(len(names))
    for j, (key, label) in enumerate((("one_step", "one-step (1 fwd + 1 bwd)"),
                                      ("exhaustive", "exhaustive (K fwd)"))):
        ax.bar(x + (j - 0.5) * 0.4, [ds[n]["throughput"][f"{key}_images_per_s"] for n in names],
               0.4, label=label)
    ax.set_xticks(x, [f"{TITLES[n]} (K={ds[n]['throughput']['num_classes']})" for n in names])
    ax.set(ylabel="images / s", title="Inference cost per image (same run)")
    ax.legend(fontsize=7)


def _reliability(ax, results):
    ax.plot([0, 1], [0, 1], color="k", lw=0.8, ls=":")
    for name, r in results["datasets"].items():
        for kind, ls in (("fixed", "--"), ("fitted", "-")):
            c = r["calibration"][kind]
            b = c["bins"]
            cnt = np.asarray(b["count"])
            m = cnt > 0
            ax.plot(np.asarray(b["mean_confidence"])[m], np.asarray(b["accuracy"])[m], ls,
                    marker="o", ms=3,
                    label=f"{TITLES[name]} alpha={c['alpha']:.3g} (ECE {c['ece']:.3f})")
    ax.set(xlabel="one-step posterior confidence", ylabel="accuracy",
           title="Reliability of softmax(-g/alpha)", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=6)


def _coverage(ax, results):
    for name, r in results["datasets"].items():
        c = r["calibration"]["fitted"]["accuracy_at_coverage"]
        ax.plot(100 * np.asarray(c["coverage"]), 100 * np.asarray(c["accuracy"]), marker="o",
                ms=3, label=TITLES[name])
    ax.set(xlabel="most confident fraction kept (%)", ylabel="accuracy (%)",
           title="Accuracy vs one-step confidence")
    ax.legend(fontsize=7)


def _ood(ax, results):
    pairs = list(results["ood"])
    if not pairs:
        ax.set_axis_off()
        return
    keys = list(OOD_LABELS)
    y = np.arange(len(keys))
    for j, p in enumerate(pairs):
        r = results["ood"][p]
        vals = [r["gbi"][k] if k in r["gbi"] else r[k] for k in keys]
        a, b = p.split(":")
        ax.barh(y + (j - (len(pairs) - 1) / 2) * 0.38, vals, 0.38,
                label=f"in {TITLES[a]} / out {TITLES[b]}")
    ax.axvline(0.89, color="k", ls="--", lw=0.8, label="paper GBI 0.89")
    ax.axvline(0.5, color="0.5", ls=":", lw=0.8)
    ax.set_yticks(y, [OOD_LABELS[k] for k in keys], fontsize=7)
    ax.set(xlabel="AUROC", title="OOD detection", xlim=(0, 1))
    ax.legend(fontsize=6, loc="lower right")


def _recomposition(ax, results):
    r = section_or_blank(ax, results, "recomposition")
    if r is None:
        return
    c = np.asarray(r["loss_curve"])
    ax.plot(np.arange(len(c)), c, label="optimised z (held-out class)")
    ax.axhline(r["loss_best_trained_class"], color="tab:orange", ls="--",
               label="best trained one-hot")
    ax.axhline(r["loss_seen_classes_true_code"], color="k", ls=":",
               label="seen classes, true one-hot")
    near = ", ".join(list(r["nearest_classes_optimised"])[:3])
    ax.set(xlabel="latent optimisation step", ylabel="loss (0.5 SSE)",
           title=f"Extension: held-out class {r['heldout_class']} (nearest: {near})")
    ax.legend(fontsize=7)


def make_all(results, out_dir) -> list[str]:
    """Draw every panel of ``results`` into ``out_dir``; return the paths (none when every
    dataset was skipped)."""
    panels = {
        "accuracy": lambda ax: _accuracy(ax, results),
        "iterative": lambda ax: _iterative(ax, results),
        "throughput": lambda ax: _throughput(ax, results),
        "reliability": lambda ax: _reliability(ax, results),
        "accuracy_vs_confidence": lambda ax: _coverage(ax, results),
        "ood_auroc": lambda ax: _ood(ax, results),
        "recomposition": lambda ax: _recomposition(ax, results),
    }
    if not results["datasets"]:
        return []
    return save_panels(panels, out_dir, grid=(2, 4), summary_size=(22, 9.5),
                       panel_size=(6.4, 4.4), summary_dpi=100)


def draw(workdir: str) -> list[str]:
    """Draw the figures of the finished run in ``workdir`` (its ``results.json``) into
    ``workdir/figures``; return the paths. ``python -m experiments.figures --workdir=DIR``."""
    from experiments.plotting import finished_results

    wd, results = finished_results(workdir)
    return make_all(_in_config_order(results, wd), wd.figures_dir)


def _in_config_order(results: dict, wd) -> dict:
    """Datasets and OOD pairs in the config's order (a results.json written with sorted
    keys lists them alphabetically); a no-op on a results.json in the run's own order."""
    if not os.path.exists(wd.file("config.json")):
        return results
    with open(wd.file("config.json")) as f:
        config = json.load(f)
    for key, order in (("datasets", config["datasets"]), ("ood", config["ood"]["pairs"])):
        results[key] = {k: results[key][k] for k in sorted(
            results[key], key=lambda k: order.index(k) if k in order else len(order))}
    return results
