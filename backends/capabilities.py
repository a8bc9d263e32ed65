"""Which number formats each engine of a target runs, and at what peak.

The table behind ``xpuc targets --formats`` and the peaks the portability report measures
efficiency against. Every figure is read from the spec (``Engine.peak``, ``Engine.auto_cast``),
which stays the one home of the facts; this module only lays them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from ir.dtypes import DType

from .target import Target

_ORDER = {d.short: i for i, d in enumerate(DType)}


@dataclass(frozen=True)
class EngineFormats:
    """One engine of one target: its peak per format (operations per second, all its units on one
    chip) and the formats its vendor compiler converts before running there."""

    target: str
    engine: str
    role: str
    peaks: dict[str, float]
    auto_cast: dict[str, str]


def engine_formats(target: Target) -> list[EngineFormats]:
    return [EngineFormats(target.name, e.name, e.role, {f: e.peak(f) for f in e.formats}, dict(e.auto_cast))
            for e in target.engines.values()]


def chip_peak(target: Target, fmt: str) -> float:
    """Operations per second one chip reaches in ``fmt`` on its fastest engine that runs it (0: none does)."""
    return max((e.peak(fmt) for e in target.engines.values() if fmt in e.peak_ops_per_cycle), default=0.0)


def columns(rows: list[EngineFormats]) -> list[str]:
    """Every format any row runs or converts from, in ``ir.dtypes`` order (widest floats first)."""
    names = {f for r in rows for f in [*r.peaks, *r.auto_cast]}
    return sorted(names, key=lambda f: (_ORDER.get(f, len(_ORDER)), f))


def format_table(targets: list[Target]) -> str:
    """Engines x formats: peak tera-operations per second per chip, or ``->F`` where the engine
    converts that format to F first (``Engine.runs`` applies the conversion before looking up a
    peak), or ``-`` where it does not run it."""
    rows = [r for t in targets for r in engine_formats(t)]
    fmts = columns(rows)
    lines = ["peak tera-operations/s per chip by engine and number format (->F: converted to F first; "
             "-: not run; `xpuc targets show NAME` gives each figure's source)",
             f"{'target':18} {'engine':8} {'role':7} " + " ".join(f"{f:>8}" for f in fmts)]
    for r in rows:
        cells = [f"{'->' + r.auto_cast[f]:>8}" if f in r.auto_cast else f"{_tera(r.peaks[f]):>8}" if f in r.peaks
                 else f"{'-':>8}" for f in fmts]
        lines.append(f"{r.target:18} {r.engine:8} {r.role:7} " + " ".join(cells))
    return "\n".join(lines)


def _tera(ops_per_s: float) -> str:
    t = ops_per_s / 1e12
    return f"{t:,.0f}" if t >= 1e4 else f"{t:.4g}"
