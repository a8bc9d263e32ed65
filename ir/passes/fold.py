"""Constant folding.

Two sources of constants:

- shape arithmetic that symbolic shape inference fully resolved (``Shape`` of a static
  tensor, a comparison a dim symbol decides, and everything computed from them);
- ops whose inputs are all constants. These are evaluated by onnx's reference
  implementation (``ir.reference``), the whole constant subgraph at once (one op at a time
  only if that fails), never by a hand-written interpreter.

Folding never undoes a format: a weight stored in a narrow type and decoded by a
DequantizeLinear or a widening Cast stays stored that way (``ir.passes.quantize`` put it there).

Folding never grows the model much: an op whose result is far larger than its inputs (an
Expand or ConstantOfShape of a big shape) stays an op.

Shape operands that hold symbols (a Reshape to ``[batch, seq, 4, 16]``) become constants too
where ONNX can say the same thing without the symbols: ``[0, 0, 4, 16]`` copies dims from the
input, Expand's 1 keeps an input dim, a slice end past the dim means "to the end". The shape
arithmetic that computed them then dies.
"""

from __future__ import annotations

import numpy as np

from .. import ops, symbolic
from ..graph import Graph, Node
from ..ops.quant import decodes_stored_weight
from ..reference import run_nodes
from ..types import TensorType
from .dce import eliminate_dead_code
from .manager import Sequence, graph_pass
from .shape_inference import symbolic_values

MAX_GROWTH_BYTES = 1 << 20
"""A folded result may exceed its inputs' size by at most this much (1 MiB)."""


@graph_pass("fold")
def fold(graph: Graph) -> bool:
    """Replace every op whose result is known at compile time by a constant (the ops that
    computed it are left for dead-code elimination)."""
    changed = False
    known = symbolic_values(graph)
    batch: list[Node] = []
    pending: dict[str, int] = {}  # outputs of ops in the batch -> bytes of the constants they come from
    for node in graph.nodes:
        outs = [o for o in node.outputs if o]
        if not outs or node.domain or not ops.lookup(node.op_type).deterministic or decodes_stored_weight(graph, node):
            continue
        source = _foldable(graph, node, pending)
        if source is not None:
            batch.append(node)
            pending.update((o, source) for o in outs)
            continue
        resolved = [_concrete(known.get(o), graph.values[o].type) for o in outs]
        if all(r is not None for r in resolved):
            for name, data in zip(outs, resolved):
                graph.make_constant(name, data)
            changed = True
        elif node.op_type in SYMBOLIC_OPERANDS:
            changed |= _replace_symbolic_operand(graph, node, known)
    if batch:
        for name, data in _run(graph, batch).items():
            graph.make_constant(name, data)
            changed = True
    return changed


fold_constants = Sequence("fold-constants", [fold, eliminate_dead_code])
"""Fold, then drop the ops and constants the folded values no longer need."""


def _reshape_target(graph: Graph, node: Node, target: np.ndarray) -> np.ndarray | None:
    """0 where the target repeats the input's dim, -1 for at most one other symbol.

    Under ``allowzero`` a 0 would mean an empty dim, so that is switched off, which only a
    target without literal zeros allows.
    """
    if node.attrs.get("allowzero", 0) and any(symbolic.is_int(d) and d == 0 for d in target):
        return None
    in_shape = graph.values[node.inputs[0]].type.shape or ()
    out = [int(d) if symbolic.is_int(d) else 0 if i < len(in_shape) and in_shape[i] == d else -1
           for i, d in enumerate(target)]
    if out.count(-1) > 1:
        return None
    node.attrs.pop("allowzero", None)
    return np.array(out, np.int64)


def _expand_shape(graph: Graph, node: Node, shape: np.ndarray) -> np.ndarray | None:
    """1 where the (right-aligned) target repeats the input's dim."""
    in_shape = graph.values[node.inputs[0]].type.shape
    if in_shape is None:
        return None
    offset = len(shape) - len(in_shape)
    out = [int(d) if symbolic.is_int(d) else 1 if i >= offset and in_shape[i - offset] == d else None
           for i, d in enumerate(shape)]
    return None if None in out else np.array(out, np.int64)


def _slice_ends(graph: Graph, node: Node, ends: np.ndarray) -> np.ndarray | None:
    """An end equal to the sliced dim (with forward steps) means "to the end"."""
    shape = graph.values[node.inputs[0]].type.shape
    axes = _optional_operand(graph, node, 3, np.arange(len(ends)))
    steps = _optional_operand(graph, node, 4, np.ones(len(ends), np.int64))
    if shape is None or axes is None or steps is None or np.any(steps <= 0):
        return None
    out = [int(e) if symbolic.is_int(e) else np.iinfo(np.int64).max if shape[a] == e else None
           for e, a in zip(ends, axes)]
    return None if None in out else np.array(out, np.int64)


def _optional_operand(graph: Graph, node: Node, index: int, default: np.ndarray) -> np.ndarray | None:
    """A constant input's contents, ``default`` when the input is absent, None when it is not constant."""
    if len(node.inputs) <= index or not node.inputs[index]:
        return default
    return graph.const_data(node.inputs[index])


SYMBOLIC_OPERANDS = {"Reshape": (1, _reshape_target), "Expand": (1, _expand_shape), "Slice": (2, _slice_ends)}
"""op -> (input index, rewrite of its symbolic contents into a constant, or None; a rewrite may
adjust the op's attributes to keep its meaning)."""


def _replace_symbolic_operand(graph: Graph, node: Node, known: dict[str, np.ndarray]) -> bool:
    index, rewrite = SYMBOLIC_OPERANDS[node.op_type]
    value = known.get(node.inputs[index]) if len(node.inputs) > index else None
    if value is None or symbolic.is_concrete(value) or value.ndim != 1:
        return False
    data = rewrite(graph, node, value)
    if data is None:
        return False
    graph.set_input(node, index, graph.add_constant(data, f"{node.name}_operand"))
    return True


def _concrete(value: np.ndarray | None, t: TensorType) -> np.ndarray | None:
    """A symbolically computed value, if it holds no symbols, in the value's dtype."""
    if value is None or t.dtype is None or not symbolic.is_concrete(value):
        return None
    return np.asarray(value.astype(np.int64) if value.dtype == object else value).astype(t.dtype.numpy)


def _foldable(graph: Graph, node: Node, pending: dict[str, int]) -> int | None:
    """Bytes of the stored constants the op's result derives from, if it may be folded: all
    inputs are constants with contents (or folded results), and the result is at most
    MAX_GROWTH_BYTES bigger than those constants (so a chain of ops cannot grow step by step)."""
    inputs = [v for v in node.inputs if v]
    if not all(v in pending or graph.const_data(v) is not None for v in inputs):
        return None
    source = sum(pending[v] if v in pending else graph.const_data(v).nbytes for v in inputs)
    out_bytes = [graph.values[o].type.nbytes for o in node.outputs if o]
    return source if None not in out_bytes and sum(out_bytes) <= source + MAX_GROWTH_BYTES else None


def _run(graph: Graph, batch: list[Node]) -> dict[str, np.ndarray]:
    """Results of the batch's ops that anything outside the batch reads."""
    in_batch = {n.name for n in batch}
    wanted = [o for n in batch for o in n.outputs if o and (
        o in graph.outputs or any(c.name not in in_batch for c, _ in graph.consumers(o)))]
    if not wanted:
        return {}
    try:
        return _evaluate(graph, batch, wanted)
    except Exception:  # noqa: BLE001  one op the evaluator cannot run must not stop the others folding
        results: dict[str, np.ndarray] = {}
        for node in batch:
            if all(v in results or graph.const_data(v) is not None for v in node.inputs if v):
                try:
                    results.update(_evaluate(graph, [node], [o for o in node.outputs if o], results))
                except Exception:  # noqa: BLE001
                    continue
        return {name: results[name] for name in wanted if name in results}


def _evaluate(graph: Graph, nodes: list[Node], wanted: list[str],
                     computed: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Run ``nodes`` with onnx's reference implementation over the constants they read (or ``computed``)."""
    computed = computed or {}
    produced = {o for n in nodes for o in n.outputs}
    reads = {v for n in nodes for v in n.inputs if v and v not in produced}
    feeds = {v: np.asarray(computed.get(v, graph.const_data(v))) for v in sorted(reads)}
    return run_nodes(nodes, feeds, wanted, graph.opset)
