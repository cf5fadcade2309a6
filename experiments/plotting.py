"""Figure helpers shared by the experiments (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from typing import Callable, Mapping


def finished_results(workdir: str):
    """``(Workdir, results)`` of the finished run in ``workdir``, with the ``"nan"`` strings
    of ``results.json`` read back as floats (what the figures plot).

    Raises:
      FileNotFoundError: the run has not written ``results.json`` yet.
    """
    from gbi_jax.workdir import Workdir, from_jsonable

    wd = Workdir(workdir)
    results = wd.read_results()
    if results is None:
        raise FileNotFoundError(f"{wd.file('results.json')} does not exist.")
    return wd, from_jsonable(results)


def section_or_blank(ax, results: Mapping, key: str):
    """``results[key]``, or None after blanking ``ax`` when the run has no such section
    (an analysis switched off in its config)."""
    section = results.get(key)
    if section is None:
        ax.set_axis_off()
    return section


def save_panels(panels: Mapping[str, Callable], out_dir: str, *, grid: tuple[int, int],
                summary_size: tuple[float, float], panel_size: tuple[float, float],
                summary_dpi: int = 110, panel_dpi: int = 110) -> list[str]:
    """Draw every ``panels[name](ax)`` into one ``summary.png`` grid and into ``<name>.png``.

    Grid cells left over after the panels are hidden. Returns the written paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = grid
    if rows * cols < len(panels):
        raise ValueError(f"grid {grid} has fewer cells than the {len(panels)} panels.")
    os.makedirs(out_dir, exist_ok=True)
    fig, axes = plt.subplots(rows, cols, figsize=summary_size, squeeze=False)
    axes = axes.ravel()
    for ax, draw in zip(axes, panels.values()):
        draw(ax)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    fig.tight_layout()
    paths = [os.path.join(out_dir, "summary.png")]
    fig.savefig(paths[0], dpi=summary_dpi)
    plt.close(fig)
    for name, draw in panels.items():
        fig, ax = plt.subplots(figsize=panel_size)
        draw(ax)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, f"{name}.png"))
        fig.savefig(paths[-1], dpi=panel_dpi)
        plt.close(fig)
    return paths
