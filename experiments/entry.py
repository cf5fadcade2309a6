"""The shared absl entry point of every experiment (``main.py`` stays three lines).

Defines ``--config`` (an ml_collections config file, ``path.py[:variant]``, locked;
fields overridable as ``--config.a.b=value``) and ``--workdir``, then calls
``run(config, workdir)``. Errors a user can fix (a workdir made by another
config, a diverged run, a missing dataset, ...) end the run with the message and
exit status 2 instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import Callable, Mapping, Optional

from absl import app, flags, logging
from ml_collections import config_flags

from gbi_jax.training import NonFiniteLossError
from gbi_jax.workdir import WorkdirConflictError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to the config file, optionally with a variant: config.py:smoke.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])

USER_ERRORS: dict[type, str] = {
    WorkdirConflictError: "workdir conflict",
    NonFiniteLossError: "training diverged",
}


def launch(run: Callable[..., object], *,
           user_errors: Optional[Mapping[type, str]] = None) -> None:
    """``app.run`` an experiment's ``run(config, workdir)``."""
    errors = {**USER_ERRORS, **(user_errors or {})}

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.INFO)
        try:
            run(_CONFIG.value, _WORKDIR.value)
        except tuple(errors) as e:
            heading = next(h for t, h in errors.items() if isinstance(e, t))
            print(f"error: {heading}.\n{e}", file=sys.stderr)
            sys.exit(2)

    app.run(main)
