"""The comparison as one self-contained HTML page: the table, the porting cost of each target,
and figures drawn by matplotlib as inline SVG (no scripts, fonts or images fetched):

- a roofline per target: each kernel a point (FLOPs per byte of the outer memory against the
  FLOP/s it reached), under the chip's peak in each format its kernels ran in and the
  memory's bandwidth;
- the time of each target by op family (stacked bars, shares of the summed records' time);
- a timeline strip per target: its engines' records over one pass, coloured by op family;
- a Pareto chart of tokens/s per user against dollars per million tokens, when serving points
  are given (``xpuc compare --llm``: ``portability_serving.points``).

matplotlib is an optional dependency (``pip install 'xpuc[report]'``): it is the one
well-kept library that draws log-scale axes, legends and text as standalone SVG.
"""

from __future__ import annotations

import html
import io
import re
from collections import defaultdict

from ir.errors import XpucError

from . import readout
from .capabilities import chip_peak
from .portability import Comparison, Row
from .portability_report import accuracy_cell, accuracy_legend, assumptions, cost_per_unit, formats_cell
from .portability_serving import ServingPoint, pareto_front
from .report import si
from .schedule import Schedule
from .target import Target

HOST = "host"
FAMILY_COLORS = {
    "matmul": "#1f77b4", "attention": "#9467bd", "conv": "#17becf", "norm": "#2ca02c", "elementwise": "#bcbd22",
    "reduce": "#8c564b", "pool": "#e377c2", "movement": "#ff7f0e", "shape": "#7f7f7f",
    readout.INTERCONNECT: "#000000", HOST: "#d62728",
}
"""One colour per op family (plus chip-to-chip traffic and host fallbacks), the same in every figure."""
COLUMNS = 4
TIMELINE_BINS = 1500
"""Records of one lane closer than 1/TIMELINE_BINS of the pass are drawn as one bar: a strip is
about that many pixels wide, and a 70B model on SRAM chips has ~10^4 records."""


RASTER_DPI = 150
"""Resolution of the timeline bars, drawn as an inline image: thousands of sub-pixel bars as
vector paths would make the page megabytes."""


class ReportError(XpucError):
    """The HTML report cannot be drawn (matplotlib is missing)."""


def _figure(width: float, height: float, left: float = 0.8, right: float = 1.5, top: float = 0.35,
            bottom: float = 0.5, **spacing):
    """A figure of ``width`` x ``height`` inches with fixed margins in inches (the legend sits in
    the right one); a fixed layout, because matplotlib's automatic ones measure every label."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError("the HTML report needs matplotlib: pip install 'xpuc[report]'") from None
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        **spacing)
    return fig


def _svg(fig, scope: str) -> str:
    """The figure as inline SVG, its element ids prefixed with ``scope`` so that several figures'
    definitions (markers, clip paths) cannot collide in one page."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "xpuc", "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, dpi=RASTER_DPI)
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r'(id="|url\(#|href="#)', rf"\g<1>{scope}-", text)


def _family(record) -> str:
    return HOST if record.engine == HOST else readout.family(record)


def _log_axes(ax) -> None:
    """Log scales with a few labelled decades and no minor ticks (each tick label is a text path
    that layout measures: the defaults cost seconds per page)."""
    from matplotlib.ticker import LogLocator, NullLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(numticks=5))
        axis.set_minor_locator(NullLocator())


def _legend(fig, families: set[str]) -> None:
    from matplotlib.patches import Patch

    fig.legend(handles=[Patch(color=FAMILY_COLORS.get(f, "#cccccc"), label=f) for f in FAMILY_COLORS if f in families],
              loc="upper right", fontsize=8, frameon=False)


# ------------------------------------------------------------------------------ rooflines
def kernel_points(s: Schedule, target: Target) -> list[tuple[float, float, str]]:
    """(FLOPs per outer-memory byte, FLOP/s reached, family of its largest op) per kernel and
    chip, from its records on the chip's engines; kernels without FLOPs or without outer
    traffic have no place on a roofline. Repeated points (identical layers) are drawn once."""
    outer = target.outer.name
    kernels = defaultdict(lambda: [0, 0.0, 0, {}])
    for o in s.ops:
        if o.kernel is None or o.engine not in target.engines:
            continue
        k = kernels[(o.kernel, o.chip)]
        k[0] += o.flops
        k[1] += o.duration_s
        k[2] += o.bytes.get(outer, 0)
        k[3][_family(o)] = k[3].get(_family(o), 0) + o.flops
    points = {(float(f"{flops / moved:.3g}"), float(f"{flops / seconds:.3g}"), max(fam, key=fam.get))
              for flops, seconds, moved, fam in kernels.values() if flops and seconds and moved}
    return sorted(points)


def roofline_svg(c: Comparison) -> str:
    shown = [(t, c.schedules[t.name]) for t in c.targets if t.name in c.schedules]
    rows = max(1, -(-len(shown) // COLUMNS))
    fig = _figure(3.2 * COLUMNS + 1.6, 2.7 * rows, wspace=0.3, hspace=0.45)
    families: set[str] = set()
    for i, (target, s) in enumerate(shown):
        ax = fig.add_subplot(rows, COLUMNS, i + 1)
        points = kernel_points(s, target)
        families |= {f for _, _, f in points}
        for fam in sorted({f for _, _, f in points}):
            xs, ys = zip(*[(x, y) for x, y, f in points if f == fam])
            ax.scatter(xs, ys, s=10, color=FAMILY_COLORS.get(fam, "#cccccc"), alpha=0.8, linewidths=0)
        _roofs(ax, target, s, points)
        _log_axes(ax)
        ax.set_title(target.name, fontsize=9)
        ax.tick_params(labelsize=7)
        if i % COLUMNS == 0:
            ax.set_ylabel("FLOP/s", fontsize=8)
        if i >= len(shown) - COLUMNS:
            ax.set_xlabel("FLOP per byte of outer memory", fontsize=8)
    _legend(fig, families)
    return _svg(fig, "roofline")


def _roofs(ax, target: Target, s: Schedule, points) -> None:
    """min(peak, bandwidth x intensity) for the chip's peak in each format its kernels ran in,
    and its outer memory's bandwidth."""
    import numpy as np

    xs = [x for x, _, _ in points] or [1.0]
    intensity = np.geomspace(min(xs) / 4, max(xs) * 4, 64)
    bandwidth = target.outer.effective_bandwidth
    for fmt in sorted({o.format for o in s.ops if o.engine in target.engines and o.flops}):
        peak = chip_peak(target, fmt)
        ax.plot(intensity, np.minimum(peak, bandwidth * intensity), color="#555555", linewidth=0.8)
        ax.annotate(f"{fmt} {si(peak, 'FLOP/s')}", (intensity[-1], peak), fontsize=6, ha="right", va="bottom",
                    color="#333333")


# --------------------------------------------------------------------- time by op family
def family_seconds(s: Schedule) -> dict[str, float]:
    """Summed record time per op family (host fallbacks as ``host``)."""
    by = defaultdict(float)
    for o in s.ops:
        by[_family(o)] += o.duration_s
    return dict(by)


def families_svg(c: Comparison) -> str:
    names = [t.name for t in c.targets if t.name in c.schedules]
    fig = _figure(10.5, 0.32 * len(names) + 0.9, left=1.3)
    ax = fig.add_subplot()
    seen: set[str] = set()
    for y, name in enumerate(names):
        seconds = family_seconds(c.schedules[name])
        total, left = sum(seconds.values()), 0.0
        for fam in FAMILY_COLORS:
            share = seconds.get(fam, 0.0) / total if total else 0.0
            if share:
                seen.add(fam)
                ax.barh(y, share, left=left, color=FAMILY_COLORS[fam], height=0.7)
                left += share
        ax.text(1.01, y, si(total, "s"), va="center", fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the records' summed time (total at right)", fontsize=8)
    ax.tick_params(labelsize=7)
    _legend(fig, seen)
    return _svg(fig, "families")


# ------------------------------------------------------------------------------ timelines
def lanes(s: Schedule) -> dict[str, list[tuple[float, float, str]]]:
    """Per engine (all chips together), the (start, end, family) bars of one pass: records of one
    family closer than 1/TIMELINE_BINS of the pass merged into one."""
    gap = s.latency_s / TIMELINE_BINS
    by_lane = defaultdict(list)
    for o in sorted(s.ops, key=lambda o: o.start_s):
        bars, fam = by_lane[o.engine], _family(o)
        if bars and bars[-1][2] == fam and o.start_s - bars[-1][1] <= gap:
            start, end, _ = bars[-1]
            bars[-1] = (start, max(end, o.end_s), fam)
        else:
            bars.append((o.start_s, o.end_s, fam))
    return dict(by_lane)


def timeline_svg(c: Comparison) -> str:
    shown = [(name, c.schedules[name]) for name in (t.name for t in c.targets) if name in c.schedules]
    heights = [max(1, len({o.engine for o in s.ops})) for _, s in shown]
    lane_in, title_in = 0.22, 0.4
    fig = _figure(10.5, lane_in * sum(heights) + title_in * len(shown) + 0.5, left=1.3,
                  hspace=title_in / (lane_in * sum(heights) / len(shown)))
    axes = fig.subplots(len(shown), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[:, 0]
    seen: set[str] = set()
    for ax, (name, s) in zip(axes, shown):
        for y, (lane, bars) in enumerate(sorted(lanes(s).items())):
            for fam in {f for _, _, f in bars}:
                spans = [(start / s.latency_s, (end - start) / s.latency_s) for start, end, f in bars if f == fam]
                ax.broken_barh(spans, (y - 0.4, 0.8), color=FAMILY_COLORS.get(fam, "#cccccc"), rasterized=True)
                seen.add(fam)
        engines = sorted(lanes(s))
        ax.set_yticks(range(len(engines)), engines, fontsize=6)
        ax.set_xlim(0, 1)
        ax.set_ylim(len(engines) - 0.5, -0.5)
        ax.set_title(f"{name}: one pass, {si(s.latency_s, 's')}, {s.chips} chip(s)", fontsize=8, loc="left")
        ax.tick_params(labelsize=6)
    axes[-1].set_xlabel("fraction of the pass", fontsize=8)
    _legend(fig, seen)
    return _svg(fig, "timeline")


# -------------------------------------------------------------------------------- Pareto
def pareto_svg(points: list[ServingPoint]) -> str:
    """Tokens/s per user (interactivity) against dollars per million tokens (cost), the frontier
    of points no other beats on both drawn as a line."""
    fig = _figure(7.2, 4.2, right=1.0)
    ax = fig.add_subplot()
    for p in points:
        ax.scatter(p.usd_per_million_tokens, p.tokens_per_s_per_user, s=18, color="#1f77b4")
        ax.annotate(p.label, (p.usd_per_million_tokens, p.tokens_per_s_per_user), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    front = pareto_front(points)
    ax.plot([p.usd_per_million_tokens for p in front], [p.tokens_per_s_per_user for p in front], color="#d62728")
    _log_axes(ax)
    ax.set_xlabel("$ per million output tokens", fontsize=8)
    ax.set_ylabel("tokens/s per user", fontsize=8)
    return _svg(fig, "pareto")


# ---------------------------------------------------------------------------------- page
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em; color: #222; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
td:nth-child(2) { text-align: left; }
td.text { white-space: normal; }
figure { margin: 1.5em 0; } figure svg { max-width: 100%; height: auto; }
figcaption, .note { color: #555; font-size: 12px; }
"""


def to_html(c: Comparison, serving: list[ServingPoint] | None = None) -> str:
    """The whole page; ``serving``: LLM operating points for the Pareto chart (left out without them)."""
    e = html.escape
    figures = [("roofline", "Roofline per target: each kernel is a point (per chip); lines: the chip's peak in each "
                "format its kernels ran in, and its outer memory's bandwidth.", roofline_svg(c)),
               ("families", "Time by op family: shares of each target's summed record time.", families_svg(c)),
               ("timeline", "Timeline of one pass per target: one lane per engine (all chips together), "
                "coloured by op family.", timeline_svg(c))]
    if serving:
        figures.append(("pareto", "Serving: tokens/s per user against $ per million output tokens, labelled by "
                        "target and batch (b=); the line is the Pareto frontier.", pareto_svg(serving)))
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>xpuc compare: {e(c.model)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{e(c.model)} on {len(c.rows)} targets</h1>",
             f"<p>{c.work.count} {c.work.unit}s per pass, precision {e(c.precision)}. Performance portability "
             f"(Pennycook et al., harmonic mean of architectural efficiency): <b>{c.portability:.4g}</b>. "
             f"{e(cost_per_unit(c)[0].upper() + cost_per_unit(c)[1:])}.</p>",
             _table(c)]
    parts += [f'<figure id="{name}">{svg}<figcaption>{e(caption)}</figcaption></figure>'
              for name, caption, svg in figures]
    if not serving:
        parts.append('<p class="note" id="pareto-note">A Pareto chart of tokens/s per user against $ per million '
                     'tokens appears here with the LLM options (xpuc compare --llm).</p>')
    parts.append(_porting(c))
    parts.append("<h2>Assumptions</h2><ul>" + "".join(f"<li>{e(a)}</li>" for a in assumptions(c)) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _table(c: Comparison) -> str:
    unit = c.work.unit
    heads = ["target", "formats (share of FLOPs)", "chips", "latency", f"{unit}s/s", f"{unit}s/s per $/h",
             f"{unit}s/s per W", f"J/{unit}", f"$/M {unit}s", "porting share", "accuracy (rel L2, top-1)",
             "efficiency"]
    rows = ['<div class="scroll"><table id="comparison"><tr>'
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>"]
    for r in c.rows:
        cells = _cells(r, c)
        wide = ' class="text"' if r.cannot_run else ""
        rows.append(f"<tr><td>{html.escape(r.target)}</td><td{wide}>" + "</td><td>".join(
            html.escape(str(v)) for v in cells[1:]) + "</td></tr>")
    rows.append("</table></div>")
    return "\n".join(rows) + f'<p class="note">{html.escape(accuracy_legend(c))}; every basis in the ' \
        'assumptions below.</p>'


def _cells(r: Row, c: Comparison) -> list:
    if r.cannot_run:
        return [r.target, f"cannot run: {r.cannot_run}"] + [""] * 10
    e = r.economics
    latency = si(r.latency_s, "s") + (" (misses target)" if r.meets_latency is False else "")
    return [r.target, formats_cell(r.formats), r.chips, latency, si(e.per_s), si(e.per_s_per_usd_hour),
            si(e.per_s_per_watt), f"{e.joules:.3g}", f"{e.usd_per_million:.3g}", f"{r.ledger.porting_share:.1%}",
            accuracy_cell(r), f"{r.efficiency:.2%}"]


def _porting(c: Comparison) -> str:
    heads = ["kind", "op", "engine", "formats", "ops", "time", "energy", "bytes", "why"]
    parts = ["<h2>Porting cost (fallback ledger)</h2>"]
    for r in c.rows:
        if r.ledger is None:
            continue
        parts.append(f"<h3>{html.escape(r.target)}: {html.escape(r.ledger.brief())}</h3>")
        if not r.ledger.entries:
            continue
        parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>")
        for x in r.ledger.entries:
            cells = [x.kind, x.op, x.engine, x.formats, len(x.ops), si(x.time_s, "s"), si(x.energy_j, "J"),
                     si(sum(x.bytes.values()), "B")]
            parts.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells)
                         + f'<td class="text">{html.escape(x.reason)}</td></tr>')
        parts.append("</table>")
    return "\n".join(parts)
