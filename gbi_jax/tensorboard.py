"""Scalar TensorBoard event files, written and read without TensorFlow.

TensorBoard reads *event files*: a sequence of TFRecords (``uint64`` length, masked
CRC-32C of the length, the data, masked CRC-32C of the data), each holding one
``Event`` protocol buffer. Scalars need only a few fields of it, so this module encodes
them by hand (with the standard library and numpy) instead of depending on TensorFlow or
protobuf just to log numbers:

* ``Event``: ``wall_time`` (field 1, double), ``step`` (field 2, int64),
  ``file_version`` (field 3, ``"brain.Event:2"``, in the first record of a file) and
  ``summary`` (field 5);
* ``Summary``: ``value`` (field 1, repeated), each ``Value`` a ``tag`` (field 1,
  string) and a ``simple_value`` (field 2, float32).

CRC-32C comes from ``google_crc32c`` or ``crc32c`` when one of them is installed, and
otherwise from the table-driven :func:`crc32c_python` (a few records per training chunk
need no speed).

:class:`ScalarWriter` keeps the event files of the runs under one log directory (one
sub-directory per run); :func:`read_scalars` reads any directory of such files back. A
file cut by a kill in the middle of a write is read up to its last whole record, by
TensorBoard and by :func:`read_scalars` alike.

:func:`gbi_jax.training.fit` uses it for every fit with a workdir: one run per trained
network and one of their mean under ``<workdir>/tensorboard/<fit name>/``, rewritten
from ``metrics.jsonl`` whenever the fit (re)starts. Viewing them needs only
``pip install tensorboard``, then ``tensorboard --logdir=workdirs/``.
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from typing import Callable, Iterator, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from gbi_jax.workdir import atomic_write

FILE_VERSION = "brain.Event:2"
EVENT_FILE_PREFIX = "events.out.tfevents."
_TMP_PREFIX = ".writing."  # no "tfevents" in it: TensorBoard skips files being written
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF

Scalars = Mapping[str, float]
History = Mapping[str, Sequence[tuple[int, Scalars]]]


def _crc32c_table() -> tuple[int, ...]:
    """The 256-entry lookup table of CRC-32C (Castagnoli, reflected polynomial 0x82F63B78)."""
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c_python(data: bytes) -> int:
    """CRC-32C of ``data``, computed here one byte at a time from a table."""
    crc = _U32
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _U32


def _installed_crc32c() -> Optional[Callable[[bytes], int]]:
    """The CRC-32C function of ``google_crc32c`` or ``crc32c`` if either is installed."""
    try:
        import google_crc32c  # pylint: disable=import-outside-toplevel
        return google_crc32c.value
    except ImportError:
        pass
    try:
        import crc32c as crc32c_module  # pylint: disable=import-outside-toplevel
        return crc32c_module.crc32c
    except ImportError:
        return None


_INSTALLED_CRC32C = _installed_crc32c()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (by ``google_crc32c`` or ``crc32c`` when one is installed,
    else by :func:`crc32c_python`)."""
    if _INSTALLED_CRC32C is not None:
        return _INSTALLED_CRC32C(data)
    return crc32c_python(data)


def masked_crc32c(data: bytes) -> int:
    """The masked CRC-32C that TFRecord framing stores (rotated right by 15, plus a constant)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def frame(data: bytes) -> bytes:
    """One TFRecord: ``data``'s length, the length's masked CRC, ``data``, its masked CRC."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


# -- protocol buffer encoding ----------------------------------------------
def _varint(n: int) -> bytes:
    """The protobuf base-128 varint of ``n``."""
    n &= _U64  # a negative int64 is encoded as its 64-bit two's complement
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _delimited(field: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): strings and embedded messages."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _float32_bytes(value: float) -> bytes:
    """``value`` as a little-endian float32 (beyond float32's range: +-inf, as a cast
    rounds it)."""
    with np.errstate(over="ignore"):
        return np.float64(value).astype("<f4").tobytes()


def encode_event(wall_time: float, step: int, scalars: Optional[Scalars] = None,
                 file_version: Optional[str] = None) -> bytes:
    """The ``Event`` message of one step: its ``scalars`` (tag -> value, stored as
    float32 ``simple_value``s of one ``Summary``), or the ``file_version`` header."""
    out = b"\x09" + struct.pack("<d", wall_time) + b"\x10" + _varint(int(step))
    if file_version is not None:
        out += _delimited(3, file_version.encode())
    if scalars:
        values = b"".join(
            _delimited(1, _delimited(1, tag.encode()) + b"\x15" + _float32_bytes(value))
            for tag, value in scalars.items())
        out += _delimited(5, values)
    return out


# -- protocol buffer decoding ----------------------------------------------
def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """``(value, position after it)`` of the varint at ``pos`` of ``buf``."""
    shift = result = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """``(field, wire type, value)`` of every field of a message; a varint is an int, a
    fixed64/fixed32 its raw 8/4 bytes, a length-delimited field its bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


class Event(NamedTuple):
    """One decoded event: its wall time, step, ``file_version`` (or None) and scalars."""

    wall_time: float
    step: int
    file_version: Optional[str]
    scalars: dict[str, float]


def decode_event(data: bytes) -> Event:
    """The :class:`Event` of one record. Summary values without a ``simple_value``
    (images, histograms, tensors) are left out of ``scalars``."""
    wall_time, step, version, scalars = 0.0, 0, None, {}
    for field, wire, value in _fields(data):
        if field == 1 and wire == 1:
            wall_time = struct.unpack("<d", value)[0]
        elif field == 2 and wire == 0:
            step = value - (1 << 64) if value >> 63 else value
        elif field == 3 and wire == 2:
            version = value.decode()
        elif field == 5 and wire == 2:
            for f, w, entry in _fields(value):
                if f != 1 or w != 2:
                    continue
                tag, simple = None, None
                for vf, vw, v in _fields(entry):
                    if vf == 1 and vw == 2:
                        tag = v.decode()
                    elif vf == 2 and vw == 5:
                        simple = struct.unpack("<f", v)[0]
                if tag is not None and simple is not None:
                    scalars[tag] = simple
    return Event(wall_time, step, version, scalars)


def read_records(path: str) -> Iterator[bytes]:
    """The data of each record of a TFRecord file, up to the first one that is cut short
    (a write interrupted by a kill) or damaged (a checksum differs); reading stops
    there, as TensorBoard's does."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0
    while pos + 12 <= len(buf):
        length = buf[pos:pos + 8]
        if struct.unpack("<I", buf[pos + 8:pos + 12])[0] != masked_crc32c(length):
            return
        size = struct.unpack("<Q", length)[0]
        end = pos + 12 + size
        if end + 4 > len(buf):
            return
        data = buf[pos + 12:end]
        if struct.unpack("<I", buf[end:end + 4])[0] != masked_crc32c(data):
            return
        yield data
        pos = end + 4


def read_events(path: str) -> list[Event]:
    """Every whole event of one event file, in file order."""
    return [decode_event(r) for r in read_records(path)]


def _event_files(run_dir: str) -> list[str]:
    """The event files of one run directory, in TensorBoard's reading order (by name)."""
    if not os.path.isdir(run_dir):
        return []
    return sorted(os.path.join(run_dir, n) for n in os.listdir(run_dir)
                  if n.startswith(EVENT_FILE_PREFIX))


def read_run_events(logdir: str) -> dict[str, list[Event]]:
    """``{run: [Event, ...]}``: the events holding scalars of every run under ``logdir``.

    A run is a directory holding event files, named by its path relative to ``logdir``
    (``"."`` for ``logdir`` itself, ``/``-separated below it), as TensorBoard names
    runs. Each run's files are read in name order, each file in record order.
    """
    out: dict[str, list[Event]] = {}
    for directory, _, _ in sorted(os.walk(logdir)):
        files = _event_files(directory)
        if files:
            run = os.path.relpath(directory, logdir).replace(os.sep, "/")
            out[run] = [e for p in files for e in read_events(p) if e.scalars]
    return out


def read_scalars(logdir: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{run: {tag: [(step, value), ...]}}`` of every event file under ``logdir``
    (runs named and read as by :func:`read_run_events`). Values are the stored float32
    numbers as Python floats. Nothing is merged or dropped: a step logged twice
    appears twice."""
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run, events in read_run_events(logdir).items():
        tags = out.setdefault(run, {})
        for event in events:
            for tag, value in event.scalars.items():
                tags.setdefault(tag, []).append((event.step, value))
    return out


# -- writing -----------------------------------------------------------------
_file_numbers = itertools.count()


def event_file_name() -> str:
    """A new event file name, ``events.out.tfevents.<time>.<host>.<pid>.<n>`` (``n``
    counts the files this process names, so two are never alike)."""
    return (f"{EVENT_FILE_PREFIX}{int(time.time())}.{socket.gethostname()}.{os.getpid()}."
            f"{next(_file_numbers)}")


def member_runs(seeds: Sequence[int]) -> list[str]:
    """Run names of trained networks, one per seed: ``seed_<s>``, or, when a seed is
    used by several networks (e.g. experimental arms with paired inits),
    ``member_<i>_seed_<s>`` with ``i`` the network's index, zero-padded so that the
    names sort by index."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) == len(seeds):
        return [f"seed_{s}" for s in seeds]
    width = len(str(len(seeds) - 1))
    return [f"member_{i:0{width}d}_seed_{s}" for i, s in enumerate(seeds)]


class ScalarWriter:
    """The scalar event files of the runs under one log directory, one file per run
    (``<logdir>/<run>/events.out.tfevents.*``).

    Made with a ``history`` (``{run: [(step, {tag: value}), ...]}``), it first makes
    the files say exactly that: each run's file is written anew (into a temporary file,
    then ``os.replace``d) and every other event file under ``logdir`` is removed, so
    the files can follow a record kept elsewhere (e.g. ``metrics.jsonl`` after a resume
    dropped rows). Of the old files it keeps only what the history cannot say: the wall
    time of each step, and the values of tags the history lacks (e.g. timings) at steps
    up to ``until``. :meth:`add` then queues new events and :meth:`flush` appends them,
    one write per run file; a run's file is created by its first flush.
    """

    def __init__(self, logdir: str, history: Optional[History] = None,
                 until: Optional[int] = None):
        self.logdir = logdir
        self._paths: dict[str, str] = {}
        self._queued: dict[str, list[tuple[float, int, dict[str, float]]]] = {}
        if history is not None:
            self._rewrite(history, until)

    def _rewrite(self, history: History, until: Optional[int]) -> None:
        old_runs = read_run_events(self.logdir)
        for run in sorted(set(old_runs) | set(history)):
            run_dir = os.path.join(self.logdir, run)
            stale = [os.path.join(run_dir, n) for n in os.listdir(run_dir)
                     if n.startswith((EVENT_FILE_PREFIX, _TMP_PREFIX))] \
                if os.path.isdir(run_dir) else []
            events = _merged(history.get(run, ()), old_runs.get(run, ()), until)
            if events:
                self._paths[run] = path = os.path.join(run_dir, event_file_name())
                os.makedirs(run_dir, exist_ok=True)
                atomic_write(path, lambda f: f.write(_encode_file_events(events, header=True)),
                             mode="wb", tmp=os.path.join(run_dir, f"{_TMP_PREFIX}{os.getpid()}"))
            for p in stale:
                os.remove(p)

    def add(self, run: str, step: int, scalars: Scalars,
            wall_time: Optional[float] = None) -> None:
        """Queue one event of ``run`` (a sub-directory name) at ``step``: ``scalars``
        (tag -> value, stored as float32), at ``wall_time`` (default: now)."""
        self._queued.setdefault(run, []).append(
            (time.time() if wall_time is None else wall_time, int(step), dict(scalars)))

    def flush(self) -> None:
        """Append the queued events to their run files (creating a run's file, headed by
        its ``file_version`` record, on its first flush)."""
        for run, events in self._queued.items():
            path = self._paths.get(run)
            header = path is None
            if header:
                run_dir = os.path.join(self.logdir, run)
                os.makedirs(run_dir, exist_ok=True)
                self._paths[run] = path = os.path.join(run_dir, event_file_name())
            with open(path, "ab") as f:
                f.write(_encode_file_events(events, header=header))
        self._queued = {}


def _encode_file_events(events: Sequence[tuple[float, int, Scalars]], header: bool) -> bytes:
    """The records of ``[(wall time, step, scalars)]``, after a ``file_version`` record
    (timed no later than the first event, where TensorBoard's relative time starts) if
    ``header``."""
    records = [frame(encode_event(wall, step, scalars)) for wall, step, scalars in events]
    if header:
        start = min([time.time()] + [wall for wall, _, _ in events[:1]])
        records.insert(0, frame(encode_event(start, 0, file_version=FILE_VERSION)))
    return b"".join(records)


def _merged(history: Sequence[tuple[int, Scalars]], old: Sequence[Event],
            until: Optional[int]) -> list[tuple[float, int, dict[str, float]]]:
    """``[(wall time, step, scalars)]`` of one run: ``history``, plus the values of the
    ``old`` events of tags the history lacks at steps up to ``until``, each step at its
    old wall time (now if it is new), in step order."""
    tags = {tag for _, scalars in history for tag in scalars}
    steps: dict[int, dict[str, float]] = {}
    for step, scalars in history:
        steps.setdefault(int(step), {}).update(scalars)
    walls: dict[int, float] = {}
    for event in old:
        walls.setdefault(event.step, event.wall_time)
        if until is not None and event.step <= until:
            extra = {k: v for k, v in event.scalars.items() if k not in tags}
            if extra:
                steps.setdefault(event.step, {}).update(extra)
    now = time.time()
    return [(walls.get(step, now), step, steps[step]) for step in sorted(steps)]
