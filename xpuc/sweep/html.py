"""The sweep report: one self-contained HTML page (inline CSS and SVG, no scripts or fetches).

What it shows: the counts and failures by cause, every point that ran on the two Pareto
metrics (a colour per target, the front drawn over them), the front as a table, the best
point per target next to it, and what each metric means.
"""

from __future__ import annotations

from html import escape

from . import pareto, svg
from .runner import SweepResult
from .tables import cell, failures, limits_text, varying

STYLE = """body{font-family:sans-serif;margin:24px;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left}th{background:#f3f3f3}.row{display:flex;gap:24px;flex-wrap:wrap;align-items:flex-start}
.note{color:#666;font-size:13px}"""


def html_table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{escape(cell(r[c]))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def tooltip(row: dict, columns: list[str]) -> str:
    return ", ".join(f"{c} {cell(row[c])}" for c in columns)


def page(result: SweepResult) -> str:
    rows, report, metrics = result.rows, result.spec.report, result.evaluator.metrics
    x, y = report.pareto
    axes = varying(rows)
    label = ["target", *axes, x, y]
    drawn = pareto.usable(rows, x, y)
    series: dict[str, list] = {}
    for r in drawn:
        series.setdefault(r["target"], []).append((r[x], r[y], tooltip(r, label)))
    front = pareto.front(rows, x, y, metrics)
    best = pareto.best_per_target(rows, report.best, report.limits, metrics)
    limits = limits_text(report.limits, metrics)
    best_rows = [r for r in best.values() if r is not None]
    missing = [t for t, r in best.items() if r is None]
    fails = failures(rows)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>xpuc sweep</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Sweep: {escape(result.spec.origin)}</h1>",
        f"<p>{len(rows)} points ({len(rows) - len(result.failed)} ran, {len(result.failed)} failed); "
        f"results in <code>{escape(str(result.output))}</code>.</p>",
        f"<h2>{escape(x)} against {escape(y)}</h2>",
        f"<p class='note'>{len(drawn)} points, a colour per target; the line joins the {len(front)} Pareto-optimal "
        f"points ({escape(x)}: {metrics[x].better} is better, {escape(y)}: {metrics[y].better} is better). "
        "Hover a point for its axes.</p>",
        "<div class='row'>", svg.scatter(series, [(r[x], r[y], tooltip(r, label)) for r in front], x, y),
        f"<div><h3>Best point per target by {escape(report.best)}" + (f" within {escape(limits)}" if limits else "")
        + "</h3>", html_table(best_rows, ["target", *axes, *dict.fromkeys([report.best, x, y])]),
        "".join(f"<p class='note'>{escape(t)}: no point{' within the limits' if limits else ' ran'}</p>"
                for t in missing), "</div></div>",
        "<h2>Pareto front</h2>", html_table(front, label),
    ]
    if fails:
        parts += ["<h2>Failures</h2>", html_table([{"target": t, "points": n, "error": e} for t, e, n in fails],
                                                  ["target", "points", "error"])]
    parts += ["<h2>Metrics</h2>", html_table([{"metric": k, "better": m.better, "meaning": m.doc}
                                              for k, m in metrics.items()], ["metric", "better", "meaning"]),
              "</body></html>"]
    return "\n".join(parts)
