"""Elementwise ops, generated from the op registry and ONNX's own schemas.

Every op the registry files under the ``elementwise`` family (default domain) is a
candidate: its arity, which inputs share a type and which types it takes come from
``onnx.defs``; numpy broadcasting decides the output shape. What an op needs of its
values is found by evaluating it (``onnx.reference``) over a grid spanning each operand's
interval: an op that yields NaN, infinity or a huge value there is retried on guarded
operands (scaled into [-0.9, 0.9], then mapped into [1.1, 2.0]) and skipped if that fails
too; so is one that magnifies a small change of its inputs too much there (tan near a
pole). So a new elementwise op is fuzzed without an entry here; the tables below only add
attributes worth varying and the few facts evaluation cannot see.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from ir.ops.registry import lookup, supported_ops

from .build import FLOAT_CAP, INT_CAP, OPSET, Builder, Tensor

SPECIAL = {"Cast", "CastLike", "Clip", "RotaryEmbedding"}
"""Elementwise by family but generated elsewhere: a target type, scalar bounds, a layout."""
STEP = {"Ceil", "Floor", "Round", "Sign", "ThresholdedRelu", "Mod", "IsInf", "IsNaN"}
"""Float ops with jumps: a last-bit difference in their input can change the answer."""
EXACT = STEP | {"Abs", "Neg", "Relu", "Max", "Min", "Where", "Identity"}
"""Float ops whose result is exact given exact inputs (rounding cannot differ)."""
ATTRS = {
    "Elu": lambda b, t: {"alpha": b.choice([1.0, 0.5, 1.7])},
    "Celu": lambda b, t: {"alpha": b.choice([1.0, 0.6, 2.0])},
    "LeakyRelu": lambda b, t: {"alpha": b.choice([0.01, 0.2, 1.3])},
    "ThresholdedRelu": lambda b, t: {"alpha": b.choice([1.0, 0.0, -0.5])},
    "HardSigmoid": lambda b, t: {"alpha": b.choice([0.2, 0.5]), "beta": b.choice([0.5, 0.3])},
    "Selu": lambda b, t: {} if b.rng.random() < 0.5 else {"alpha": 1.5, "gamma": 1.1},
    "Gelu": lambda b, t: {"approximate": b.choice(["none", "tanh"])},
    "Mod": lambda b, t: {"fmod": 1 if t.is_float else int(b.rng.integers(2))},
    "IsInf": lambda b, t: {"detect_negative": int(b.rng.integers(2)), "detect_positive": int(b.rng.integers(2))},
    "BitShift": lambda b, t: {"direction": b.choice(["LEFT", "RIGHT"])},
}
UNIDIRECTIONAL = {"PRelu"}
"""The second operand broadcasts to the first; the output has the first's shape."""
TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
         "tensor(int32)": np.int32, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}
"""ONNX type strings the fuzzer feeds (what onnxruntime's CPU kernels mostly implement)."""


@functools.cache
def candidates() -> tuple[str, ...]:
    return tuple(op for domain, op in supported_ops()
                 if not domain and lookup(op).family == "elementwise" and op not in SPECIAL)


@functools.cache
def _schema(op: str):
    return onnx.defs.get_schema(op, OPSET)


def _allowed(op: str, param: str) -> list[np.dtype]:
    allowed = next(c.allowed_type_strs for c in _schema(op).type_constraints if c.type_param_str == param)
    return [np.dtype(TYPES[s]) for s in allowed if s in TYPES]


def generate(b: Builder) -> bool:
    op = b.choice(candidates())
    schema = _schema(op)
    params = [i.type_str for i in schema.inputs]
    variadic = schema.inputs[0].option == onnx.defs.OpSchema.FormalParameterOption.Variadic
    arity = int(b.rng.integers(1, 4)) if variadic else schema.min_input
    params = (params * arity)[:arity] if variadic else params[:arity]
    dtypes = {}
    for p in dict.fromkeys(params):
        allowed = [d for d in _allowed(op, p) if d.kind != "f" or d == b.float_dtype]
        if not allowed:
            return False
        floats = [d for d in allowed if d.kind == "f"]
        dtypes[p] = floats[0] if floats and b.rng.random() < 0.75 else b.choice(allowed)
    out_param = schema.outputs[0].type_str
    out_dtype = dtypes.get(out_param) or _allowed(op, out_param)[0]
    needs_exact = op in STEP or out_dtype.kind != "f" and any(d.kind == "f" for d in dtypes.values())
    operands = _operands(b, op, [dtypes[p] for p in params], needs_exact)
    if operands is None:
        return False
    attrs = ATTRS.get(op, lambda b, t: {})(b, operands[0])
    shape = operands[0].shape if op in UNIDIRECTIONAL else b.broadcast(*(t.shape for t in operands))
    for attempt in ("raw", "unit", "positive"):
        if attempt != "raw":
            if needs_exact or not any(t.is_float for t in operands):
                return False
            operands = [_guard(b, t, attempt) if t.is_float else t for t in operands]
        found = value_range(op, attrs, operands)
        if found is not None:
            exact = all(t.exact for t in operands) and (op in EXACT or out_dtype.kind != "f")
            b.node(op, operands, [b.result(shape=shape, dtype=out_dtype, lo=found[0], hi=found[1], exact=exact)],
                   **attrs)
            return True
    return False


def _guard(b: Builder, t: Tensor, kind: str) -> Tensor:
    return b.scaled(t, 0.9) if kind == "unit" else b.positive(t)


def _operands(b: Builder, op: str, dtypes: list[np.dtype], exact: bool) -> list[Tensor] | None:
    """The first operand from the pool (or new); the others broadcast-compatible with it."""
    def fits(dtype):
        return lambda t: t.dtype == dtype and (t.exact or not exact)

    first = b.pick(fits(dtypes[0])) or _leaf(b, b.shape(), dtypes[0])
    operands = [first]
    for dtype in dtypes[1:]:
        grow = op not in UNIDIRECTIONAL
        other = b.pick(lambda t: fits(dtype)(t) and t is not first and _compatible(b, first, t, grow))
        if other is None or b.rng.random() < 0.4:
            other = _leaf(b, b.partner_shape(first.shape, grow=grow), dtype)
        operands.append(other)
    if b.broadcast(*(t.shape for t in operands)) is None:
        return None
    return operands


def _compatible(b: Builder, first: Tensor, t: Tensor, grow: bool) -> bool:
    shape = b.broadcast(first.shape, t.shape)
    return shape is not None and (grow and b.numel(shape) <= 4096 or tuple(shape) == tuple(first.shape))


def _leaf(b: Builder, shape, dtype: np.dtype) -> Tensor:
    if dtype == np.uint8:
        return b.leaf(shape, dtype, 0, 7)
    if dtype.kind in "iu":
        return b.leaf(shape, dtype, -8, 8)
    return b.leaf(shape, dtype)


CONDITION = 30
"""Most an op may magnify a relative change of its inputs (within the operands' intervals):
past it (tan near a pole, sin of a large angle, a high power) a last-bit difference upstream
becomes a difference no tolerance allows, so the operands are guarded instead."""
NUDGE = {np.dtype(np.float32): 1e-4, np.dtype(np.float16): 2e-3}


def value_range(op: str, attrs: dict, operands: list[Tensor]) -> tuple[float, float] | None:
    """The interval of ``op``'s results over a grid spanning its operands' intervals, or None
    where the op fails there, gives NaN, infinity or something past the dtype's cap, or (a
    continuous float op) is ill-conditioned there."""
    points = {1: 1025, 2: 33}.get(len(operands), 9)
    grids = [_grid(t, points) for t in operands]
    mesh = [m.reshape(-1) for m in np.meshgrid(*grids, indexing="ij")]
    y = _evaluate(op, attrs, operands, mesh)
    if y is None or y.dtype == np.bool_:
        return None if y is None else (0.0, 1.0)
    floats = any(t.is_float for t in operands)
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)):
        return None
    lo, hi = float(y.min()), float(y.max())
    cap = FLOAT_CAP.get(operands[0].dtype, FLOAT_CAP[np.dtype(np.float32)]) if y.size else 0
    if max(abs(lo), abs(hi)) > (cap if floats else INT_CAP):
        return None
    if floats and op not in STEP:
        nudge = NUDGE[next(t.dtype for t in operands if t.is_float)]
        moved = _evaluate(op, attrs, operands, [(m * (1 + nudge) + nudge).astype(m.dtype) if m.dtype.kind == "f" else m
                                                for m in mesh])
        if moved is None or np.max(np.abs(moved.astype(np.float64) - y) / (np.abs(y) + 1)) > CONDITION * nudge:
            return None
    margin = 0.05 * (hi - lo) + 1e-3 if floats else 0.0
    return lo - margin, hi + margin


def _evaluate(op: str, attrs: dict, operands: list[Tensor], mesh: list[np.ndarray]) -> np.ndarray | None:
    names = [f"x{i}" for i in range(len(operands))]
    node = helper.make_node(op, names, ["y"], **attrs)
    graph = helper.make_graph([node], "range", [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(t.dtype), [None])
        for n, t in zip(names, operands)], [helper.make_value_info("y", onnx.TypeProto())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    try:
        with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
            return np.asarray(ReferenceEvaluator(model).run(None, dict(zip(names, mesh)))[0])
    except Exception:  # the op refuses these values: the caller guards or skips
        return None


def _grid(t: Tensor, points: int) -> np.ndarray:
    if t.dtype == np.bool_:
        return np.array([False, True])
    values = np.linspace(t.lo, t.hi, points)
    if t.lo < 0 < t.hi:
        values = np.append(values, [0.0, 1e-3, -1e-3])
    if t.dtype.kind in "iu":
        values = np.unique(np.round(values))
    return values.astype(t.dtype)
