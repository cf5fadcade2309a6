"""Collects every job's results.json under a sweep root into one table.

    python -m launch.aggregate --root=workdirs/sweeps/gbi_toy_seeds

Writes ``<root>/results.csv``: one row per run with ``job`` (the workdir name),
the job's overrides, then its results with nested dicts flattened to dotted
columns (``metrics.acc``) and lists JSON-encoded. The top-level ``per_seed``
list is left out; a run with a one-entry ``per_seed`` is reduced to that seed
with `launch.jobs.seed_results`, so it has the same columns as vmap-split runs.

Writes ``<root>/summary.md``: a markdown table with one row per setting of the
non-seed overrides, giving mean ± sample standard deviation (n-1) over seeds of
every numeric results column; ``n`` is the number of runs in the group.

A vmap-merged job whose results were split per seed (job.json
``"split": true``) is represented by its per-seed rows only. Jobs with a
job.json but no results.json are listed as missing.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import statistics
from typing import Any, Callable, Mapping, Sequence

from absl import app, flags

from launch.jobs import JOB_FILE, PER_SEED_KEY, RESULTS_FILE, SEED_KEY, SEEDS_KEY, seed_results

CSV_FILE = "results.csv"
SUMMARY_FILE = "summary.md"


@dataclasses.dataclass
class Record:
    """One run: its workdir name, its overrides and its flattened results."""

    job: str
    overrides: dict[str, Any]
    results: dict[str, Any]


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> one dict with dotted keys; leaves (scalars, lists) are kept."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def collect(root: str) -> tuple[list[Record], list[str]]:
    """Returns (records with results, names of job dirs without readable results)."""
    records, missing = [], []
    if not os.path.isdir(root):
        raise FileNotFoundError(f"sweep root {root!r} does not exist; run the sweep first")
    for name in sorted(os.listdir(root)):
        workdir = os.path.join(root, name)
        if not os.path.isdir(workdir):
            continue
        meta = {}
        if os.path.isfile(os.path.join(workdir, JOB_FILE)):
            try:
                meta = _read_json(os.path.join(workdir, JOB_FILE))
            except (OSError, ValueError):
                meta = {}
        if meta.get("split"):
            continue  # its seeds have their own rows
        results_path = os.path.join(workdir, RESULTS_FILE)
        if not os.path.isfile(results_path):
            if meta:
                missing.append(name)
            continue
        try:
            results = _read_json(results_path)
        except (OSError, ValueError):
            missing.append(name)
            continue
        if not isinstance(results, Mapping):
            results = {"result": results}
        overrides = {k: tuple(v) if isinstance(v, list) else v
                     for k, v in meta.get("overrides", {}).items()}
        per_seed = results.get(PER_SEED_KEY)
        if isinstance(per_seed, list) and len(per_seed) == 1 and isinstance(per_seed[0], Mapping):
            results = seed_results(results, 0, 1)  # one network: same columns as split vmap rows
        results = {k: v for k, v in results.items() if k != PER_SEED_KEY}
        records.append(Record(name, overrides, flatten(results)))
    return records, missing


def _ordered_union(dicts: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: dict[str, None] = {}
    for d in dicts:
        keys.update(dict.fromkeys(d))
    return list(keys)


def table(records: Sequence[Record]) -> tuple[list[str], list[dict[str, Any]]]:
    """Joins overrides and results into rows; returns (columns, rows).

    A results key equal to an override key is dropped where it repeats the
    override's value and otherwise renamed ``results.<key>``.
    """
    override_cols = _ordered_union([r.overrides for r in records])
    for key in (SEED_KEY, SEEDS_KEY):  # seeds last among the overrides
        if key in override_cols:
            override_cols.remove(key)
            override_cols.append(key)
    taken = set(override_cols) | {"job"}
    results = [{k: v for k, v in r.results.items()
                if not (k in r.overrides and _same(v, r.overrides[k]))} for r in records]
    rename = {k: (f"results.{k}" if k in taken else k) for k in _ordered_union(results)}
    columns = ["job"] + override_cols + list(rename.values())
    rows = []
    for r, res in zip(records, results):
        row = {"job": r.job, **r.overrides}
        row.update({rename[k]: v for k, v in res.items()})
        rows.append(row)
    return columns, rows


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_csv(path: str, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def mean_std(values: Sequence[float]) -> str:
    """"m ± s" (sample std) for two or more finite values, else the mean alone."""
    values = [float(v) for v in values]
    if not values:
        return ""
    mean = math.fsum(values) / len(values)
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return _fmt(mean)
    return f"{_fmt(mean)} ± {_fmt(statistics.stdev(values))}"


def summary_markdown(records: Sequence[Record], missing: Sequence[str] = (), title: str = "sweep",
                     seed_keys: Sequence[str] = (SEED_KEY, SEEDS_KEY)) -> str:
    """Markdown summary: one row per setting of the non-seed overrides, mean ± std over seeds."""
    columns, rows = table(records)
    override_cols = _ordered_union([r.overrides for r in records])
    group_cols = [c for c in override_cols if c not in seed_keys]
    result_cols = columns[1 + len(override_cols):]
    numeric = [c for c in result_cols
               if any(c in row for row in rows)
               and all(_is_number(row[c]) for row in rows if row.get(c) is not None)]

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(repr(row.get(c)) for c in group_cols), []).append(row)

    lines = [f"# Sweep summary: {title}", ""]
    lines.append(f"{len(rows)} runs with results in {len(groups)} groups; "
                 f"numeric columns are mean ± sample std over the runs of a group "
                 f"(seeds), n = number of runs.")
    if missing:
        lines.append("")
        lines.append(f"Missing or failed ({len(missing)}): " + ", ".join(f"`{m}`" for m in missing))
    lines.append("")
    if not rows:
        lines.append("No results yet.")
        return "\n".join(lines) + "\n"
    header = group_cols + ["seeds", "n"] + numeric
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join("---" for _ in header) + "|")
    for members in groups.values():
        seeds = []
        for row in members:  # a row's seed, else the seeds of a merged row
            value = next((row[k] for k in seed_keys if row.get(k) is not None), None)
            if value is not None:
                seeds.extend(value if isinstance(value, tuple) else [value])
        cells = [_cell(members[0].get(c)) for c in group_cols]
        cells += [", ".join(str(s) for s in seeds), str(len(members))]
        cells += [mean_std([row[c] for row in members if _is_number(row.get(c))]) for c in numeric]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def aggregate(root: str, log: Callable[[str], None] | None = None) -> tuple[str, str]:
    """Writes <root>/results.csv and <root>/summary.md; returns their paths."""
    log = log or (lambda msg: print(msg, flush=True))
    records, missing = collect(root)
    columns, rows = table(records)
    csv_path = os.path.join(root, CSV_FILE)
    md_path = os.path.join(root, SUMMARY_FILE)
    write_csv(csv_path, columns, rows)
    with open(md_path, "w") as f:
        f.write(summary_markdown(records, missing, title=os.path.basename(os.path.normpath(root))))
    log(f"aggregated {len(rows)} runs ({len(missing)} missing) -> {csv_path}, {md_path}")
    return csv_path, md_path


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    aggregate(flags.FLAGS.root)


if __name__ == "__main__":
    # Flags are defined here, not at import, so `launch.run` can import this module.
    flags.DEFINE_string("root", None, "Sweep root directory (one workdir per job).")
    flags.mark_flag_as_required("root")
    app.run(main)
