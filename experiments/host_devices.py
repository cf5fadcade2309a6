"""How many host devices a CPU run asks XLA for (``XLA_FLAGS``), with no absl flags and
no JAX import, so entry points and benchmarks can call it before JAX starts.

``host_device_count(host_devices, envs)``: the first of ``envs`` that is set, else
``host_devices`` (``None`` = one device, ``"auto"`` = one per usable core, or a count);
``request_host_devices`` appends ``--xla_force_host_platform_device_count=<n>`` to
``XLA_FLAGS`` unless ``XLA_FLAGS`` already sets the count.
"""

from __future__ import annotations

import os
from typing import Sequence, Union

HOST_DEVICES_ENV = "GBI_HOST_DEVICES"
_XLA_COUNT_FLAG = "xla_force_host_platform_device_count"
HostDevices = Union[int, str, None]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


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
