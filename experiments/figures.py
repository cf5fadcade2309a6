"""Draw any experiment's figures from its workdir alone (``results.json`` + saved arrays).

    python -m experiments.figures --workdir=workdirs/gbi_toy

writes ``<workdir>/figures/*.png`` (seconds) and prints the paths. The experiment that
made the workdir is ``results.json["experiment"]`` (the package name under
``experiments/``); a ``results.json`` without that key (written before it existed) is
recognised by its top-level keys (:data:`SIGNATURES`). The experiment's
``figures.draw(workdir) -> list[str]`` does the drawing; every run draws its own
figures through the same function, so a redraw reproduces them.

From Python: ``experiments.figures.draw(workdir)``.
"""

from __future__ import annotations

import importlib
import sys

from gbi_jax.workdir import Workdir

EXPERIMENTS = ("gbi_toy", "gbi_images", "gbi_lm", "disentangle")
# Top-level results.json keys that only one experiment writes (for workdirs without
# results.json["experiment"]).
SIGNATURES = {"gbi_toy": ("arms", "forgetting", "one_step"),
              "gbi_images": ("datasets", "ood", "skipped"),
              "gbi_lm": ("identification", "adaptation", "ood"),
              "disentangle": ("figure", "rows", "table")}


class UnknownWorkdirError(ValueError):
    """A workdir without a finished run of a known experiment."""


def experiment_of(workdir: str) -> str:
    """The name (in :data:`EXPERIMENTS`) of the experiment whose run is in ``workdir``.

    Raises:
      UnknownWorkdirError: no ``results.json`` (the run has not finished), or one that
        names no known experiment and matches no signature.
    """
    wd = Workdir(workdir)
    results = wd.read_results()
    if results is None:
        raise UnknownWorkdirError(f"{wd.file('results.json')} does not exist; finish the run "
                                "(rerun its command with this --workdir) first.")
    name = results.get("experiment")
    if name is not None:
        if name not in EXPERIMENTS:
            raise UnknownWorkdirError(f"{wd.path}: results.json names experiment {name!r}, not one of "
                             f"{EXPERIMENTS}.")
        return name
    matches = [n for n, keys in SIGNATURES.items() if all(k in results for k in keys)]
    if len(matches) != 1:
        raise UnknownWorkdirError(f"{wd.path}: cannot tell which experiment wrote results.json (no "
                         f"'experiment' key; top-level keys {sorted(results)[:12]}).")
    return matches[0]


def draw(workdir: str) -> list[str]:
    """Draw the figures of the run in ``workdir`` into ``workdir/figures``; return the paths."""
    name = experiment_of(workdir)
    module = importlib.import_module(f"experiments.{name}.figures")
    return list(module.draw(workdir))


def main(argv) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        paths = draw(_WORKDIR.value)
    except (UnknownWorkdirError, FileNotFoundError) as e:
        print(f"error: cannot draw figures.\n{e}", file=sys.stderr)
        sys.exit(2)
    for path in paths:
        print(path)


if __name__ == "__main__":
    from absl import app, flags

    _WORKDIR = flags.DEFINE_string("workdir", None, "A finished run's directory.")
    flags.mark_flag_as_required("workdir")
    app.run(main)
