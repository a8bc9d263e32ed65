"""Fuse decomposed scaled dot-product attention into ONNX ``Attention`` (opset 23).

Exporters write ``Softmax(scale * Q @ K^T + mask) @ V`` in many spellings: the scale on the
scores, or ``sqrt(scale)`` on Q and K each, or a Div by ``sqrt(d)``; a Where(IsNaN) that
zeroes fully masked rows (onnxruntime's Attention returns zeros there too); Casts around an
fp32 Softmax; and grouped-query heads repeated by HF's ``repeat_kv`` (Unsqueeze, Expand,
Reshape) before the MatMuls. The fused op takes K and V with their own ``kv_num_heads``.

Rather than pattern-matching each exporter's Reshape/Transpose idiom, the K and V operands
are traced back through movement ops and *checked on indices*: the movement chain applied
to ``arange`` must equal "repeat heads, then transpose" exactly, which proves the rewrite.
This needs static shapes (bind input shapes at load time); the pass declares it, so the
pass manager says so instead of letting it find nothing.

A constant mask equal to the standard causal mask becomes ``is_causal=1``; an all-zero
constant mask disappears; any other mask is passed as ``attn_mask``.
"""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from ...export import attribute_proto
from ...graph import Graph, Node
from ...ops import moves_elements
from ...types import TensorType
from ..manager import STATIC_SHAPES, graph_pass
from .pattern import add_constant_like, operands, private, producer_of, product, replace_with, rewrite, scalar, skip

MASKED = -1e4
"""Mask entries at or below this are "masked": exp underflows to 0 in fp16 and fp32 for any
realistic score, so -inf, finfo.min and BERT/GPT-2's -10000 all mean the same."""

TRACE_LIMIT = 1 << 28
"""Most elements a K/V layout is traced over: the proof holds index maps of that many int64s
(a few GiB). Beyond it (a prefill of hundreds of thousands of tokens, or a hostile input
shape) attention stays unfused rather than the pass allocating without bound."""

IDENTITY = (0, 1, 2, 3)
PERMS = [IDENTITY] + [p for p in itertools.permutations(range(4)) if p != IDENTITY]


@graph_pass("fuse-attention", requires=(STATIC_SHAPES,))
def fuse_attention(graph: Graph) -> bool:
    return rewrite(graph, [_fuse])


def _fuse(graph: Graph, root: Node) -> bool:
    """Fuse the attention whose last op is ``root = MatMul(probabilities, V')``."""
    if root.op_type != "MatMul" or root.domain:
        return False
    softmax, core = _probabilities(graph, root.inputs[0])
    if softmax is None:
        return False
    precision_casts = [n for n in core if n.op_type == "Cast"]
    scores = _scores(graph, skip(graph, softmax.inputs[0])[0])
    if scores is None:
        return False
    scale, matmul, masks, score_ops = scores
    if not private(graph, [*core, *score_ops], root):
        return False
    (q_scale, q_leaf, q_ops), (k_scale, k_leaf, k_ops) = (_scaled(graph, v) for v in matmul.inputs)
    q = _source(graph, q_leaf, heads=None, transposed=False)
    if q is None:
        return False
    heads = graph.type_of(q_leaf).shape[1]
    k, v = _source(graph, k_leaf, heads, transposed=True), _source(graph, root.inputs[1], heads, transposed=False)
    if k is None or v is None or k[1] != v[1]:  # K and V must share their kv_num_heads
        return False
    scores_shape = graph.type_of(matmul.outputs[0]).shape
    mask = _mask(graph, masks, scores_shape, graph.type_of(q_leaf).dtype)
    if mask is None:
        return False
    attrs = {"scale": float(scale * q_scale * k_scale), "q_num_heads": heads, "kv_num_heads": heads // k[1]}
    attrs.update(mask[1])
    if precision_casts:
        attrs["softmax_precision"] = graph.type_of(softmax.outputs[0]).dtype.onnx
    inputs = [_transposed(graph, *q[0]), _transposed(graph, *k[0]), _transposed(graph, *v[0])]
    if mask[0]:
        inputs.append(mask[0])
    replace_with(graph, [root, *core, *score_ops, *q_ops, *k_ops], "Attention", inputs, attrs, root=root)
    return True


def _probabilities(graph: Graph, value: str) -> tuple[Node | None, list[Node]]:
    """The Softmax (over the last axis) behind ``value``, through Where(IsNaN(p), 0, p) and Casts."""
    ops = []
    where = producer_of(graph, value, "Where")
    if where is not None:
        isnan = producer_of(graph, where.inputs[0], "IsNaN")
        if isnan is None or isnan.inputs[0] != where.inputs[2] or scalar(graph, where.inputs[1]) != 0.0:
            return None, []
        ops, value = [where, isnan], where.inputs[2]
    value, casts = skip(graph, value)
    softmax = producer_of(graph, value, "Softmax", single_use=not ops)
    if softmax is None or graph.type_of(value).rank is None \
            or softmax.attr("axis", -1) % graph.type_of(value).rank != graph.type_of(value).rank - 1:
        return None, []
    _, input_casts = skip(graph, softmax.inputs[0])
    return softmax, [*ops, *casts, softmax, *input_casts]


def _scores(graph: Graph, value: str) -> tuple[float, Node, list[str], list[Node]] | None:
    """(scale, the Q @ K^T MatMul, additive masks, ops) for ``value = scale * (Q @ K^T) + masks``."""
    matmul = producer_of(graph, value, "MatMul")
    if matmul is not None:
        return 1.0, matmul, [], [matmul]
    add = producer_of(graph, value, "Add")
    if add is not None:
        for this, mask in operands(add):
            inner = _scores(graph, this)
            if inner is not None and graph.type_of(value).shape == graph.type_of(this).shape:
                return inner[0], inner[1], [*inner[2], mask], [add, *inner[3]]
        return None
    scale, leaves, ops = product(graph, value)
    inner = _scores(graph, leaves[0]) if ops and len(leaves) == 1 else None
    if inner is None or inner[2]:  # a scale applied after the mask would scale the mask too
        return None
    return scale * inner[0], inner[1], [], [*ops, *inner[3]]


def _scaled(graph: Graph, value: str) -> tuple[float, str, list[Node]]:
    """``value`` as (scale, tensor, ops): sqrt(scale) factors exporters put on Q and K."""
    scale, leaves, ops = product(graph, value)
    return (scale, leaves[0], ops) if len(leaves) == 1 else (1.0, value, [])


def _source(graph: Graph, value: str, heads: int | None, transposed: bool):
    """A 4-D tensor behind ``value`` and how to read it as Attention's ``[B, H, S, D]`` operand.

    Walks back through movement ops and returns ((tensor, perm), repeat) for the candidate
    whose layout ``transpose(tensor, perm)`` reproduces ``value`` exactly after repeating
    its heads ``repeat`` times to ``heads`` (and swapping the last two axes for K^T).
    Prefers absorbing the head repeat, then no transpose, then the earliest tensor.
    """
    values, ops = _movement_chain(graph, value)
    target = graph.type_of(value)
    if not target.is_static or math.prod(target.shape) > TRACE_LIMIT:
        return None
    best, best_key = None, None
    for distance, candidate in enumerate(values):
        t = graph.type_of(candidate)
        if not t.is_static or len(t.shape) != 4:
            continue
        moved = None
        for perm in PERMS:
            shape = [t.shape[p] for p in perm]
            repeat = 1 if heads is None else heads // shape[1] if shape[1] and heads % shape[1] == 0 else 0
            if not repeat:
                continue
            shape[1] *= repeat
            if transposed:
                shape[2], shape[3] = shape[3], shape[2]
            if tuple(shape) != target.shape:
                continue
            try:
                moved = _index_map(graph, list(reversed(ops[:distance])), candidate) if moved is None else moved
            except MemoryError:  # under TRACE_LIMIT but more than this machine has: not provable here
                return None
            if moved is None or not np.array_equal(moved, _layout(tuple(t.shape), perm, repeat, transposed)):
                continue
            key = (repeat, perm == IDENTITY, distance)
            if best_key is None or key > best_key:
                best, best_key = ((candidate, perm), repeat), key
    return best


@functools.lru_cache(maxsize=256)
def _layout(shape: tuple, perm: tuple, repeat: int, transposed: bool) -> np.ndarray:
    """Index map of Attention's reading of a tensor: transpose, repeat heads, maybe swap S and D."""
    expected = np.repeat(np.arange(int(np.prod(shape))).reshape(shape).transpose(perm), repeat, axis=1)
    expected = expected.swapaxes(2, 3) if transposed else expected
    expected.flags.writeable = False
    return expected


def _movement_chain(graph: Graph, value: str) -> tuple[list[str], list[Node]]:
    """[value, its movement op's input, ...] and the ops between them (nearest first): ops that only
    move elements (``ir.ops.moves_elements``), so a chain of them is identified exactly by where arange goes."""
    values, ops = [value], []
    while (node := graph.producer(values[-1])) is not None and moves_elements(node) \
            and all(graph.const_data(v) is not None for v in node.inputs[1:] if v):
        ops.append(node)
        values.append(node.inputs[0])
    return values, ops


def _index_map(graph: Graph, ops: list[Node], source: str) -> np.ndarray | None:
    """Where each element of the chain's result comes from: ``ops`` run on arange over ``source``.

    Every layer of a model repeats the same chain, so traces are memoized by structure
    (op types, attributes, constant contents, source shape), not by value names.
    """
    shape = tuple(graph.type_of(source).shape)
    signature = tuple(
        (op.op_type, tuple(sorted((k, _frozen(v)) for k, v in op.attrs.items())),
         tuple(_frozen(np.asarray(graph.const_data(v))) for v in op.inputs[1:] if v))
        for op in ops)
    return _trace(shape, signature, graph.opset)


def _frozen(value):
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    return tuple(value) if isinstance(value, list) else value


@functools.lru_cache(maxsize=256)
def _trace(shape: tuple, signature: tuple, opset: int) -> np.ndarray:
    iota = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if not signature:
        return iota
    nodes, consts, current = [], [], "x0"
    for i, (op_type, attrs, arrays) in enumerate(signature):
        names = []
        for j, (_, dtype, dims, raw) in enumerate(arrays):
            names.append(f"c{i}_{j}")
            consts.append(numpy_helper.from_array(np.frombuffer(raw, dtype=dtype).reshape(dims), names[-1]))
        node = Node(f"n{i}", op_type, [current, *names], [f"x{i + 1}"], {k: _thawed(v) for k, v in attrs})
        proto = helper.make_node(op_type, node.inputs, node.outputs)
        proto.attribute.extend(attribute_proto(node, k, v, opset) for k, v in node.attrs.items())
        nodes.append(proto)
        current = node.outputs[0]
    model = helper.make_model(
        helper.make_graph(nodes, "trace", [helper.make_tensor_value_info("x0", onnx.TensorProto.INT64, shape)],
                          [helper.make_value_info(current, onnx.TypeProto())], consts),
        opset_imports=[helper.make_opsetid("", opset)])
    result = np.asarray(ReferenceEvaluator(model).run(None, {"x0": iota})[0])
    result.flags.writeable = False
    return result


def _thawed(value):
    if isinstance(value, tuple) and value and value[0] == "array":
        _, dtype, dims, raw = value
        return np.frombuffer(raw, dtype=dtype).reshape(dims)
    return list(value) if isinstance(value, tuple) else value


def _mask(graph: Graph, masks: list[str], scores_shape: tuple, dtype) -> tuple[str, dict] | None:
    """(attn_mask value or "", extra attrs) for the additive ``masks``; None if unsupported.

    onnxruntime wants the mask's last two dims to be (Sq, Skv) exactly, so it is broadcast.
    """
    if not masks:
        return "", {}
    if len(masks) > 1 or graph.type_of(masks[0]).dtype != dtype or not graph.type_of(masks[0]).is_static:
        return None
    mask = masks[0]
    shape = graph.type_of(mask).shape
    if len(shape) > 4:
        return None
    full = tuple((1,) * (2 - len(shape)) + shape[:-2]) + tuple(scores_shape[-2:])
    data = graph.const_data(mask)
    if data is None:
        if tuple(shape) == full:
            return mask, {}
        target = graph.add_constant(np.array(full, dtype=np.int64), "mask_shape")
        node = graph.add_node("Expand", [mask, target])
        graph.values[node.outputs[0]].type = TensorType(dtype, full)
        return node.outputs[0], {}
    data = np.broadcast_to(data, full)
    if not np.any(data):
        return "", {}
    if _is_causal(data):
        return "", {"is_causal": 1}
    return mask if tuple(shape) == full else add_constant_like(graph, np.ascontiguousarray(data), mask, "attn_mask"), {}


def _is_causal(mask: np.ndarray) -> bool:
    """0 on and below the diagonal, masked above it (square: no KV cache)."""
    sq, skv = mask.shape[-2:]
    keep = np.tril(np.ones((sq, skv), dtype=bool))
    return sq == skv and np.all(mask[..., keep] == 0) and np.all(mask[..., ~keep] <= MASKED)


def _transposed(graph: Graph, value: str, perm: tuple[int, ...]) -> str:
    """``Transpose(value, perm)``, merged into a Transpose that produces ``value``."""
    if perm == IDENTITY:
        return value
    inner = graph.producer(value)
    if inner is not None and inner.op_type == "Transpose" and not inner.domain and inner.attr("perm") is not None:
        value, perm = inner.inputs[0], tuple(inner.attr("perm")[p] for p in perm)
    if perm == tuple(range(len(perm))):
        return value
    t = graph.type_of(value)
    node = graph.add_node("Transpose", [value], 1, {"perm": list(perm)})
    graph.values[node.outputs[0]].type = TensorType(t.dtype, tuple(t.shape[p] for p in perm))
    return node.outputs[0]
