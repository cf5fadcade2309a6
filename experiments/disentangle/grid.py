"""The networks of a disentangling config and the compiled programs that train them.

Pure Python (no JAX): sweep files and the launcher use it to plan jobs.

A config's networks are ``grid`` x ``seeds`` (:func:`members_of`), or, for a packed
run, the union of its ``parts`` (runs of ``config.PANEL_RUNS``, each with its own grid
and seeds). A *program* trains every network that shares a static setting (model, D,
T, free-RT, boundary) *and* the shapes of its run's program: the readout width (the
run's max N; smaller N are padded and masked) and the encoder kinds. Networks of
different runs that agree on all of these train together with their own initialisation,
data and evaluation keys; a network two runs both train is trained once
(:func:`programs_of`).
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Optional

STATIC = ("core", "dim", "stim_steps", "free_rt", "boundary")
DYNAMIC = ("n_tasks", "sigma", "rho", "encoder")


@dataclasses.dataclass(frozen=True)
class Member:
    """One network: its static setting, condition and seed."""

    core: str
    dim: int
    stim_steps: int
    free_rt: bool
    boundary: str
    n_tasks: int
    sigma: float
    rho: float
    encoder: str
    seed: int

    @property
    def static(self):
        return tuple(getattr(self, k) for k in STATIC)

    def row(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a run's results: a network as one run (``part``) trains it.

    ``index`` / ``of``: the network's place in its run's program, which sets its
    evaluation key (``jax.random.split(key, of)[index]``), so a packed run evaluates it
    exactly as its own run does."""

    member: Member
    readout: int
    encoders: tuple
    part: Optional[str]
    index: int
    of: int


@dataclasses.dataclass(frozen=True)
class Program:
    """The networks trained as one compiled program and the rows they give."""

    name: str
    readout: int
    encoders: tuple
    members: tuple  # unique networks, in first-appearance order
    entries: tuple  # one per row (a network may have rows in several parts)

    @property
    def static(self):
        return self.members[0].static


def members_of(config) -> list[Member]:
    """``config.grid`` x ``config.seeds`` (the member seed adds ``config.seed``)."""
    g = config.grid
    out = []
    for core, dim, t, free, bnd, n, s, r, enc in itertools.product(
            g.cores, g.dims, g.stim_steps, g.free_rt, g.boundaries, g.n_tasks, g.sigmas,
            g.rhos, g.encoders):
        for seed in config.seeds:
            out.append(Member(core, int(dim), int(t), bool(free), bnd, int(n), float(s),
                              float(r), enc, int(config.seed + seed)))
    return out


def group_name(static) -> str:
    core, dim, t, free, bnd = static
    return f"{core}_D{dim}_T{t}_{'free' if free else 'fixed'}_{bnd}"


def groups_of(members: list[Member]) -> dict[str, list[Member]]:
    """The members of one grid by static setting (one program each)."""
    groups: dict[str, list[Member]] = {}
    for m in members:
        groups.setdefault(group_name(m.static), []).append(m)
    return groups


def _entries(config, part: Optional[str]) -> list[Entry]:
    out = []
    for group in groups_of(members_of(config)).values():
        readout = max(m.n_tasks for m in group)
        encoders = tuple(sorted({m.encoder for m in group}))
        out += [Entry(m, readout, encoders, part, i, len(group)) for i, m in enumerate(group)]
    return out


def programs_of(config) -> dict[str, Program]:
    """Every program of ``config`` by name, in first-appearance order.

    A plain run's programs are its static groups, named ``group_name(static)``. A packed
    run's are named ``<group name>_R<readout>_<encoders>`` and restricted to
    ``config.pack`` when it is set."""
    from experiments.disentangle.config import part_config

    packed = bool(config.parts)
    entries = []
    if packed:
        for part in config.parts:
            entries += _entries(part_config(config, part), part)
    else:
        entries = _entries(config, None)
    by_key: dict = {}
    for e in entries:
        by_key.setdefault((e.member.static, e.readout, e.encoders), []).append(e)
    programs = {}
    for (static, readout, encoders), es in by_key.items():
        name = group_name(static)
        if packed:
            name += f"_R{readout}_{'+'.join(encoders)}"
        members = tuple(dict.fromkeys(e.member for e in es))
        programs[name] = Program(name, readout, encoders, members, tuple(es))
    if packed and config.pack:
        programs = {config.pack: programs[config.pack]}
    return programs


def program_names(config) -> list[str]:
    """The names of every program of the packed run ``config`` (``pack`` ignored)."""
    c = config.copy_and_resolve_references()
    c.pack = ""
    return list(programs_of(c))
