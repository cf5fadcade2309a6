"""Figures of the disentangling experiments, drawn from ``results.json``.

``make_figure(results, out_dir)`` draws the panel(s) of ``results["figure"]`` as
``<figure>.png``; every panel shows medians with 25-75 % bars and the theory line
(Eq. 7 ceiling, 90 degrees, Bayes-optimal accuracy) where one exists. Rerun on a
finished workdir with::

    python -m experiments.disentangle.figures --workdir=workdirs/disentangle/fig1
    python -m experiments.disentangle.figures --workdir=workdirs/disentangle/fig1 \
        --also=workdirs/disentangle/fig3_transformer --figure=fig3 --out=/tmp/fig3
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from gbi_jax.analysis import theory


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(table, x, by, y):
    """``{label: (xs, med, lo, hi)}`` from table rows grouped by the ``by`` fields."""
    out = {}
    for r in table:
        label = ", ".join(f"{k}={r[k]}" for k in by) if by else "all"
        out.setdefault(label, []).append((r[x], r[f"{y}_median"], r[f"{y}_q25"], r[f"{y}_q75"]))
    return {k: tuple(np.array(v, float).T) for k, v in
            ((k, sorted(v)) for k, v in out.items())}


def _panel(ax, table, x, by, y, *, logx=False, label_prefix="", ls="-"):
    for label, (xs, med, lo, hi) in _series(table, x, by, y).items():
        ax.errorbar(xs, med, yerr=[med - lo, hi - med], marker="o", capsize=3, ls=ls,
                    label=f"{label_prefix}{label}")
    if logx:
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ticks = sorted({r[x] for r in table})
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(x)


def _varying(table, keys):
    return [k for k in keys if len({r[k] for r in table}) > 1]


def _ceiling_line(ax, table):
    vals = sorted({round(r["r2_ceiling"], 4) for r in table})
    for v in vals:
        ax.axhline(v, color="k", ls="--", lw=0.8)
    if vals:
        ax.text(ax.get_xlim()[0], vals[-1], f" Eq. 7 ceiling {vals[-1]:.3f}", va="bottom",
                fontsize=7)


def _ood_vs(ax, table, x, by, logx=False):
    _panel(ax, table, x, by, "ood_r2", logx=logx, label_prefix="OOD " if not by else "")
    ax.set_ylabel("OOD r$^2$")


def make_figure(results: dict, out_dir: str) -> str:
    plt = _plt()
    fig_name = results["figure"]
    table = results["table"]
    statics = ("core", "dim", "stim_steps", "free_rt", "boundary", "n_tasks", "sigma", "rho",
               "encoder")
    path = os.path.join(out_dir, f"{fig_name}.png")

    if fig_name == "fig4" and "attractor" in results:
        _attractor(plt, results["attractor"], path)
        return path

    if fig_name == "fig6":
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        _panel(axes[0], table, "dim", ["n_tasks"], "ood_r2")
        axes[0].set_ylabel("OOD r$^2$")
        axes[0].set_ylim(0, 1.02)
        _panel(axes[1], table, "dim", ["n_tasks"], "angle")
        axes[1].axhline(90, color="k", ls="--", lw=0.8)
        axes[1].set_ylabel("decoder angle (deg)")
        for a in axes:
            a.legend(fontsize=7)
    elif fig_name == "fig3":
        fig, ax = plt.subplots(figsize=(5, 4))
        _panel(ax, table, "n_tasks", ["core"], "angle", logx=True)
        ax.axhline(90, color="k", ls="--", lw=0.8)
        ax.set_ylabel("angle between x1 and x2 decoders (deg)")
        ax.legend(fontsize=7)
    else:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        ax = axes[0]
        if fig_name == "fig5":
            _ood_vs(ax, table, "stim_steps", _varying(table, ["n_tasks", "core"]))
            ts = np.linspace(min(r["stim_steps"] for r in table),
                             max(r["stim_steps"] for r in table), 100)
            sig = table[0]["sigma"]
            ax.plot(ts, theory.r2_ceiling(sig, ts + 1), "k--", lw=0.8,
                    label="Eq. 7 ceiling, T + 1 samples")
        elif fig_name == "fig7":
            _ood_vs(ax, table, "sigma", ["n_tasks"])
            ss = np.linspace(min(r["sigma"] for r in table), max(r["sigma"] for r in table), 100)
            t = table[0]["stim_steps"]
            ax.plot(ss, theory.r2_ceiling(ss, t), "k--", lw=0.8, label="Eq. 7 ceiling")
        elif fig_name == "fig8_corr":
            _ood_vs(ax, table, "rho", ["n_tasks"])
            _ceiling_line(ax, table)
        else:
            by = _varying(table, [k for k in statics if k != "n_tasks"])
            _ood_vs(ax, table, "n_tasks", by, logx=True)
            if fig_name == "fig1":
                _panel(ax, table, "n_tasks", [], "id_r2", logx=True, label_prefix="ID ", ls=":")
            _ceiling_line(ax, table)
            ax.axhline(0.9, color="0.6", ls=":", lw=0.8)
        ax.legend(fontsize=7)
        ax.set_title(f"{fig_name}: OOD r$^2$ (median, IQR)")
        # Right panel: angles (or accuracy vs Bayes for fig1).
        ax = axes[1]
        xkey = {"fig5": "stim_steps", "fig7": "sigma", "fig8_corr": "rho"}.get(fig_name,
                                                                               "n_tasks")
        by = _varying(table, [k for k in statics if k != xkey])
        _panel(ax, table, xkey, by, "angle", logx=(xkey == "n_tasks"))
        ax.axhline(90, color="k", ls="--", lw=0.8)
        ax.set_ylabel("decoder angle (deg)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    if fig_name == "fig1":
        _accuracy(plt, table, os.path.join(out_dir, "fig1_accuracy.png"))
    return path


def _accuracy(plt, table, path):
    fig, ax = plt.subplots(figsize=(5, 4))
    xs = [r["n_tasks"] for r in table]
    ax.plot(xs, [r["accuracy_mean"] for r in table], "o-", label="networks (mean)")
    ax.plot(xs, [r["bayes_accuracy"] for r in table], "k--", label="Bayes-optimal")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    from matplotlib.ticker import NullFormatter

    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("n_tasks")
    ax.set_ylabel("decision accuracy (decision step, all outputs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _attractor(plt, a, path):
    fig = plt.figure(figsize=(14, 4))
    ax = fig.add_subplot(1, 3, 1, projection="3d")
    traj = np.asarray(a["trajectories"])
    colors = plt.cm.tab10(np.asarray(a["quadrant"]) % 10)
    for k in range(traj.shape[0]):
        ax.plot(*traj[k].T, color=colors[k], lw=0.8)
    fp = np.asarray(a["fixed_points_pc"])
    if fp.size:
        ax.scatter(*fp.T, color="k", s=8, label="fixed points")
        ax.legend(fontsize=7)
    ax.set_title(f"PCA of noise-free trajectories (N = {a['n_tasks']}), by quadrant")
    ax = fig.add_subplot(1, 3, 2)
    ev = np.asarray(a["explained_variance"])
    ax.bar(np.arange(1, len(ev) + 1), ev)
    ax.set_xlabel("PC")
    ax.set_ylabel("variance explained")
    ax = fig.add_subplot(1, 3, 3)
    re, im = np.asarray(a["eigenvalues_real"]), np.asarray(a["eigenvalues_imag"])
    if re.size:
        ax.scatter(re.ravel(), im.ravel(), s=4, alpha=0.4)
        ax.scatter(re[:, :2].ravel(), im[:, :2].ravel(), s=10, color="r", label="top 2")
        t = np.linspace(0, 2 * np.pi, 200)
        ax.plot(np.cos(t) - 1, np.sin(t), "k--", lw=0.8)
        ax.legend(fontsize=7)
    ax.set_xlabel("Re λ of J(F(h) - h)")
    ax.set_ylabel("Im λ")
    ax.set_title(f"{a['num_fixed_points']} fixed points")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw(workdir: str) -> list[str]:
    """Draw the figure of the finished run in ``workdir`` (its ``results.json``) into
    ``workdir/figures``; return the paths. ``python -m experiments.figures --workdir=DIR``."""
    from experiments.plotting import finished_results

    wd, results = finished_results(workdir)
    paths = [make_figure(results, wd.figures_dir)]
    if results["figure"] == "fig1":
        paths.append(os.path.join(wd.figures_dir, "fig1_accuracy.png"))
    return paths


def main(argv):
    """``--workdir=DIR [--also=DIR2 ...] [--figure=NAME] [--out=DIR]``.

    ``--also`` merges the table rows of other runs (e.g. the transformer runs of
    ``fig3`` with the RNNs of ``fig1``); ``--figure`` redraws as another panel.
    """
    opts = {"also": []}
    for a in argv[1:]:
        key, _, value = a.lstrip("-").partition("=")
        if key == "also":
            opts["also"].append(value)
        elif key in ("workdir", "figure", "out"):
            opts[key] = value
        else:
            raise SystemExit(f"unknown argument {a!r}")
    if "workdir" not in opts:
        raise SystemExit("usage: python -m experiments.disentangle.figures --workdir=DIR "
                         "[--also=DIR2] [--figure=NAME] [--out=DIR]")
    with open(os.path.join(opts["workdir"], "results.json")) as f:
        results = json.load(f)
    for other in opts["also"]:
        with open(os.path.join(other, "results.json")) as f:
            results["table"] = results["table"] + json.load(f)["table"]
    if "figure" in opts:
        results["figure"] = opts["figure"]
    out = opts.get("out", os.path.join(opts["workdir"], "figures"))
    os.makedirs(out, exist_ok=True)
    print(make_figure(results, out))


if __name__ == "__main__":
    main(sys.argv)
