"""A generation step over a preallocated KV cache that is written in place.

ONNX's ``past_key``/``present_key`` form (what :class:`~.decode.DecodeStep` derives and
exporters write) returns ``present = concat(past, new)``: a cache that grows by a copy every
step, and a new shape every step. A runtime instead binds one buffer of ``capacity``
positions per layer and writes each step's keys and values into it: ONNX opset 24 spells
that ``TensorScatter`` (the new keys written at the past length) feeding ``Attention`` with
``nonpad_kv_seqlen`` (how many cache positions hold keys). :class:`InPlaceKVCache` rewrites a
step graph into that form:

- inputs: the step's tokens, ``past_length`` (int64 scalar: positions already cached) and
  ``cache.{i}.key`` / ``cache.{i}.value`` ``[batch, kv_heads, capacity, head_dim]``, which the
  graph declares donated (``ir.graph.DONATED``), so code generation updates them in
  place and nothing copies a cache;
- outputs: the logits only;
- what read the past's length from a cache input's shape reads ``past_length``;
- a mask cut to the visible keys (``Slice`` up to past + step) reads its whole row instead:
  keys at or past the valid length are masked by ``nonpad_kv_seqlen``.

Shapes are static for every past length, so one compiled step serves the whole generation.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..graph import DONATED, Graph, Node
from ..types import TensorType
from .decode import DecodeError, kv_heads, token_input
from .manager import Pass, PassResult
from .shape_inference import infer_shapes

PAST_LENGTH = "past_length"
CACHE_OPSET = 24
"""TensorScatter and Attention's nonpad_kv_seqlen are opset 24."""


def cache_input_names(layer: int) -> tuple[str, str]:
    return f"cache.{layer}.key", f"cache.{layer}.value"


class InPlaceKVCache(Pass):
    """Rewrite a step graph (Attention with present outputs, maybe past inputs) to write its
    keys and values into donated cache buffers of ``capacity`` positions."""

    name = "kv-cache-in-place"

    def __init__(self, capacity: int):
        self.capacity = capacity

    def run(self, graph: Graph) -> PassResult:
        attentions = [n for n in graph.nodes if n.op_type == "Attention" and not n.domain
                      and len(n.outputs) > 2 and n.outputs[1] and n.outputs[2]]
        if not attentions:
            raise DecodeError(f"{graph.name}: no Attention returns its keys and values (derive the step first)")
        ids = token_input(graph)
        batch, step = graph.type_of(ids).shape
        past = graph.add_input(PAST_LENGTH, TensorType(DType.INT64, ())).name
        writes = _op(graph, "Expand", [_op(graph, "Unsqueeze", [past, _const(graph, [0])]), _const(graph, [batch])])
        valid = _op(graph, "Add", [writes, _const(graph, [step])])
        cached = [v for n in attentions for v in n.inputs[4:6] if v]
        for value in cached:
            self._replace_shape_reads(graph, value, past)
        self.cuts: set[str] = set()
        for layer, node in enumerate(attentions):
            self._layer(graph, node, layer, writes, valid, batch)
        for name in self.cuts:  # their bound is the past length: no shape may depend on it
            if not graph.num_uses(graph.node(name).outputs[0]):
                graph.remove_node(graph.node(name))
        graph.outputs = [o for o in graph.outputs if o not in {v for n in attentions for v in n.outputs[1:3]}]
        for value in cached:
            graph.remove_value(value)
        graph.opsets[""] = max(graph.opset, CACHE_OPSET)
        graph.metadata[DONATED] = ",".join(v for i in range(len(attentions)) for v in cache_input_names(i))
        graph.metadata["decode.capacity"] = str(self.capacity)
        return PassResult(infer_shapes(graph), True)

    def _replace_shape_reads(self, graph: Graph, value: str, past: str) -> None:
        """Shape(cache input)[start:end] becomes the same slice of [batch, heads, past_length, dim]."""
        shape = graph.type_of(value).shape
        for node, _ in list(graph.consumers(value)):
            if node.op_type == "Attention":
                continue
            if node.op_type != "Shape":
                raise DecodeError(f"{node.name} ({node.op_type}) reads the cache input {value!r}; only Attention "
                                  "and Shape may")
            parts = [_const(graph, [d]) if isinstance(d, int) else
                     _op(graph, "Unsqueeze", [past, _const(graph, [0])]) for d in shape]
            full = _op(graph, "Concat", parts, axis=0)
            start, end = node.attr("start", 0), node.attr("end", len(shape))
            sliced = _op(graph, "Slice", [full, _const(graph, [start]), _const(graph, [end])])
            graph.replace_uses(node.outputs[0], sliced)
            graph.remove_node(node)

    def _layer(self, graph: Graph, node: Node, layer: int, writes: str, valid: str, batch: int) -> None:
        inputs = list(node.inputs) + [""] * (6 - len(node.inputs))
        q, k, v, mask = inputs[:4]
        caches = []
        for name, new in zip(cache_input_names(layer), (k, v)):
            _, heads, _, dim = kv_heads(graph, node, new)
            graph.add_input(name, TensorType(graph.type_of(new).dtype, (batch, heads, self.capacity, dim)))
            caches.append(_op(graph, "TensorScatter", [name, _as_4d(graph, node, new), writes], axis=2))
        if mask:
            mask = self._mask_row(graph, node, mask)
        q = _as_4d(graph, node, q, query=True) if len(graph.type_of(q).shape) == 3 else q
        outputs = [graph.fresh_name(f"{node.outputs[0]}_4d") if q != node.inputs[0] else node.outputs[0]]
        attrs = dict(node.attrs)
        graph.remove_node(node, drop_outputs=False)
        for present in node.outputs[1:3]:
            graph.values.pop(present, None)
        graph.add_node("Attention", [q, *caches, mask, "", "", valid], outputs, attrs, name=node.name)
        if outputs[0] != node.outputs[0]:  # back to the 3-D [batch, seq, heads * dim] the graph reads
            y = graph.type_of(node.outputs[0]).shape
            t = _op(graph, "Transpose", [outputs[0]], perm=[0, 2, 1, 3])
            graph.add_node("Reshape", [t, _const(graph, list(y))], [node.outputs[0]])

    def _mask_row(self, graph: Graph, node: Node, mask: str) -> str:
        """The mask over the whole cache: a Slice to the visible keys is read past its end."""
        producer = graph.producer(mask)
        if producer is not None and producer.op_type == "Slice":
            mask = producer.inputs[0]
            self.cuts.add(producer.name)
        width = graph.type_of(mask).shape[-1]
        if width != self.capacity:
            raise DecodeError(f"{node.name}: its mask covers {width} keys, not the cache's {self.capacity}")
        return mask


def _as_4d(graph: Graph, node: Node, value: str, query: bool = False) -> str:
    """[batch, heads, seq, dim] of a 3-D [batch, seq, heads * dim] Attention operand (4-D as is)."""
    shape = graph.type_of(value).shape
    if len(shape) == 4:
        return value
    heads = node.attr("q_num_heads" if query else "kv_num_heads")
    split = _op(graph, "Reshape", [value, _const(graph, [shape[0], shape[1], heads, shape[2] // heads])])
    return _op(graph, "Transpose", [split], perm=[0, 2, 1, 3])


def _const(graph: Graph, values) -> str:
    return graph.add_constant(np.array(values, dtype=np.int64), "kv")


def _op(graph: Graph, op_type: str, inputs: list[str], **attrs) -> str:
    return graph.add_node(op_type, inputs, 1, attrs).outputs[0]
