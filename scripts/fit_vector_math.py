#!/usr/bin/env python
"""Fit the polynomial coefficients of ``backends/codegen/vmath.py`` (prints them).

Each polynomial is a near-minimax fit (Lawson's iteratively reweighted least squares, 60
rounds over 4000 Chebyshev nodes, in float64) of the smooth part of a function on the
reduced interval the vector code evaluates it on; its worst relative error is printed
beside it. The float32 code adds its own
rounding on top: ``tests/test_vector_math.py`` measures the end result in ulps.

    python scripts/fit_vector_math.py
"""

from __future__ import annotations

import math

import numpy as np

LN2 = math.log(2)
ERF_SPLIT = 0.875
"""Below it erf is an odd polynomial; above it 1 - exp(-x^2) * erfcx(x) (no cancellation)."""
ERF_ONE = 4.0
"""erfc(4) = 1.5e-8, under half an ulp of 1.0f: erf is 1 in float32 from here on."""
ERFCX_CENTER = (1 / ERF_ONE + 1 / ERF_SPLIT) / 2
"""ERFCX's variable is 1/x - ERFCX_CENTER: centred, its coefficients stay small and float32
Horner evaluation does not cancel (uncentred they reach 2.2 and cost 3 ulps of erf)."""


def lawson(f, lo: float, hi: float, degree: int, nodes: int = 4000, rounds: int = 60):
    """Coefficients (constant first) of a degree-``degree`` polynomial near-minimax in relative error."""
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.linspace(0, np.pi, nodes))
    basis = np.stack([x ** p for p in range(degree + 1)], 1)
    y = f(x)
    weights = np.full(nodes, 1 / nodes)
    for _ in range(rounds):
        root = np.sqrt(weights) / np.abs(y)
        coef, *_ = np.linalg.lstsq(basis * root[:, None], y * root, rcond=None)
        err = np.abs(basis @ coef - y) / np.abs(y)
        weights = weights * err
        weights /= weights.sum()
    return coef, float((np.abs(basis @ coef - y) / np.abs(y)).max())


def _map(fn):
    return lambda x: np.array([fn(float(v)) for v in x])


def _log_remainder(f: float) -> float:
    """(log1p(f) - f + f^2/2) / f^3, by its series near 0 where the subtraction would cancel."""
    if abs(f) < 0.05:
        return sum((-1) ** (n + 1) * f ** (n - 3) / n for n in range(3, 30))
    return (math.log1p(f) - f + f * f / 2) / f ** 3


FITS = {
    # name: (what the polynomial approximates, in its variable; interval; degree)
    "EXP": ("e^r = 1 + r + r^2 EXP(r)", lambda r: (np.expm1(r) - r) / r ** 2, (-LN2 / 2, LN2 / 2), 4),
    "LOG": ("log(1 + f) = f - f^2/2 + f^3 LOG(f)", _map(_log_remainder), (math.sqrt(0.5) - 1, math.sqrt(2) - 1), 8),
    "TANH": ("tanh(x) = x + x^3 TANH(x^2), |x| < 0.625", _map(lambda u: (math.tanh(math.sqrt(u)) - math.sqrt(u))
                                                              / u ** 1.5), (1e-4, 0.625 ** 2), 5),
    "ERF": (f"erf(x) = x ERF(x^2), |x| < {ERF_SPLIT}", _map(lambda u: math.erf(math.sqrt(u)) / math.sqrt(u)),
            (1e-8, ERF_SPLIT ** 2), 6),
    "ERFCX": (f"erfc(x) = exp(-x^2) / x * ERFCX(1/x - {ERFCX_CENTER:.10f}), {ERF_SPLIT} <= x < {ERF_ONE}",
              _map(lambda u: math.erfc(1 / (u + ERFCX_CENTER)) * math.exp(1 / (u + ERFCX_CENTER) ** 2)
                   / (u + ERFCX_CENTER)), (1 / ERF_ONE - ERFCX_CENTER, 1 / ERF_SPLIT - ERFCX_CENTER), 10),
}


def main() -> None:
    for name, (meaning, f, (lo, hi), degree) in FITS.items():
        coef, err = lawson(f, lo, hi, degree)
        print(f"{name} = ({', '.join(f'{c:.10e}' for c in coef)})")
        print(f"    # {meaning}, on [{lo:.6g}, {hi:.6g}], relative error {err:.1e}")


if __name__ == "__main__":
    main()
