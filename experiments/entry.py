"""The shared absl entry point of every experiment; each ``main.py`` is one call to :func:`main`.

    python -m experiments.<name>.main --config=experiments/<name>/config.py[:variant] \
        --workdir=DIR [--config.a.b=value ...] [--config_override_ok=train.lr,...] [--verbose]

``--config`` is an ml_collections config file (``path.py[:variant]``, locked; any field
can be overridden as ``--config.a.b=value``) and ``--workdir`` the run's directory.
The run goes: parse the flags, check the config (the experiment module's
``validate(config)``), take the workdir's lock (a second process on the same workdir
is refused, naming the PID of the one running), then the experiment module's
``run(config, workdir, override_ok=...)`` (which finds its data before it claims the
workdir). Nothing is written to the workdir before the config has been checked.

Errors a user can fix end the run with exit status 2 and one message on stderr,
``error: <what>.`` followed by what to change, with no traceback: a bad or unknown
``--config.*`` field, a config file or variant that does not exist, a config that
fails validation, a missing dataset, a workdir made by another config, a workdir in
use by another process, a damaged workdir file, a diverged run. ``--verbose`` (or
``--debug``) shows the Python traceback as well. Any other exception is a bug and
shows its traceback.

Several processes: ``--distributed`` makes the run one process of a ``jax.distributed``
program (``jax.distributed.initialize()`` before anything else): every process runs the
same experiment, ``training.fit`` shards the networks over the devices of all of them,
and only process 0 writes the workdir. Under SLURM (``srun``, or ``launch.run
--executor=slurm --tasks_per_job=N``) the peers are found from the job's environment;
by hand, start each process with ``--coordinator_address=HOST:PORT --num_processes=N
--process_id=i`` (process 0 listens on that port)::

    python -m experiments.disentangle.main --config=experiments/disentangle/config.py:smoke \
        --workdir=DIR --distributed --coordinator_address=127.0.0.1:12355 \
        --num_processes=2 --process_id=0     # and --process_id=1 in a second shell

``--config_override_ok=field,...`` resumes a workdir with fields that differ from the
config it was made with, on purpose (e.g. ``train.lr`` after a diverged run); each
change is recorded in the workdir's ``history.jsonl``. Fields every experiment
ignores anyway (data directories, ``figures``, ``runtime.*``) are listed in its
config's docstring.

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
import importlib.util
import os
import sys
import traceback
from typing import Callable, Mapping, NoReturn, Optional, Sequence, Union

from absl import app, flags, logging
from ml_collections import config_flags

# host_device_count / usable_cores: re-exported (``entry.host_device_count`` etc.).
from experiments.host_devices import (HOST_DEVICES_ENV, HostDevices, host_device_count,
                                      request_host_devices, usable_cores)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Path to the config file, optionally with a variant: config.py:smoke.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for this run's outputs.")
_OVERRIDE_OK = flags.DEFINE_list(
    "config_override_ok", [],
    "Config fields (dotted, comma-separated, e.g. train.lr) that may differ from the config "
    "the workdir was made with; the run resumes with the new values and records each change "
    "in the workdir's history.jsonl.")
_VERBOSE = flags.DEFINE_bool(
    "verbose", False, "Show the Python traceback of a user error (bad config, missing data, "
    "workdir conflict, ...) as well as its message.")
flags.DEFINE_alias("debug", "verbose")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Run as one process of a jax.distributed program (jax.distributed.initialize(); "
    "under SLURM or another cluster the peers are found from its environment).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --distributed: host:port of process 0 (manual launch).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None,
                                      "With --distributed: how many processes (manual launch).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None,
                                   "With --distributed: this process's index (manual launch).")
flags.mark_flags_as_required(["config", "workdir"])


def host_devices_envs(experiment: str) -> tuple[str, ...]:
    """The environment variables that override ``host_devices``, the first set wins:
    ``("DISENTANGLE_HOST_DEVICES", "GBI_HOST_DEVICES")`` for ``experiments.disentangle.*``."""
    parts = experiment.split(".")
    name = parts[1] if len(parts) > 1 and parts[0] == "experiments" else parts[0]
    return (f"{name.upper()}_HOST_DEVICES", HOST_DEVICES_ENV)


def user_errors() -> dict[type, str]:
    """Exception types a user can fix -> the heading printed above their message."""
    from gbi_jax.data import DatasetNotFoundError
    from gbi_jax.training import CheckpointError, NonFiniteLossError
    from gbi_jax.validation import FieldError
    from gbi_jax.workdir import CorruptWorkdirError, WorkdirConflictError, WorkdirLockedError

    return {FieldError: "invalid config", WorkdirConflictError: "workdir conflict",
            WorkdirLockedError: "workdir in use", CorruptWorkdirError: "damaged workdir",
            CheckpointError: "unusable checkpoint",
            NonFiniteLossError: "training diverged", DatasetNotFoundError: "missing dataset"}


def user_error_heading(err: BaseException,
                       errors: Optional[Mapping[type, str]] = None) -> Optional[str]:
    """The heading of a user error (see :func:`user_errors`), else None (a bug).

    A ``ValueError`` whose message starts with ``config.`` (how every experiment names a
    bad field) is an invalid config too."""
    errors = user_errors() if errors is None else errors
    for kind, heading in errors.items():
        if isinstance(err, kind):
            return heading
    if isinstance(err, ValueError) and str(err).startswith("config."):
        return "invalid config"
    return None


def fail(heading: str, message: str) -> NoReturn:
    """Print ``error: <heading>.`` and ``message`` on stderr; exit with status 2."""
    print(f"error: {heading}.\n{message}".rstrip(), file=sys.stderr)
    sys.exit(2)


def run_cleanly(run: Callable[..., object], config, workdir: str, *,
                errors: Optional[Mapping[type, str]] = None, verbose: bool = False,
                **kwargs) -> None:
    """``run(config, workdir, **kwargs)``; a user error prints ``error: <heading>.`` and
    its message on stderr and exits with status 2 (no traceback unless ``verbose``)."""
    errors = user_errors() if errors is None else dict(errors)
    try:
        run(config, workdir, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
        heading = user_error_heading(e, errors)
        if heading is None:
            raise
        if verbose:
            traceback.print_exc()
        fail(heading, str(e))


def locked_run(run: Callable[..., object], config, workdir: str, **kwargs) -> None:
    """``run(config, workdir, **kwargs)`` holding the workdir's lock (``Workdir.lock``).

    A workdir that did not exist before and holds nothing but the lock file when ``run``
    fails (it failed before claiming the workdir) is removed again."""
    from gbi_jax.workdir import LOCK_FILE, Workdir

    wd = Workdir(workdir)
    existed = os.path.isdir(wd.path)
    try:
        with wd.lock():
            run(config, workdir, **kwargs)
    except BaseException:
        if not existed and os.path.isdir(wd.path):
            left = os.listdir(wd.path)
            if left in ([], [LOCK_FILE]):
                for name in left:
                    os.remove(wd.file(name))
                os.rmdir(wd.path)
        raise


# -- command-line errors ------------------------------------------------------
def _argv_config_path(argv: Sequence[str]) -> Optional[str]:
    spec = None
    for i, arg in enumerate(argv):  # the last --config wins, as in absl
        if arg.startswith("--config="):
            spec = arg.split("=", 1)[1]
        elif arg == "--config" and i + 1 < len(argv):
            spec = argv[i + 1]
    return spec


def _config_overrides(argv: Sequence[str]) -> list[str]:
    """The ``--config.a.b=value`` arguments of ``argv`` (``a.b=value``)."""
    return [a[len("--config."):] for a in argv if a.startswith("--config.")]


def _load_default_config(spec: Optional[str]):
    """The config of ``path.py[:variant]`` without command-line overrides, or None."""
    if not spec:
        return None
    path, _, variant = spec.partition(":")
    try:
        module_spec = importlib.util.spec_from_file_location("_entry_config", path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["_entry_config"] = module  # dataclasses look the module up by name
        module_spec.loader.exec_module(module)
        return module.get_config(variant) if variant else module.get_config()
    except Exception:  # pylint: disable=broad-except
        return None


def _unknown_field_message(key: str, argv: Sequence[str]) -> str:
    spec = _argv_config_path(argv)
    for override in _config_overrides(argv):
        field = override.split("=", 1)[0]
        parts = field.split(".")
        if key in parts:
            parent = ".".join(parts[:parts.index(key)])
            config = _load_default_config(spec)
            node = config
            for part in parts[:parts.index(key)]:
                node = node.get(part) if hasattr(node, "get") else None
            known = sorted(node.keys()) if hasattr(node, "keys") else []
            where = f"config.{parent}" if parent else "the config"
            hint = f" Fields of {where}: {', '.join(known)}." if known else ""
            return (f"--config.{field}: {where} has no field {key!r}; check the spelling "
                    f"(the fields are defined in {spec.partition(':')[0]}).{hint}")
    return f"the config has no field {key!r}; check the --config.* overrides."


def flag_error_message(err: BaseException, argv: Sequence[str]) -> str:
    """One clean message for an error raised while parsing the command line."""
    if isinstance(err, (KeyError, AttributeError)):
        cause = err.args[0] if err.args else err
        key = cause.args[0] if isinstance(cause, KeyError) and cause.args else cause
        name, _, suggestion = str(key).strip("'\"").partition("\n")
        message = _unknown_field_message(name.strip("'\""), argv)
        return f"{message} {suggestion.strip()}" if suggestion.strip() else message
    text = str(err)
    if "Traceback (most recent call last)" in text:  # a config file that raised
        head = text.splitlines()[0].rstrip(":").rstrip()
        last = [l for l in text.splitlines() if l.strip()][-1].strip()
        head = head.replace("Error whilst parsing config file", "").rstrip(": ")
        text = f"{head}: {last}"
    return text.replace("flag --", "--", 1) if text.startswith("flag --") else text


def _check_config_file(argv: Sequence[str]) -> None:
    spec = _argv_config_path(argv)
    if spec is None:
        return
    path = spec.partition(":")[0]
    if not os.path.isfile(path):
        fail("bad command line", f"--config={spec}: no config file {path!r} (a path "
             f"relative to {os.getcwd()}, e.g. experiments/gbi_toy/config.py:smoke).")


def _same_kind(value, default) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return type(value) is type(default)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _check_tuple_overrides(argv: Sequence[str], config) -> None:
    """A ``--config.a.b=(...)`` override of a tuple field keeps the element type of the
    default (config_flags turns ``(x,)`` into the string ``'(x,)'`` for a tuple of ints)."""
    default = None
    for override in _config_overrides(argv):
        field = override.split("=", 1)[0]
        if default is None:
            default = _load_default_config(_argv_config_path(argv))
            if default is None:
                return
        old, new = default, config
        for part in field.split("."):
            old = old.get(part) if hasattr(old, "get") else None
            new = new.get(part) if hasattr(new, "get") else None
        if not (isinstance(old, tuple) and old and isinstance(new, tuple)):
            continue
        kinds = {type(v) for v in old}
        if len(kinds) == 1 and not all(_same_kind(v, old[0]) for v in new):
            fail("bad command line", f"--config.{override}: config.{field} is a tuple of "
                 f"{kinds.pop().__name__} like {old!r}, got {new!r}.")


def parse_flags(argv: Sequence[str]) -> list[str]:
    """``app.run``'s flag parser: a bad command line (unknown flag or ``--config.*``
    field, a value of the wrong type, a config file or variant that does not exist)
    exits with status 2 and one message; ``--verbose`` / ``--debug`` adds the traceback."""
    verbose = any(a in ("--verbose", "--debug", "--verbose=true", "--debug=true")
                  for a in argv)
    try:
        rest = flags.FLAGS(argv)
    except Exception as e:  # pylint: disable=broad-except
        if verbose:
            traceback.print_exc()
        fail("bad command line", flag_error_message(e, argv))
    _check_config_file(argv)
    _check_tuple_overrides(argv, _CONFIG.value)
    return rest


def start_distributed() -> None:
    """``jax.distributed.initialize`` as the ``--distributed`` flags ask (nothing without
    them); a bad combination exits with status 2. Processes other than 0 log warnings only."""
    manual = {"coordinator_address": _COORDINATOR.value, "num_processes": _NUM_PROCESSES.value,
              "process_id": _PROCESS_ID.value}
    given = [k for k, v in manual.items() if v is not None]
    if not _DISTRIBUTED.value:
        if given:
            fail("bad command line", f"--{given[0]} applies only to a distributed run; add "
                 "--distributed.")
        return
    if given and len(given) != len(manual):
        missing = [f"--{k}" for k in manual if k not in given]
        fail("bad command line", f"a manual --distributed launch needs --coordinator_address, "
             f"--num_processes and --process_id together; also give {', '.join(missing)} "
             "(or none of them, to let jax.distributed find the cluster).")
    if given and not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
        fail("bad command line", f"--process_id must be in [0, --num_processes), got "
             f"{_PROCESS_ID.value} of {_NUM_PROCESSES.value}.")
    import jax  # pylint: disable=import-outside-toplevel

    try:
        jax.distributed.initialize(**{k: v for k, v in manual.items() if v is not None})
    except (ValueError, RuntimeError) as e:
        fail("cannot start the distributed run", f"jax.distributed.initialize failed: {e}. "
             "Start every process with the same --coordinator_address and --num_processes, "
             "or run under a cluster manager jax detects (SLURM).")
    if jax.process_index() != 0:
        logging.set_verbosity(logging.WARNING)


def launch(run: Union[Callable[..., object], str], *,
           validate: Optional[Callable[..., object]] = None,
           extra_errors: Optional[Mapping[type, str]] = None) -> None:
    """``app.run`` an experiment: check the config with ``validate(config)``, take the
    workdir lock, then ``run(config, workdir, override_ok=...)``; ``extra_errors`` adds to
    :func:`user_errors`. ``run`` may be the name of the experiment module instead, imported
    after the flags are parsed (its ``run`` and ``validate``), so a bad command line is
    reported before JAX is imported."""

    def _main(argv):
        if len(argv) > 1:
            fail("bad command line", f"unexpected arguments {argv[1:]}; every setting is "
                 "a --flag (config fields as --config.a.b=value).")
        logging.set_verbosity(logging.INFO)
        start_distributed()
        run_fn, validate_fn = run, validate
        if isinstance(run, str):
            module = importlib.import_module(run)
            run_fn, validate_fn = module.run, getattr(module, "validate", None)
        errors = {**user_errors(), **(extra_errors or {})}
        config, workdir = _CONFIG.value, _WORKDIR.value
        override_ok = tuple(f.strip() for f in _OVERRIDE_OK.value if f.strip())

        def checked_run(config, workdir, **kwargs):
            if validate_fn is not None:
                validate_fn(config)
            locked_run(run_fn, config, workdir, **kwargs)

        run_cleanly(checked_run, config, workdir, errors=errors, verbose=_VERBOSE.value,
                    **({"override_ok": override_ok} if override_ok else {}))

    app.run(_main, flags_parser=parse_flags)


def main(experiment: str, *, host_devices: HostDevices = None) -> None:
    """Run the module ``experiment`` (e.g. ``"experiments.gbi_toy.experiment"``): its
    ``validate(config)`` then ``run(config, workdir)``, after requesting ``host_devices``
    (see the module docstring); the module is imported only after that (and after the
    flags are parsed), so JAX sees the devices."""
    request_host_devices(host_devices, host_devices_envs(experiment))
    launch(experiment)
