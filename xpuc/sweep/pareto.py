"""Pareto fronts over two metrics, and the best point per target, from result rows.

A row is on the front when no other row is at least as good on both metrics and better on
one; "good" is each metric's declared direction (``Metric.better``). The best point of a
target is the best row on one metric among those within ``limits`` (each a bound on a
metric in its bad direction: ``latency_s = 0.05`` keeps rows at most 50 ms).
"""

from __future__ import annotations

from typing import Mapping

from .evaluate import Metric
from .spec import direction


def ranked(metrics: Mapping[str, Metric], name: str):
    """A key that sorts rows best first on metric ``name``."""
    sign = direction(metrics, name)
    return lambda row: sign * row[name]


def usable(rows: list[dict], *names: str) -> list[dict]:
    """Rows that ran and have every metric in ``names``."""
    return [r for r in rows if r["error"] is None and all(r[n] is not None for n in names)]


def front(rows: list[dict], x: str, y: str, metrics: Mapping[str, Metric]) -> list[dict]:
    """The Pareto-optimal rows over ``x`` and ``y``, best ``x`` first."""
    kx, ky = ranked(metrics, x), ranked(metrics, y)
    out: list[dict] = []
    for row in sorted(usable(rows, x, y), key=lambda r: (kx(r), ky(r))):
        if not out or ky(row) < ky(out[-1]):
            out.append(row)
    return out


def within(row: dict, limits: Mapping[str, float], metrics: Mapping[str, Metric]) -> bool:
    return all(ranked(metrics, name)(row) <= ranked(metrics, name)({name: bound}) for name, bound in limits.items())


def best_per_target(rows: list[dict], best: str, limits: Mapping[str, float],
                    metrics: Mapping[str, Metric]) -> dict[str, dict | None]:
    """Per target (in first-seen order): its best row on ``best`` within ``limits``, or None."""
    key = ranked(metrics, best)
    out: dict[str, dict | None] = {r["target"]: None for r in rows}
    for row in usable(rows, best, *limits):
        if within(row, limits, metrics) and (out[row["target"]] is None or key(row) < key(out[row["target"]])):
            out[row["target"]] = row
    return out
