"""The shared absl entry point of every experiment; each ``main.py`` is one call to :func:`main`.

    python -m experiments.<name>.main --config=experiments/<name>/config.py[:variant] \
        --workdir=DIR [--config.a.b=value ...]

``--config`` is an ml_collections config file (``path.py[:variant]``, locked; any field
can be overridden as ``--config.a.b=value``) and ``--workdir`` the run's directory;
the experiment module's ``run(config, workdir)`` does the rest. Errors a user can fix
(a workdir made by another config, a diverged run, a missing dataset) end the run with
the message and exit status 2 instead of a traceback.

Host devices: before JAX is imported, :func:`main` can ask XLA to split the CPU into
several host devices (``training.fit`` then shards the vmapped networks over them, one
core each). The experiment's ``main.py`` sets the default (``host_devices``: ``None`` =
one device, ``"auto"`` = one per usable core, or a count). The environment overrides it:
``<NAME>_HOST_DEVICES=<n>`` for the experiment package ``experiments.<name>`` (e.g.
``DISENTANGLE_HOST_DEVICES``), else ``GBI_HOST_DEVICES=<n>`` for any experiment; an
``XLA_FLAGS`` that already sets ``--xla_force_host_platform_device_count`` wins over all.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, Mapping, Optional, Sequence, Union

from absl import app, flags, logging
from ml_collections import config_flags

HOST_DEVICES_ENV = "GBI_HOST_DEVICES"
_XLA_COUNT_FLAG = "xla_force_host_platform_device_count"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to the config file, optionally with a variant: config.py:smoke.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])

HostDevices = Union[int, str, None]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def host_devices_envs(experiment: str) -> tuple[str, ...]:
    """The environment variables that override ``host_devices``, the first set wins:
    ``("DISENTANGLE_HOST_DEVICES", "GBI_HOST_DEVICES")`` for ``experiments.disentangle.*``."""
    parts = experiment.split(".")
    name = parts[1] if len(parts) > 1 and parts[0] == "experiments" else parts[0]
    return (f"{name.upper()}_HOST_DEVICES", HOST_DEVICES_ENV)


def host_device_count(host_devices: HostDevices, envs: Sequence[str] = (HOST_DEVICES_ENV,)) -> int:
    """The number of host devices asked for: the first of ``envs`` that is set, else
    ``host_devices``. ``None`` -> 1, ``"auto"`` -> :func:`usable_cores`, ``n`` -> n.
    """
    value = next((os.environ[e] for e in envs if os.environ.get(e)), host_devices)
    if value is None:
        return 1
    if value == "auto":
        return usable_cores()
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1:
        raise ValueError(f"host devices (host_devices, ${' / $'.join(envs)}) must be None, "
                         f"'auto' or a positive integer, got {value!r}.")
    return n


def request_host_devices(host_devices: HostDevices,
                         envs: Sequence[str] = (HOST_DEVICES_ENV,)) -> int:
    """Ask XLA for :func:`host_device_count` host devices; call before JAX starts.

    Appends ``--xla_force_host_platform_device_count=<n>`` to ``XLA_FLAGS`` when n > 1,
    unless ``XLA_FLAGS`` already sets the count. Returns n (or 0 when ``XLA_FLAGS`` won).
    """
    xla_flags = os.environ.get("XLA_FLAGS", "")
    if _XLA_COUNT_FLAG in xla_flags:
        return 0
    n = host_device_count(host_devices, envs)
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{xla_flags} --{_XLA_COUNT_FLAG}={n}".strip()
    return n


def user_errors() -> dict[type, str]:
    """Exception types a user can fix -> the heading printed above their message."""
    from gbi_jax.data import DatasetNotFoundError
    from gbi_jax.training import NonFiniteLossError
    from gbi_jax.workdir import WorkdirConflictError

    return {WorkdirConflictError: "workdir conflict", NonFiniteLossError: "training diverged",
            DatasetNotFoundError: "missing dataset"}


def run_cleanly(run: Callable[..., object], config, workdir: str, *,
                errors: Optional[Mapping[type, str]] = None) -> None:
    """``run(config, workdir)``; a user error prints ``error: <heading>.`` and its message
    on stderr and exits with status 2 (no traceback)."""
    errors = user_errors() if errors is None else dict(errors)
    try:
        run(config, workdir)
    except tuple(errors) as e:
        heading = next(h for t, h in errors.items() if isinstance(e, t))
        print(f"error: {heading}.\n{e}", file=sys.stderr)
        sys.exit(2)


def launch(run: Callable[..., object], *,
           extra_errors: Optional[Mapping[type, str]] = None) -> None:
    """``app.run`` an experiment's ``run(config, workdir)`` with the ``--config`` and
    ``--workdir`` flags; ``extra_errors`` adds to :func:`user_errors`."""

    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
        logging.set_verbosity(logging.INFO)
        run_cleanly(run, _CONFIG.value, _WORKDIR.value,
                    errors={**user_errors(), **(extra_errors or {})})

    app.run(_main)


def main(experiment: str, *, host_devices: HostDevices = None) -> None:
    """Run the module ``experiment`` (e.g. ``"experiments.gbi_toy.experiment"``), whose
    ``run(config, workdir)`` is called, after requesting ``host_devices`` (see the module
    docstring); the module is imported only after that, so JAX sees the devices."""
    request_host_devices(host_devices, host_devices_envs(experiment))
    module = importlib.import_module(experiment)
    launch(module.run)
