"""Arithmetic on dimensions that may be symbols.

Exported transformer graphs compute shapes at run time (Shape -> Gather -> Concat ->
Reshape). Shape inference evaluates those chains on *object arrays* whose elements are ints
or symbol strings, so a Reshape target like ``[batch, seq, 4, 16]`` stays exact without
binding the input shapes. Expressions are kept as canonical text (``"2*seq"``) so equal
expressions compare equal; anything more complex than a product of terms becomes opaque.
"""

from __future__ import annotations

import re

import numpy as np

from .types import Dim

_TERM = re.compile(r"^[A-Za-z_][\w.:/-]*$")


def _factors(d: Dim) -> tuple[int, list[str]] | None:
    """Split a dim into (coefficient, sorted symbols) if it is a product of terms."""
    if isinstance(d, (int, np.integer)):
        return int(d), []
    coeff, syms = 1, []
    for part in str(d).split("*"):
        if part.lstrip("-").isdigit():
            coeff *= int(part)
        elif _TERM.match(part):
            syms.append(part)
        else:
            return None
    return coeff, sorted(syms)


def _join(coeff: int, syms: list[str]) -> Dim:
    if not syms:
        return coeff
    if coeff == 0:
        return 0
    return "*".join(([str(coeff)] if coeff != 1 else []) + syms)


def mul(a: Dim, b: Dim) -> Dim:
    fa, fb = _factors(a), _factors(b)
    if fa is None or fb is None:
        return f"({a})*({b})"
    return _join(fa[0] * fb[0], sorted(fa[1] + fb[1]))


def div(a: Dim, b: Dim) -> Dim:
    """Integer (floor) division, exact when ``b`` divides ``a`` symbolically."""
    fa, fb = _factors(a), _factors(b)
    if fa is not None and fb is not None and fb[0] != 0:
        syms = list(fa[1])
        if all(s in syms for s in fb[1]):
            for s in fb[1]:
                syms.remove(s)
            if fa[0] % fb[0] == 0 or not syms:
                return _join(fa[0] // fb[0], syms)
    return f"({a})/({b})"


def add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        return int(a) + int(b)
    if b == 0:
        return a
    if a == 0:
        return b
    return f"{a}+{b}" if not str(b).startswith("-") else f"{a}{b}"


def sub(a: Dim, b: Dim) -> Dim:
    if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
        return int(a) - int(b)
    if a == b:
        return 0
    return add(a, neg(b))


def neg(a: Dim) -> Dim:
    return -int(a) if isinstance(a, (int, np.integer)) else mul(-1, a)


BINARY = {"Add": add, "Sub": sub, "Mul": mul, "Div": div}


def apply_binary(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Elementwise Add/Sub/Mul/Div on symbolic arrays (with numpy broadcasting)."""
    fn = BINARY.get(op)
    if fn is None:
        return None
    a, b = np.broadcast_arrays(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(a.shape):
        out[idx] = fn(a[idx], b[idx])
    return out


def product(dims) -> Dim:
    result: Dim = 1
    for d in dims:
        result = mul(result, d)
    return result


def is_int(d) -> bool:
    return isinstance(d, (int, np.integer))


def sym_array(dims) -> np.ndarray:
    """A 1-D object array of dims, ints normalised to Python int."""
    out = np.empty(len(dims), dtype=object)
    out[:] = [int(d) if is_int(d) else d for d in dims]
    return out
