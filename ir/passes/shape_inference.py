"""Shape and dtype inference with xpuc's own per-op rules (``ir.ops``).

Walks the graph in topological order, asks each op's rule for its output types, and tracks
the contents of small integer tensors so shape arithmetic (Shape -> Gather -> Concat ->
Reshape) gives exact shapes. Two sources of contents:

- concrete inputs: the op is evaluated with ``onnx.reference`` (any op, no hand-written
  interpreter), when its outputs are small;
- inputs holding dim symbols: the op's ``propagate`` rule computes on symbolic arrays.

Types the model declares for its outputs are checked against what the graph computes.
"""

from __future__ import annotations

import numpy as np

from .. import ops, symbolic
from ..errors import ShapeError, XpucError
from ..graph import Graph, Node
from ..reference import run_nodes
from ..types import TensorType
from .manager import graph_pass

MAX_SYMBOLIC_ELEMENTS = 64
"""Only small tensors (shapes, indices, masks of shape values) have their contents tracked."""

MAX_EVALUATED_INPUT_ELEMENTS = 1 << 16
"""Ops reading bigger constants (weights) are left to their rules, to keep inference cheap."""


@graph_pass("infer-shapes")
def infer_shapes(graph: Graph) -> bool:
    """Set the type of every op output (in place); changed when any type differs from before."""
    return _infer(graph)[1]


def symbolic_values(graph: Graph) -> dict[str, np.ndarray]:
    """Infer all types and return the known contents of small values.

    The result maps value names to arrays (object arrays when they hold dim symbols); the
    constant folder turns fully concrete ones into constants.
    """
    return _infer(graph)[0]


def _infer(graph: Graph) -> tuple[dict[str, np.ndarray], bool]:
    known: dict[str, np.ndarray] = {}
    changed = False
    for node in graph.nodes:
        changed |= infer_node(graph, node, known)
    return known, changed


def infer_node(graph: Graph, node: Node, known: dict[str, np.ndarray]) -> bool:
    """Set the types of one op's outputs from its inputs' (whose types are already set);
    ``known`` holds the contents of small values computed so far and gains this op's.
    Whether any output type changed."""
    opdef = ops.lookup(node.op_type, node.domain)
    if opdef is None:
        raise ShapeError(f"{node.name}: no shape rule for op {node.qualified_type}")
    inputs = [_input_value(graph, known, v) for v in node.inputs]
    ctx = ops.InferContext(node, [_input_type(graph, v) for v in node.inputs], inputs, graph.opset)
    try:
        out_types = opdef.infer(ctx)
        out_values = _evaluate_small(graph, node, ctx, out_types) if opdef.deterministic else None
        if out_values is None:
            out_values = opdef.propagate(ctx) if opdef.propagate else []
    except XpucError:
        raise
    except Exception as exc:  # a malformed model must give a clear error, not a traceback
        raise ShapeError(f"{node.name} ({node.op_type}): cannot infer shapes: {exc}") from exc
    for name, value in zip(node.outputs, out_values):
        if name and value is not None and np.size(value) <= MAX_SYMBOLIC_ELEMENTS:
            known[name] = _as_array(value)
    return _assign(graph, node, out_types)


def _evaluate_small(graph: Graph, node: Node, ctx: ops.InferContext,
                    out_types: list[TensorType]) -> list[np.ndarray] | None:
    """Run a deterministic op whose inputs are all concrete and whose outputs are small; None if it is not one."""
    if node.domain or not any(node.outputs):
        return None
    present = [i for i, v in enumerate(node.inputs) if v]
    if any(ctx.values[i] is None or ctx.values[i].size > MAX_EVALUATED_INPUT_ELEMENTS or ctx.types[i].dtype is None
           or not symbolic.is_concrete(ctx.values[i]) for i in present):
        return None
    if any(t.numel is None or t.numel > MAX_SYMBOLIC_ELEMENTS for t in out_types):
        return None
    feeds = {node.inputs[i]: np.asarray(ctx.values[i]).astype(ctx.types[i].dtype.numpy) for i in present}
    try:
        results = run_nodes([node], feeds, [o for o in node.outputs if o], graph.opset)
        return [results.get(o) for o in node.outputs]
    except Exception:  # noqa: BLE001  the reference evaluator lacks some ops and types: fall back to the rules
        return None


def _as_array(value) -> np.ndarray:
    """numpy turns a lone symbol picked out of an object array into a str; keep it an object array."""
    array = np.asarray(value)
    return array.astype(object) if array.dtype.kind in "USO" else array


def _input_type(graph: Graph, value: str) -> TensorType | None:
    return graph.values[value].type if value else None


def _input_value(graph: Graph, known: dict[str, np.ndarray], value: str) -> np.ndarray | None:
    if not value:
        return None
    data = graph.const_data(value)
    return data if data is not None else known.get(value)


def _assign(graph: Graph, node: Node, out_types: list[TensorType]) -> bool:
    """Set the outputs' types; whether any of them changed."""
    changed = False
    for name, inferred in zip(node.outputs, out_types):
        if not name:
            continue
        value = graph.values[name]
        if name in graph.outputs:
            _check_declared(node, name, value.type, inferred)
        changed |= value.type != inferred
        value.type = inferred
    return changed


def _check_declared(node: Node, name: str, declared: TensorType, inferred: TensorType) -> None:
    """A model's declared output type must agree with what its graph computes."""
    if declared.dtype is not None and inferred.dtype is not None and declared.dtype != inferred.dtype:
        raise ShapeError(f"output {name!r} is declared {declared.dtype} but {node.name} computes {inferred.dtype}")
    if declared.shape is None or inferred.shape is None:
        return
    if len(declared.shape) != len(inferred.shape) or any(
            isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(declared.shape, inferred.shape)):
        raise ShapeError(f"output {name!r} is declared {declared} but the graph computes {inferred}; "
                         "check the input shapes")
