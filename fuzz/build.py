"""The graph under construction: a pool of typed tensors that op generators draw from.

Every tensor carries what a generator needs to keep the next op legal and the comparison
meaningful: its shape (ints, or symbols bound to a concrete size in ``sizes``), its dtype,
an interval holding every value it can take, and whether it is *exact* (computed by ops
that round identically everywhere: movement, selection, comparisons, integer arithmetic).
Step functions (Floor, comparisons, ArgMax ...) only read exact tensors, so a last-bit
difference in a transcendental can never flip a comparison and pass for a bug.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 23
Dim = int | str

FLOAT_CAP = {np.dtype(np.float32): 1e4, np.dtype(np.float16): 64.0}
"""Largest magnitude a float tensor may reach: far from overflow for the next op
(a MatMul over 64 of them, an Exp of a scaled copy)."""
INT_CAP = 1 << 20
"""Integer tensors stay well inside int32."""


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[Dim, ...]
    dtype: np.dtype
    lo: float
    hi: float
    exact: bool

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    @property
    def magnitude(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    @property
    def static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)


@dataclass
class Builder:
    rng: np.random.Generator
    float_dtype: np.dtype
    symbolic: bool
    sizes: dict[str, int] = field(default_factory=dict)
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inputs: list[onnx.ValueInfoProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    feeds: dict[str, np.ndarray] = field(default_factory=dict)
    pool: list[Tensor] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    exposed: list[str] = field(default_factory=list)
    """Intermediates made graph outputs on purpose (a near miss: a fusion must not hide them)."""
    _count: itertools.count = field(default_factory=itertools.count)

    # ------------------------------------------------------------------ names and dims
    def name(self, prefix: str = "t") -> str:
        return f"{prefix}{next(self._count)}"

    def size(self, d: Dim) -> int:
        return self.sizes[d] if isinstance(d, str) else d

    def concrete(self, shape) -> tuple[int, ...]:
        return tuple(self.size(d) for d in shape)

    def numel(self, shape) -> int:
        return math.prod(self.concrete(shape))

    def dim(self, small: bool = False, allow_symbol: bool = True) -> Dim:
        """A random dimension: mostly small, sometimes just past a vector width, sometimes a symbol."""
        if self.symbolic and allow_symbol and self.rng.random() < 0.3:
            if self.sizes and self.rng.random() < 0.6:
                return str(self.rng.choice(sorted(self.sizes)))
            sym = f"s{len(self.sizes)}"
            self.sizes[sym] = int(self.rng.integers(2, 7))
            return sym
        sizes = [1, 2, 3, 4, 5, 6, 8] if small else [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 33]
        return int(self.rng.choice(sizes))

    def shape(self, rank: int | None = None, *, max_numel: int = 4096) -> tuple[Dim, ...]:
        rank = int(self.rng.integers(1, 5)) if rank is None else rank
        while True:
            shape = tuple(self.dim(small=rank > 2) for _ in range(rank))
            if self.numel(shape) <= max_numel:
                return shape

    # --------------------------------------------------------------------- leaves
    def input(self, shape, dtype, lo: float = -3.0, hi: float = 3.0) -> Tensor:
        """A graph input, fed with values in [lo, hi] (integers: whole numbers; bool: coins)."""
        dtype = np.dtype(dtype)
        name = self.name("in")
        self.feeds[name] = self.values(self.concrete(shape), dtype, lo, hi)
        self.inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(dtype), list(shape)))
        return self.add(Tensor(name, tuple(shape), dtype, *self._range(dtype, lo, hi), exact=True))

    def const(self, data: np.ndarray, *, pool: bool = True) -> Tensor:
        """An initializer holding ``data`` (shape operands stay out of the pool)."""
        data = np.asarray(data)
        name = self.name("c")
        self.initializers.append(numpy_helper.from_array(data, name))
        lo, hi = (float(data.min()), float(data.max())) if data.size else (0.0, 0.0)
        t = Tensor(name, data.shape, data.dtype, lo, hi, exact=True)
        return self.add(t) if pool else t

    def ints(self, values, dtype=np.int64) -> str:
        return self.const(np.asarray(values, dtype), pool=False).name

    def values(self, shape, dtype, lo, hi) -> np.ndarray:
        if dtype == np.bool_:
            return np.asarray(self.rng.random(shape) < 0.5)
        if dtype.kind in "iu":
            low = int(math.ceil(lo))
            return self.rng.integers(low, max(low, int(math.floor(hi))) + 1, shape).astype(dtype)
        return self.rng.uniform(lo, hi, shape).astype(dtype)

    def scales(self, shape, dtype) -> np.ndarray:
        """Norm weights: either sign, magnitude in [0.5, 2]. A weight near zero squeezes a channel
        into a few float16 steps, and the next normalization would blow that rounding up."""
        magnitude = self.rng.uniform(0.5, 2.0, shape)
        return (np.where(self.rng.random(shape) < 0.5, -magnitude, magnitude)).astype(dtype)

    def leaf(self, shape, dtype=None, lo: float = -3.0, hi: float = 3.0) -> Tensor:
        """A new operand: a graph input, or (when the shape is static) sometimes a constant."""
        dtype = np.dtype(dtype or self.float_dtype)
        if all(isinstance(d, int) for d in shape) and self.rng.random() < 0.4:
            return self.const(self.values(shape, dtype, lo, hi))
        return self.input(shape, dtype, lo, hi)

    @staticmethod
    def _range(dtype, lo, hi) -> tuple[float, float]:
        return (0.0, 1.0) if dtype == np.bool_ else (float(lo), float(hi))

    # ---------------------------------------------------------------------- ops
    def add(self, t: Tensor) -> Tensor:
        self.pool.append(t)
        return t

    def node(self, op_type: str, inputs, outputs: list[Tensor | None], **attrs) -> list[Tensor | None]:
        """Append a node; ``outputs`` are its results as tensors (None: an omitted optional output)."""
        names = [i if isinstance(i, str) or i is None else i.name for i in inputs]
        names = ["" if n is None else n for n in names]
        self.used.update(n for n in names if n)
        out_names = [t.name if t is not None else "" for t in outputs]
        self.nodes.append(helper.make_node(op_type, names, out_names, name=f"n{len(self.nodes)}_{op_type}", **attrs))
        for t in outputs:
            if t is not None:
                self.add(t)
        return outputs

    def result(self, like: Tensor | None = None, **changes) -> Tensor:
        """A new output tensor, by default shaped and typed like ``like``."""
        base = like or Tensor("", (), self.float_dtype, 0.0, 0.0, True)
        return replace(base, name=self.name(), **changes)

    def unary(self, op_type: str, x: Tensor, **changes_and_attrs) -> Tensor:
        changes = {k: changes_and_attrs.pop(k) for k in ("shape", "dtype", "lo", "hi", "exact")
                   if k in changes_and_attrs}
        out, = self.node(op_type, [x], [self.result(x, **changes)], **changes_and_attrs)
        return out

    # ------------------------------------------------------------------- choices
    def pick(self, ok=lambda t: True) -> Tensor | None:
        """A pool tensor passing ``ok``, recent ones likelier (so chains grow deep)."""
        found = [t for t in self.pool if ok(t)]
        if not found:
            return None
        weights = np.arange(1, len(found) + 1, dtype=float) ** 1.5
        return found[int(self.rng.choice(len(found), p=weights / weights.sum()))]

    def pick_float(self, ok=lambda t: True, rank=frozenset({1, 2, 3, 4})) -> Tensor:
        """A float tensor of one of the ranks ``rank`` from the pool, else a new one."""
        t = self.pick(lambda t: t.dtype == self.float_dtype and t.rank in rank and ok(t))
        return t if t is not None else self.leaf(self.shape(int(self.rng.choice(sorted(rank)))))

    def choice(self, options):
        return options[int(self.rng.integers(len(options)))]

    # ------------------------------------------------------------------- guards
    def scaled(self, t: Tensor, limit: float) -> Tensor:
        """``t`` scaled into [-limit, limit] (a Mul by a constant; no-op when it already fits)."""
        if t.magnitude <= limit:
            return t
        s = limit / t.magnitude
        c = self.const(np.asarray(s, t.dtype), pool=False)
        out, = self.node("Mul", [t, c], [self.result(t, lo=t.lo * s, hi=t.hi * s, exact=False)])
        return out

    def positive(self, t: Tensor, low: float = 1.1, width: float = 0.9) -> Tensor:
        """``t`` mapped into [low, low + width] by Abs, a scale and a shift."""
        if t.lo >= low and t.hi <= low + width:
            return t
        a = self.unary("Abs", t, lo=0.0, hi=t.magnitude)
        a = self.scaled(a, width)
        c = self.const(np.asarray(low, t.dtype), pool=False)
        out, = self.node("Add", [a, c], [self.result(a, lo=low, hi=a.hi + low, exact=False)])
        return out

    def cap(self, t: Tensor) -> Tensor:
        return self.scaled(t, FLOAT_CAP[t.dtype] / 8) if t.is_float else t

    # ---------------------------------------------------------------- broadcast
    def partner_shape(self, shape, *, grow: bool = True) -> tuple[Dim, ...]:
        """A shape that broadcasts with ``shape``: a suffix of it, some dims set to 1, or
        (``grow``) 1-dims of it widened, so the result is bigger than both."""
        r = self.rng.random()
        if r < 0.3:
            return tuple(shape)
        if r < 0.45:
            return ()
        out = list(shape[int(self.rng.integers(0, len(shape) + 1)):]) if self.rng.random() < 0.5 else list(shape)
        for i in range(len(out)):
            if self.rng.random() < 0.3:
                out[i] = 1
            elif grow and out[i] == 1 and self.rng.random() < 0.5:
                out[i] = self.dim(small=True, allow_symbol=False)
        if grow and self.rng.random() < 0.15 and len(out) >= len(shape) and len(out) < 5:
            out.insert(0, self.dim(small=True))
        return tuple(out)

    def broadcast(self, *shapes) -> tuple[Dim, ...] | None:
        """numpy broadcasting over dim identities (a symbol only matches itself or 1)."""
        rank = max((len(s) for s in shapes), default=0)
        out = []
        for i in range(rank):
            dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0} - {1}
            if len(dims) > 1:
                return None
            out.append(dims.pop() if dims else 1)
        return tuple(out)

    # -------------------------------------------------------------------- model
    def model(self, outputs: list[Tensor], metadata: dict[str, str] | None = None) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "fuzz", self.inputs,
            [helper.make_tensor_value_info(t.name, helper.np_dtype_to_tensor_dtype(t.dtype), None) for t in outputs],
            self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=10,
                                  producer_name="xpuc-fuzz")
        for k, v in (metadata or {}).items():
            model.metadata_props.add(key=k, value=v)
        return model
