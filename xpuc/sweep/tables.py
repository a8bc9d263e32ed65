"""A finished sweep as text: counts, failures by cause, the Pareto front, the best point per target."""

from __future__ import annotations

from collections import Counter

from . import pareto
from .runner import SweepResult
from .spec import COLUMNS

FAILURE_LINES = 8


def varying(rows: list[dict]) -> list[str]:
    """The axis columns whose value differs between rows (the others say nothing about a row)."""
    return [c for c in COLUMNS if c != "target" and len({r[c] for r in rows}) > 1]


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[dict], columns: list[str]) -> list[str]:
    """Rows as aligned text columns under a header."""
    cells = [[cell(r[c]) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(line[i]) for line in cells]) for i, c in enumerate(columns)]
    return ["  ".join(f"{v:<{w}}" for v, w in zip(line, widths)).rstrip() for line in [columns, *cells]]


def failures(rows: list[dict]) -> list[tuple[str, str, int]]:
    """(target, error, count) by how often they occur."""
    counts = Counter((r["target"], r["error"]) for r in rows if r["error"] is not None)
    return [(t, e, n) for (t, e), n in counts.most_common()]


def limits_text(limits: dict[str, float], metrics) -> str:
    """``latency_s <= 0.5, tokens_per_s >= 20``: each bound on the bad side of its metric."""
    return ", ".join(f"{k} {'<=' if metrics[k].better == 'lower' else '>='} {v:g}" for k, v in limits.items())


def format_report(result: SweepResult) -> str:
    rows, spec, metrics = result.rows, result.spec.report, result.evaluator.metrics
    x, y = spec.pareto
    lines = [f"{len(rows)} points in {result.output}: {result.ran} evaluated now, {result.skipped} already there; "
             f"{len(result.failed)} failed"]
    for target, error, n in failures(rows)[:FAILURE_LINES]:
        lines.append(f"  {n} x {target}: {error}")
    axes = varying(rows)
    front = pareto.front(rows, x, y, metrics)
    lines += ["", f"Pareto front of {x} ({metrics[x].better} is better) and {y} ({metrics[y].better} is better): "
              f"{len(front)} of {len(pareto.usable(rows, x, y))} points"]
    lines += table(front, ["target", *axes, x, y])
    limits = f" within {limits_text(spec.limits, metrics)}" if spec.limits else ""
    best = pareto.best_per_target(rows, spec.best, spec.limits, metrics)
    lines += ["", f"best point per target by {spec.best}{limits}:"]
    found = [r for r in best.values() if r is not None]
    lines += table(found, ["target", *axes, *dict.fromkeys([spec.best, x, y])])
    lines += [f"{t}: no point" + (f"{limits}" if limits else " ran") for t, r in best.items() if r is None]
    return "\n".join(lines)
