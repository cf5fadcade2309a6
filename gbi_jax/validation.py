"""Argument checks shared by the library: one wording for every bad value.

Every check raises :class:`FieldError`, a ``ValueError`` that carries the name of
the bad field, with the message ``"<field> must be <rule>, got <value>."``. A
library class checks its own fields with these helpers; an experiment that builds
the class from its config wraps the construction in :func:`renamed` so the error
names the config field instead (``config.grid.sigmas: sigma must be >= 0, ...``).

Checks of numbers only apply to concrete Python / NumPy values: a traced value
(inside ``jit``) passes unchecked, so the helpers are safe to call from code that is
also traced.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import Any, Iterable, Iterator, Mapping, Optional

__all__ = [
    "FieldError",
    "require",
    "check_int",
    "check_positive",
    "check_range",
    "check_choice",
    "renamed",
]


class FieldError(ValueError):
    """A bad value of one named field (``field``); ``str(err)`` is the full message."""

    def __init__(self, field: str, message: str, *, text: Optional[str] = None):
        super().__init__(text if text is not None else f"{field} {message}")
        self.field = field
        self.message = message


def _concrete_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) or (
        hasattr(value, "shape") and getattr(value, "shape", None) == ()
        and type(value).__module__.startswith("numpy"))


def require(condition: bool, field: str, message: str) -> None:
    """Raise ``FieldError(field, message)`` unless ``condition``."""
    if not condition:
        raise FieldError(field, message)


def check_int(field: str, value: Any, minimum: Optional[int] = None,
              maximum: Optional[int] = None) -> int:
    """``value`` as an ``int``; it must be integral (not a bool) and in ``[minimum, maximum]``.

    Returns ``int(value)``.
    """
    bounds = (f" >= {minimum}" if maximum is None else f" in [{minimum}, {maximum}]"
              ) if minimum is not None else (f" <= {maximum}" if maximum is not None else "")
    try:
        ok = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError):
        ok = False
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    require(ok, field, f"must be an integer{bounds}, got {value!r}.")
    return int(value)


def check_positive(field: str, value: Any, *, allow_zero: bool = False) -> Any:
    """``value > 0`` (``>= 0`` with ``allow_zero``); traced values pass. Returns ``value``."""
    if _concrete_number(value):
        ok = value >= 0 if allow_zero else value > 0
        require(bool(ok), field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}.")
    return value


def check_range(field: str, value: Any, low: Optional[float] = None,
                high: Optional[float] = None, *, low_open: bool = False,
                high_open: bool = False) -> Any:
    """``value`` in the interval from ``low`` to ``high`` (open ends as flagged); traced
    values pass. Returns ``value``."""
    if _concrete_number(value):
        ok = ((low is None or (value > low if low_open else value >= low))
              and (high is None or (value < high if high_open else value <= high)))
        left = "-inf" if low is None else low
        right = "inf" if high is None else high
        interval = (f"{'(' if low_open or low is None else '['}{left}, {right}"
                    f"{')' if high_open or high is None else ']'}")
        require(bool(ok), field, f"must be in {interval}, got {value}.")
    return value


def check_choice(field: str, value: Any, choices: Iterable[Any]) -> Any:
    """``value`` is one of ``choices``. Returns ``value``."""
    choices = tuple(choices)
    require(value in choices, field, f"must be one of {choices}, got {value!r}.")
    return value


@contextlib.contextmanager
def renamed(fields: Mapping[str, str], prefix: str = "") -> Iterator[None]:
    """Re-raise a :class:`FieldError` from the block under the caller's field name.

    ``fields`` maps a library field to the name the user wrote (e.g.
    ``{"TaskInstance.sigma": "grid.sigmas"}``); a key ending in ``"."`` maps every
    field with that prefix (``{"SwitchingGaussianTask.": "task."}`` turns
    ``SwitchingGaussianTask.stds`` into ``task.stds``). The message becomes
    ``"<prefix><config field>: <original message>"``; unmapped fields keep their name.

        with renamed({"TaskInstance.sigma": "grid.sigmas"}, prefix="config."):
            task.check_instance(num_tasks, sigma=s)
    """
    try:
        yield
    except FieldError as err:
        name = _rename(err.field, fields)
        full = prefix + name
        raise FieldError(full, err.message, text=f"{full}: {err}") from None


def _rename(field: str, fields: Mapping[str, str]) -> str:
    if field in fields:
        return fields[field]
    prefixes = [k for k in fields if k.endswith(".") and field.startswith(k)]
    if prefixes:
        key = max(prefixes, key=len)
        return fields[key] + field[len(key):]
    return field
