"""Arithmetic on dimensions that may be symbols.

Exported transformer graphs compute shapes at run time (Shape -> Gather -> Concat ->
Reshape). Shape inference evaluates those chains on *object arrays* whose elements are ints
or symbolic dims, so a Reshape target like ``[batch, seq, 4, 16]`` stays exact without
binding the input shapes.

A symbolic dim is kept as canonical text of an integer polynomial over *atoms* (symbol
names such as ``seq``, or calls such as ``floordiv(seq,2)``), e.g. ``"2*batch*seq+1"``.
Canonical text makes equal expressions compare equal, so ``(seq + 1) - 1`` is ``seq`` again
and types stay comparable with ``==``. Atoms are assumed non-negative (they are sizes) but
possibly zero; that is what lets ``Equal(seq, -1)`` or ``Max(seq, 0)`` be decided without
binding ``seq``, while ``x[:, :1]`` honestly has ``min(1,seq)`` columns.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from .types import Dim

Poly = tuple[tuple[tuple[str, ...], int], ...]
"""Sorted (monomial, coefficient) pairs; a monomial is a sorted tuple of atoms, () for the constant."""

_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_/][\w./:]*)|(\S))")


def is_int(d) -> bool:
    return isinstance(d, (int, np.integer))


# ----------------------------------------------------------- polynomial core
def _poly(terms: dict[tuple[str, ...], int]) -> Poly:
    return tuple(sorted((m, c) for m, c in terms.items() if c))


def _const(n: int) -> Poly:
    return _poly({(): int(n)})


def _atom(text: str) -> Poly:
    return (((text,), 1),)


def _as_poly(d: Dim) -> Poly:
    return _const(d) if is_int(d) else _parse(str(d))


def _as_dim(p: Poly) -> Dim:
    if not p:
        return 0
    if len(p) == 1 and p[0][0] == ():
        return p[0][1]
    return _format(p)


def _format(p: Poly) -> str:
    def term(m: tuple[str, ...], c: int) -> str:
        if not m:
            return str(c)
        prefix = "" if c == 1 else "-" if c == -1 else f"{c}*"
        return prefix + "*".join(m)

    ordered = sorted(p, key=lambda mc: (not mc[0], -len(mc[0]), mc[0]))  # constant last
    text = ""
    for m, c in ordered:
        t = term(m, c)
        text += t if not text or t.startswith("-") else "+" + t
    return text


def _add(a: Poly, b: Poly, sign: int = 1) -> Poly:
    terms = dict(a)
    for m, c in b:
        terms[m] = terms.get(m, 0) + sign * c
    return _poly(terms)


def _mul(a: Poly, b: Poly) -> Poly:
    terms: dict[tuple[str, ...], int] = {}
    for ma, ca in a:
        for mb, cb in b:
            m = tuple(sorted(ma + mb))
            terms[m] = terms.get(m, 0) + ca * cb
    return _poly(terms)


def _negated(p: Poly) -> Poly:
    return _mul(_const(-1), p)


def _at_least(p: Poly, bound: int) -> bool:
    """True when ``p >= bound`` for every non-negative value of its atoms."""
    return all(c >= 0 for m, c in p if m) and dict(p).get((), 0) >= bound


def _exact_quotient(a: Poly, b: Poly) -> Poly | None:
    """a / b when b is one term that divides every term of a."""
    if len(b) != 1:
        return _const(1) if a == b else None
    (mb, cb), = b
    out: dict[tuple[str, ...], int] = {}
    for m, c in a:
        rest = list(m)
        for atom in mb:
            if atom not in rest:
                return None
            rest.remove(atom)
        if c % cb:
            return None
        out[tuple(rest)] = c // cb
    return _poly(out)


# ------------------------------------------------------------------- parser
@functools.lru_cache(maxsize=None)
def _parse(text: str) -> Poly:
    """Canonical polynomial of a dim's text; text that is not an expression is one atom."""
    parser = _Parser(_TOKEN.findall(text))
    try:
        poly = parser.expr()
        if parser.pos != len(parser.tokens):
            raise ValueError
    except (ValueError, IndexError, ZeroDivisionError):
        return _atom(symbol(text))
    return poly


class _Parser:
    def __init__(self, tokens, bindings: dict[str, int] | None = None):
        self.tokens, self.pos, self.bindings = tokens, 0, bindings or {}

    def peek(self) -> str:
        return "".join(self.tokens[self.pos]) if self.pos < len(self.tokens) else ""

    def take(self, expected: str | None = None):
        token = self.tokens[self.pos]
        if expected is not None and token[2] != expected:
            raise ValueError
        self.pos += 1
        return token

    def expr(self) -> Poly:
        sign = -1 if self.peek() == "-" else 1
        if self.peek() in ("+", "-"):
            self.take()
        total = _mul(_const(sign), self.term())
        while self.peek() in ("+", "-"):
            sign = 1 if self.take()[2] == "+" else -1
            total = _add(total, self.term(), sign)
        return total

    def term(self) -> Poly:
        result = self.factor()
        while self.peek() == "*":
            self.take()
            result = _mul(result, self.factor())
        return result

    def factor(self) -> Poly:
        number, name, op = self.take()
        if number:
            return _const(int(number))
        if op == "(":
            inner = self.expr()
            self.take(")")
            return inner
        if not name:
            raise ValueError
        if self.peek() != "(":
            return _const(self.bindings[name]) if name in self.bindings else _atom(name)
        self.take("(")
        args = [self.expr()]
        while self.peek() == ",":
            self.take()
            args.append(self.expr())
        self.take(")")
        return _call(name, args)


def _call(name: str, args: list[Poly]) -> Poly:
    """A function of dims, simplified where the arguments allow; otherwise one atom."""
    if name in _DIVISIONS and len(args) == 2:
        a, b = args
        if _is_const(a) and _is_const(b):
            return _const(_DIVISIONS[name](_value(a), _value(b)))
        quotient = _exact_quotient(a, b)
        if quotient is not None:
            return quotient if name != "mod" else ()
    if name in ("min", "max") and len(args) == 2:
        a, b = args
        if _at_least(_add(a, b, -1), 0):  # a >= b
            return b if name == "min" else a
        if _at_least(_add(b, a, -1), 0):
            return a if name == "min" else b
        args = sorted(args, key=lambda a: str(_as_dim(a)))
    return _atom(f"{name}({','.join(str(_as_dim(a)) for a in args)})")


def _is_const(p: Poly) -> bool:
    return not p or (len(p) == 1 and p[0][0] == ())


def _value(p: Poly) -> int:
    return p[0][1] if p else 0


_DIVISIONS = {"floordiv": lambda a, b: a // b, "ceildiv": lambda a, b: -(-a // b), "mod": lambda a, b: a % b}


# ------------------------------------------------------------ dim arithmetic
def canonical(d: Dim) -> Dim:
    """The canonical form of a dim: an int, or text that equals every equivalent spelling."""
    return int(d) if is_int(d) else _as_dim(_as_poly(d))


def substitute(d: Dim, bindings: dict[str, int]) -> Dim:
    """``d`` with symbols replaced by the values ``bindings`` gives them (an int once all are bound)."""
    if is_int(d):
        return int(d)
    return _as_dim(_Parser(_TOKEN.findall(str(canonical(d))), bindings).expr())


def add(a: Dim, b: Dim) -> Dim:
    if is_int(a) and is_int(b):
        return int(a) + int(b)
    return _as_dim(_add(_as_poly(a), _as_poly(b)))


def sub(a: Dim, b: Dim) -> Dim:
    if is_int(a) and is_int(b):
        return int(a) - int(b)
    return _as_dim(_add(_as_poly(a), _as_poly(b), -1))


def neg(a: Dim) -> Dim:
    return sub(0, a)


def mul(a: Dim, b: Dim) -> Dim:
    if is_int(a) and is_int(b):
        return int(a) * int(b)
    return _as_dim(_mul(_as_poly(a), _as_poly(b)))


def div(a: Dim, b: Dim) -> Dim:
    """Integer division as ONNX ``Div`` does it on integers (truncating toward zero)."""
    if is_int(a) and is_int(b):
        q = abs(int(a)) // abs(int(b))
        return q if (a >= 0) == (b > 0) else -q
    return floordiv(a, b)


def floordiv(a: Dim, b: Dim) -> Dim:
    """Floor division; exact and symbolic when ``b`` divides ``a`` term by term."""
    return _as_dim(_call("floordiv", [_as_poly(a), _as_poly(b)]))


def ceildiv(a: Dim, b: Dim) -> Dim:
    return _as_dim(_call("ceildiv", [_as_poly(a), _as_poly(b)]))


def mod(a: Dim, b: Dim) -> Dim:
    """Remainder with the sign of the divisor (ONNX ``Mod`` with fmod=0, like Python)."""
    return _as_dim(_call("mod", [_as_poly(a), _as_poly(b)]))


def compare(op: str, a: Dim, b: Dim) -> bool | None:
    """An ONNX comparison (a key of COMPARISONS) of two dims; None when it depends on the symbols."""
    diff = _add(_as_poly(a), _as_poly(b), -1)
    true_if, false_if = COMPARISONS[op]
    if true_if(diff):
        return True
    return False if false_if(diff) else None


def minimum(a: Dim, b: Dim) -> Dim:
    return _as_dim(_call("min", [_as_poly(a), _as_poly(b)]))


def maximum(a: Dim, b: Dim) -> Dim:
    return _as_dim(_call("max", [_as_poly(a), _as_poly(b)]))


def product(dims) -> Dim:
    result: Dim = 1
    for d in dims:
        result = mul(result, d)
    return result


def symbol(text: str) -> str:
    """``text`` made into one valid symbol name (characters that would read as operators become ``_``)."""
    name = re.sub(r"[^\w./:]", "_", text)
    return name if re.match(r"[A-Za-z_/]", name) else "_" + name


def fresh(node_name: str, suffix: str) -> str:
    """A new symbol for a dim no rule can express, named after the op that made it."""
    return symbol(f"{node_name}_{suffix}")


# ------------------------------------------------------------- on arrays
BINARY = {"Add": add, "Sub": sub, "Mul": mul, "Div": div, "Mod": mod, "Max": maximum, "Min": minimum}
"""ONNX integer ops evaluated on arrays of dims."""

COMPARISONS = {
    "Equal": (lambda d: not d, lambda d: _at_least(d, 1) or _at_least(_negated(d), 1)),
    "Less": (lambda d: _at_least(_negated(d), 1), lambda d: _at_least(d, 0)),
    "LessOrEqual": (lambda d: _at_least(_negated(d), 0), lambda d: _at_least(d, 1)),
    "Greater": (lambda d: _at_least(d, 1), lambda d: _at_least(_negated(d), 0)),
    "GreaterOrEqual": (lambda d: _at_least(d, 0), lambda d: _at_least(_negated(d), 1)),
}
"""op -> (when ``a - b`` proves it true, when it proves it false)."""


def _vectorized(fn, *arrays) -> np.ndarray:
    out = np.frompyfunc(fn, len(arrays), 1)(*(np.asarray(a, dtype=object) for a in arrays))
    return np.asarray(out, dtype=object)


def apply_binary(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise integer ``op`` (a key of BINARY) on arrays of dims, with numpy broadcasting."""
    return _vectorized(BINARY[op], a, b)


def apply_comparison(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """A comparison (a key of COMPARISONS) on arrays of dims; None if any element is undecidable."""
    results = _vectorized(lambda x, y: compare(op, x, y), a, b)
    if any(r is None for r in results.flat):
        return None
    return results.astype(bool)


def sym_array(dims) -> np.ndarray:
    """A 1-D object array of dims, ints normalised to Python int."""
    out = np.empty(len(dims), dtype=object)
    out[:] = [int(d) if is_int(d) else d for d in dims]
    return out


def is_concrete(value: np.ndarray) -> bool:
    """True when an array holds no symbols."""
    return value.dtype != object or all(is_int(x) for x in value.flat)
