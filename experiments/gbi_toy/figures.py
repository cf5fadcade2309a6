"""Figures of the GBI toy experiment, drawn from its workdir alone.

``draw(workdir)`` reads ``results.json`` and ``arrays.npz`` (both written by
``experiment.run``) and writes ``figures/summary.png`` (all panels) and one PNG per
panel: learning curves, forgetting, one-step scores vs the ideal observer's
likelihoods, online latent vs the HMM posterior, recomposition, modularity
(Hummos et al. 2024, Sec. 3.1, Figs. 2-3, Table 1). Redraw a finished run with
``python -m experiments.figures --workdir=DIR`` (seconds).
"""

from __future__ import annotations

import numpy as np

from experiments.plotting import save_panels, section_or_blank
from gbi_jax.workdir import Workdir, from_jsonable

COLORS = {"gbi": "tab:blue", "baseline": "tab:orange", "shuffled": "tab:gray"}


def _learning(ax, results, arrays):
    steps = arrays["train_steps"]
    loss = arrays["train_loss"]  # [rows, M]
    for arm in results["arms"]:
        cols = [m for m, a in enumerate(arrays["member_arm"]) if a == arm]
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


def _one_step(ax, results, arrays):
    scores = arrays["one_step_scores"]  # [M, N, K]
    m = [i for i, a in enumerate(arrays["member_arm"]) if a == "gbi"]
    if not m or scores.shape[-1] != 2:
        ax.set_axis_off()
        return
    s = scores[m[0]]
    ll = arrays["window_loglik"][0]
    ax.scatter(ll[:, 0] - ll[:, 1], s[:, 0] - s[:, 1], s=4, alpha=0.4)
    r = results["one_step"]["gbi"]["corr_window_loglik"]["per_seed"][0]
    ax.set(xlabel="ideal observer: log p(window|c=0) - log p(window|c=1)",
           ylabel="one-step GBI: score_0 - score_1",
           title=f"One-step gradient vs likelihood (r = {r:.3f})")


def _online(ax, results, arrays):
    probs, hmm_post = arrays["online_latent"], arrays["hmm_posterior"]  # [M | S, T, K]
    m = [i for i, a in enumerate(arrays["member_arm"]) if a == "gbi"]
    if not m:
        ax.set_axis_off()
        return
    t = np.arange(probs.shape[1])
    ctx = arrays["test_context"][0]
    ax.fill_between(t, 0, 1, where=ctx == 0, color="0.9", step="mid", label="true context 0")
    ax.plot(t, hmm_post[0, :, 0], color="k", lw=1, label="HMM posterior p(c=0)")
    ax.plot(t, probs[m[0], :, 0], color=COLORS["gbi"], lw=1, label="GBI latent softmax(z)_0")
    ax.set(xlabel="time step", ylabel="p(context 0)", title="Online inference vs ideal observer",
           ylim=(-0.02, 1.02))
    ax.legend(fontsize=7, loc="lower right")


def _recomposition(ax, results):
    r = section_or_blank(ax, results, "recomposition")
    if r is None:
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


def make_all(results: dict, arrays: dict, out_dir: str) -> list[str]:
    """Draw every panel from ``results`` and ``arrays`` into ``out_dir``; return the paths."""
    panels = {
        "learning_curves": lambda ax: _learning(ax, results, arrays),
        "forgetting": lambda ax: _forgetting(ax, results),
        "one_step_vs_likelihood": lambda ax: _one_step(ax, results, arrays),
        "online_vs_hmm": lambda ax: _online(ax, results, arrays),
        "recomposition": lambda ax: _recomposition(ax, results),
        "modularity": lambda ax: _modularity(ax, results),
    }
    return save_panels(panels, out_dir, grid=(2, 3), summary_size=(16, 9), panel_size=(6, 4.2))


def draw(workdir: str) -> list[str]:
    """Draw the figures of the finished run in ``workdir`` into ``workdir/figures``."""
    wd = Workdir(workdir)
    results, arrays = wd.read_results(), wd.read_arrays()
    if results is None or arrays is None:
        raise FileNotFoundError(
            f"{wd.path} lacks results.json or arrays.npz; rerun the experiment with this "
            "--workdir (it resumes from its checkpoints) to write them.")
    return make_all(from_jsonable(results), arrays, wd.figures_dir)
