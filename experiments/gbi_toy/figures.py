"""Figures of the GBI toy experiment (one PNG per result plus a summary panel)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.plotting import save_panels  # noqa: E402

COLORS = {"gbi": "tab:blue", "baseline": "tab:orange", "shuffled": "tab:gray"}


def _learning(ax, results, fit, members):
    steps = np.asarray(fit.steps)
    loss = np.asarray(fit.history["loss"])  # [rows, M]
    for arm in results["arms"]:
        cols = [m for m, (a, _) in enumerate(members) if a == arm]
        v = loss[:, cols]
        mu, sd = v.mean(1), v.std(1)
        ax.plot(steps, mu, color=COLORS[arm], label=arm)
        ax.fill_between(steps, mu - sd, mu + sd, color=COLORS[arm], alpha=0.2)
    ax.set_yscale("log")
    ax.set(xlabel="training step (one window update per observation)", ylabel="train MSE",
           title="Learning curves (mean ± sd over seeds)")
    ax.legend()


def _forgetting(ax, results):
    arms = results["arms"]
    f = results["forgetting"]
    x = np.arange(len(arms))
    ax.bar(x - 0.2, [f[a]["mse_second_to_last"]["mean"] for a in arms], 0.4,
           yerr=[f[a]["mse_second_to_last"]["std"] for a in arms], label="2nd-to-last context",
           color=[COLORS[a] for a in arms])
    ax.bar(x + 0.2, [f[a]["mse_last"]["mean"] for a in arms], 0.4,
           yerr=[f[a]["mse_last"]["std"] for a in arms], label="last context",
           color=[COLORS[a] for a in arms], alpha=0.45)
    ax.axhline(f["noise_floor"], color="k", ls=":", label="noise floor")
    ax.set_xticks(x, arms)
    ax.set(ylabel="next-step MSE (weights frozen)", title="Forgetting")
    ax.legend(fontsize=7)


def _one_step(ax, results, scores, win_ll, members):
    m = [i for i, (a, _) in enumerate(members) if a == "gbi"]
    if not m or scores.shape[-1] != 2:
        ax.set_axis_off()
        return
    s = scores[m[0]]
    ll = np.asarray(win_ll[0])
    ax.scatter(ll[:, 0] - ll[:, 1], s[:, 0] - s[:, 1], s=4, alpha=0.4)
    r = results["one_step"]["gbi"]["corr_window_loglik"]["per_seed"][0]
    ax.set(xlabel="ideal observer: log p(window|c=0) - log p(window|c=1)",
           ylabel="one-step GBI: score_0 - score_1",
           title=f"One-step gradient vs likelihood (r = {r:.3f})")


def _online(ax, results, test, probs, hmm_post, members, window):
    m = [i for i, (a, _) in enumerate(members) if a == "gbi"]
    if not m:
        ax.set_axis_off()
        return
    t = np.arange(probs.shape[1])
    ctx = np.asarray(test.context[0])
    ax.fill_between(t, 0, 1, where=ctx == 0, color="0.9", step="mid", label="true context 0")
    ax.plot(t, hmm_post[0, :, 0], color="k", lw=1, label="HMM posterior p(c=0)")
    ax.plot(t, probs[m[0], :, 0], color=COLORS["gbi"], lw=1, label="GBI latent softmax(z)_0")
    ax.set(xlabel="time step", ylabel="p(context 0)", title="Online inference vs ideal observer",
           ylim=(-0.02, 1.02))
    ax.legend(fontsize=7, loc="lower right")


def _recomposition(ax, results):
    r = results.get("recomposition")
    if r is None:
        ax.set_axis_off()
        return
    for arm in ("gbi", "baseline"):
        c = np.asarray(r[arm]["loss_curve_mean"])
        ax.plot(np.arange(len(c)), c, color=COLORS[arm], label=f"{arm} (optimised latent)")
        ax.axhline(r[arm]["loss_true_code"]["mean"], color=COLORS[arm], ls="--", lw=0.8)
    ax.axhline(r["ideal_loss"], color="k", ls=":", label="ideal")
    ax.set(xlabel="latent optimisation step", ylabel=f"held-out loss ({r['loss']})",
           title=f"Recomposition: held-out (mean {r['heldout']['mean']}, sd {r['heldout']['std']})")
    ax.legend(fontsize=7)


def _modularity(ax, results):
    arms = results["arms"]
    v = [results["modularity"][a]["shared_unit_ratio"] for a in arms]
    ax.bar(arms, [d["mean"] for d in v], yerr=[d["std"] for d in v],
           color=[COLORS[a] for a in arms])
    ax.set(ylabel="shared-unit ratio", title="Modularity (lower = more modular)", ylim=(0, 1.05))


def make_all(results, fit, test, probs, hmm_post, scores, win_ll, members, window, out_dir):
    panels = {
        "learning_curves": lambda ax: _learning(ax, results, fit, members),
        "forgetting": lambda ax: _forgetting(ax, results),
        "one_step_vs_likelihood": lambda ax: _one_step(ax, results, scores, win_ll, members),
        "online_vs_hmm": lambda ax: _online(ax, results, test, probs, hmm_post, members, window),
        "recomposition": lambda ax: _recomposition(ax, results),
        "modularity": lambda ax: _modularity(ax, results),
    }
    save_panels(panels, out_dir, grid=(2, 3), summary_size=(16, 9), panel_size=(6, 4.2))
