"""A scatter chart as inline SVG: one colour per series, a highlighted front, log axes where values span decades.

Small on purpose: the sweep report needs one kind of chart and must stay one self-contained
HTML file with no plotting library.
"""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
"""Matplotlib's ten-colour cycle (tab10), easy to tell apart."""
LOG_SPAN = 100.0
"""Values spanning more than this factor are drawn on a log axis."""


class Axis:
    """Maps data values to pixels along [lo, hi]; log10 when positive values span decades."""

    def __init__(self, values: list[float], lo: float, hi: float):
        self.log = min(values) > 0 and max(values) / min(values) > LOG_SPAN
        t = [self._t(v) for v in values]
        self.a, self.b = min(t), max(t)
        if self.a == self.b:
            self.a, self.b = self.a - 1, self.b + 1
        pad = (self.b - self.a) * 0.05
        self.a, self.b, self.lo, self.hi = self.a - pad, self.b + pad, lo, hi

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def __call__(self, v: float) -> float:
        return self.lo + (self._t(v) - self.a) / (self.b - self.a) * (self.hi - self.lo)

    def ticks(self) -> list[float]:
        if self.log:
            return [10.0 ** e for e in range(math.ceil(self.a), math.floor(self.b) + 1)]
        step = 10 ** math.floor(math.log10((self.b - self.a) / 5))
        step *= next(m for m in (1, 2, 5, 10) if (self.b - self.a) / (step * m) <= 6)
        return [i * step for i in range(math.ceil(self.a / step), math.floor(self.b / step) + 1)]


def scatter(series: dict[str, list[tuple[float, float, str]]], front: list[tuple[float, float, str]],
            x_label: str, y_label: str, width: int = 760, height: int = 460) -> str:
    """``series``: name -> [(x, y, tooltip)]; ``front`` is drawn as a line over the points."""
    points = [p for ps in series.values() for p in ps]
    if not points:
        return "<p>no points to draw</p>"
    left, right, top, bottom = 80, width - 170, 20, height - 50
    xs = Axis([p[0] for p in points], left, right)
    ys = Axis([p[1] for p in points], bottom, top)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="11"><rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" '
           'stroke="#999"/>']
    for v in xs.ticks():
        out.append(f'<line x1="{xs(v):.1f}" x2="{xs(v):.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#999"/>'
                   f'<text x="{xs(v):.1f}" y="{bottom + 16}" text-anchor="middle">{v:.3g}</text>')
    for v in ys.ticks():
        out.append(f'<line x1="{left - 4}" x2="{left}" y1="{ys(v):.1f}" y2="{ys(v):.1f}" stroke="#999"/>'
                   f'<text x="{left - 6}" y="{ys(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    out.append(f'<text x="{(left + right) / 2}" y="{height - 12}" text-anchor="middle">'
               f'{escape(x_label)}{" (log)" if xs.log else ""}</text>')
    out.append(f'<text transform="translate(16 {(top + bottom) / 2}) rotate(-90)" text-anchor="middle">'
               f'{escape(y_label)}{" (log)" if ys.log else ""}</text>')
    for i, (name, ps) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        out += [f'<circle cx="{xs(x):.1f}" cy="{ys(y):.1f}" r="3" fill="{colour}" fill-opacity="0.55">'
                f'<title>{escape(tip)}</title></circle>' for x, y, tip in ps]
        ly = top + 14 + 16 * i
        out.append(f'<circle cx="{right + 16}" cy="{ly - 4}" r="4" fill="{colour}"/>'
                   f'<text x="{right + 26}" y="{ly}">{escape(name)}</text>')
    if front:
        path = " ".join(f"{xs(x):.1f},{ys(y):.1f}" for x, y, _ in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#000" stroke-width="1.5"/>')
        out += [f'<circle cx="{xs(x):.1f}" cy="{ys(y):.1f}" r="5" fill="none" stroke="#000" stroke-width="1.5">'
                f'<title>{escape(tip)}</title></circle>' for x, y, tip in front]
        ly = top + 14 + 16 * len(series)
        out.append(f'<circle cx="{right + 16}" cy="{ly - 4}" r="5" fill="none" stroke="#000"/>'
                   f'<text x="{right + 26}" y="{ly}">Pareto front</text>')
    out.append("</svg>")
    return "\n".join(out)
