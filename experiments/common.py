"""What every experiment's ``run`` does the same way."""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, ContextManager, Optional, Sequence

from gbi_jax.workdir import Workdir


def claimed_workdir(workdir: str, config: Any, config_module: ModuleType,
                    override_ok: Sequence[str] = ()) -> ContextManager[Workdir]:
    """``Workdir(workdir).claimed(config, ...)`` with the experiment's field rules: the
    config module's ``RUNTIME_FIELDS`` are never compared, its ``EVALUATION_FIELDS`` and
    the user's ``override_ok`` (``--config_override_ok``) may differ and are recorded in
    ``history.jsonl``. Call it once the config is valid and the data is found."""
    return Workdir(workdir).claimed(
        config, ignore=config_module.RUNTIME_FIELDS,
        override_ok=tuple(config_module.EVALUATION_FIELDS) + tuple(override_ok))


def run_experiment(config: Any, workdir: str, config_module: ModuleType,
                   body: Callable[..., Any], *, validate: Callable[[Any], None],
                   prepare: Optional[Callable[[Any], tuple]] = None,
                   override_ok: Sequence[str] = ()) -> Any:
    """The order every experiment's ``run`` follows: ``validate(config)``, then
    ``prepare(config)`` (find the data; returns extra arguments for ``body``), then claim
    the workdir (:func:`claimed_workdir`) and return ``body(config, wd, *extra)``. A bad
    config or missing data therefore fails before anything is written, and a run that
    fails before it trained anything leaves no claim behind."""
    validate(config)
    extra = tuple(prepare(config)) if prepare is not None else ()
    with claimed_workdir(workdir, config, config_module, override_ok) as wd:
        return body(config, wd, *extra)
