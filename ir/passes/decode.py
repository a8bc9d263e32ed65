"""Derive the steps of autoregressive generation from a prefill-only decoder graph.

A decoder exported without a cache computes ``input_ids[batch, S] -> logits`` in one pass.
Generation needs two graphs of that one model: the *prefill* over the prompt, which also
returns the keys and values it produced, and the *decode step*, which takes the cached
keys and values of every earlier position and one new token (or a chunk). Both come from
the same fused prefill graph, bound at a sequence length ``S`` (the longest context they
will serve), by :class:`DecodeStep`:

- the sequence axis becomes the step length: ``input_ids[batch, step]``. The pass walks the
  ops in order and re-infers each output's type from its inputs'; which axes changed
  length says where the sequence runs, so a Reshape's target is re-spelled on the axis that
  holds the sequence (not on a dim that merely has the same size);
- constants with a sequence axis are tables over positions 0..S-1 (rotary cos/sin, learned
  position embeddings, masks): rotary gets them through ``RotaryEmbedding``'s own
  ``position_ids`` operand, other tables are gathered at the step's positions, an attention
  mask's rows at the query positions and its columns up to the keys there are;
- with ``past=True``, each fused ``Attention`` gains ONNX's ``past_key``/``past_value`` inputs
  (graph inputs ``past_key_values.{i}.key``/``.value``, ``[batch, kv_heads, past, head_dim]``,
  as transformers/optimum exports name them) and ``present_key``/``present_value`` outputs
  (graph outputs ``present.{i}.key``/``.value``, ``[batch, kv_heads, past + step, head_dim]``);
  positions start at the past length, read from the first cache input's shape as exports do;
- with ``past=False`` (the prefill graph) the Attention ops only gain the present outputs:
  the keys and values of the prompt.

Decoder graphs outside this form are refused with the reason: no fused Attention, an op
that reads the sequence in a way the pass does not re-spell (a Slice along it, a mask
computed at run time), a table shorter than its sequence axis.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..dtypes import DType
from ..errors import XpucError
from ..graph import Graph, Node
from ..ops import Pattern
from ..types import TensorType
from .manager import STATIC_SHAPES, Pass, PassResult, Requirement
from .shape_inference import infer_node

MASKED = -1e4
"""An additive mask entry at or below this hides its key (as in attention fusion)."""
PAST = "past"
"""The dim symbol of the cached length in a decode step's cache inputs."""

FUSED_ATTENTION = Requirement("fused attention", lambda g: any(n.op_type == "Attention" for n in g.nodes),
                              "optimize the graph with its input shapes bound, so attention is fused")


class DecodeError(XpucError):
    """A graph the decode-step derivation cannot handle (not a decoder, or not in fused form)."""


CACHE_INPUT_PREFIX = "past_key_values."
"""What the names of a decoder's KV-cache inputs start with (transformers/optimum exports)."""


def cache_names(layer: int, past: bool) -> tuple[str, str]:
    """Names of a layer's key and value cache values, as transformers/optimum exports call them."""
    return (f"{CACHE_INPUT_PREFIX}{layer}.key", f"{CACHE_INPUT_PREFIX}{layer}.value") if past else \
        (f"present.{layer}.key", f"present.{layer}.value")


def token_input(graph: Graph) -> str:
    """The ``input_ids`` input of a decoder graph: its one int64 ``[batch, seq]`` input."""
    found = [n for n in graph.inputs
             if graph.type_of(n).dtype is DType.INT64 and graph.type_of(n).rank == 2]
    if len(found) != 1 or len(graph.outputs) < 1:
        raise DecodeError(f"{graph.name}: not a decoder graph: it needs one int64 [batch, seq] token input "
                          f"(inputs: {', '.join(graph.inputs) or 'none'})")
    return found[0]


class DecodeStep(Pass):
    """Turn a fused prefill graph bound at ``[batch, S]`` into a step of ``step`` tokens:
    after a cache of ``past`` positions (``past=True``), or the first step (``past=False``,
    the prefill, which returns its keys and values). Valid for positions below ``S``."""

    requires = (STATIC_SHAPES, FUSED_ATTENTION)

    def __init__(self, step: int = 1, past: bool = True):
        self.step, self.past = step, past
        self.name = "derive-decode-step" if past else "derive-prefill-step"

    def run(self, graph: Graph) -> PassResult:
        _Respecialize(graph, self.step, self.past).run()
        return PassResult(graph, True)


derive_decode_step = DecodeStep()


class _Respecialize:
    def __init__(self, graph: Graph, step: int, past: bool):
        self.g, self.step, self.past = graph, step, past
        self.ids = token_input(graph)
        self.batch, self.capacity = graph.type_of(self.ids).shape
        if not isinstance(step, int) or step < 1 or (not past and step > self.capacity):
            raise DecodeError(f"step length must be 1..{self.capacity} tokens, got {step!r}")
        self.old = {name: v.type for name, v in graph.values.items()}
        self.known: dict[str, np.ndarray] = {}
        self.attentions = [n for n in graph.nodes if n.op_type == "Attention" and not n.domain]
        if not self.attentions:
            raise DecodeError(f"{graph.name}: no fused Attention to give a KV cache (a state-space model "
                              "carries its state, not keys and values; a decomposed one needs its shapes bound "
                              "and the optimizer run)")
        self._memo: dict[tuple, str] = {}
        for node in self.attentions:
            if not _causal(graph, node):
                raise DecodeError(f"{graph.name}: {node.name} lets positions see later ones (no causal mask): "
                                  "not a decoder")

    # ------------------------------------------------------------------ driver
    def run(self) -> None:
        g = self.g
        if any(len(n.inputs) > 4 and any(n.inputs[4:6]) for n in self.attentions):
            raise DecodeError(f"{g.name}: its attention already reads a KV cache")
        self.caches = [self._cache_inputs(i, n) for i, n in enumerate(self.attentions)] if self.past else []
        g.values[self.ids].type = TensorType(DType.INT64, (self.batch, self.step))
        for name in g.outputs:
            g.values[name].type = TensorType(g.values[name].type.dtype, None)
        for node in list(g.nodes):
            if node.name not in g.nx:
                continue
            if any(v and self._changed(v) for v in node.inputs) or node in self.attentions:
                node = self._rewrite(node)
            infer_node(g, node, self.known)
        self._check_logits()
        g.metadata["decode.max_positions"] = str(self.capacity)

    def _rewrite(self, node: Node) -> Node:
        if node.op_type == "Attention" and not node.domain:
            return self._attention(node)
        if node.op_type == "RotaryEmbedding" and not node.domain:
            self._rotary(node)
        elif node.op_type in ("Reshape", "Expand") and not node.domain:
            self._shape_operand(node)
        else:
            opdef = ops.lookup(node.op_type, node.domain)
            if opdef.pattern in (Pattern.ELEMENTWISE, Pattern.BROADCAST):
                self._tables(node)
        return node

    def _check_logits(self) -> None:
        """The logits keep their batch and vocabulary and run over the step's tokens."""
        name = self.g.outputs[0]
        old, new = self.old[name].shape, self.g.type_of(name).shape
        want = (self.batch, self.step, *old[2:]) if old and len(old) >= 2 else None
        if want is None or tuple(new or ()) != want:
            raise DecodeError(f"{self.g.name}: the step's logits came out {new}, not {want}: an op reads the "
                              "sequence in a way the decode-step derivation does not re-spell")

    # ---------------------------------------------------------------- facts
    def _changed(self, value: str) -> bool:
        old = self.old.get(value)
        return old is not None and old.shape != self.g.type_of(value).shape

    def _changed_axes(self, value: str) -> dict[int, tuple[int, int]]:
        """Axes of ``value`` whose length changed: axis -> (old length, new length)."""
        old, new = self.old[value].shape, self.g.type_of(value).shape
        return {a: (o, n) for a, (o, n) in enumerate(zip(old, new)) if o != n}

    def _const(self, data, hint: str) -> str:
        """A constant, one per distinct content."""
        array = np.asarray(data)
        return self._once(("const", array.dtype.str, array.shape, array.tobytes()),
                          lambda: self.g.add_constant(array, hint))

    def _op(self, op_type: str, inputs: list[str], hint: str, **attrs) -> str:
        node = self.g.add_node(op_type, inputs, 1, attrs, name=hint)
        infer_node(self.g, node, self.known)
        return node.outputs[0]

    def _once(self, key: tuple, make) -> str:
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    # ------------------------------------------------------------ positions
    def _cache_inputs(self, layer: int, node: Node) -> tuple[str, str]:
        names = cache_names(layer, past=True)
        for name, operand in zip(names, (node.inputs[1], node.inputs[2])):
            b, heads, _, dim = kv_heads(self.g, node, operand)
            self.g.add_input(name, TensorType(self.g.type_of(operand).dtype, (b, heads, PAST, dim)))
        return names

    @property
    def past_length(self) -> str:
        """The cached length, a scalar read from the first cache input's shape (as exports do)."""
        return self._once(("past",), lambda: self._op(
            "Squeeze", [self._op("Shape", [self.caches[0][0]], "past_shape", start=2, end=3),
                        self._const(np.array([0]), "axis0")], "past_length"))

    @property
    def positions(self) -> str:
        """[step] int64: the absolute positions of this step's tokens."""
        def make():
            steps = self._const(np.arange(self.step, dtype=np.int64), "step_positions")
            return self._op("Add", [steps, self.past_length], "positions") if self.past else steps
        return self._once(("positions",), make)

    @property
    def total_length(self) -> str:
        """[1] int64: keys the step attends to (past + step)."""
        def make():
            if not self.past:
                return self._const(np.array([self.step]), "total_length")
            return self._op("Add", [self._op("Unsqueeze", [self.past_length, self._const(np.array([0]), "axis0")],
                                             "past_length_1d"), self._const(np.array([self.step]), "step")],
                            "total_length")
        return self._once(("total",), make)

    @property
    def position_ids(self) -> str:
        """[batch, step] int64, as RotaryEmbedding's ``position_ids`` operand takes them."""
        return self._once(("position_ids",), lambda: self._op(
            "Expand", [self._op("Unsqueeze", [self.positions, self._const(np.array([0]), "axis0")], "positions_row"),
                       self._const(np.array([self.batch, self.step]), "position_ids_shape")], "position_ids"))

    def _gather_rows(self, table: str, axis: int) -> str:
        """``table`` at this step's positions along ``axis`` (a table over positions 0..S-1)."""
        length = self.g.type_of(table).shape[axis]
        if length != self.capacity:
            raise DecodeError(f"constant {table!r} has {length} positions along axis {axis}, "
                              f"not the graph's sequence length {self.capacity}")
        return self._once(("rows", table, axis),
                          lambda: self._op("Gather", [table, self.positions], f"{table}_at_positions", axis=axis))

    # ----------------------------------------------------------------- rules
    def _tables(self, node: Node) -> None:
        """Elementwise ops: a constant operand with a sequence axis is gathered at the positions."""
        rank = max(self.g.type_of(v).rank for v in node.inputs if v)
        seq_axes = {rank - self.g.type_of(v).rank + a for v in node.inputs if v and self._changed(v)
                    for a in self._changed_axes(v)}
        for index, operand in enumerate(node.inputs):
            if not operand or self._changed(operand):
                continue
            shape = self.g.type_of(operand).shape
            axis = next((a for a in range(len(shape)) if rank - len(shape) + a in seq_axes and shape[a] != 1), None)
            if axis is None:
                continue
            if self.g.const_data(operand) is None:
                raise DecodeError(f"{node.name}: its operand {operand!r} runs along the positions but is computed "
                                  "when the model runs, not a table of them (a table too large to fold, or one "
                                  "read past its end: is the length within the model's positions?)")
            self.g.set_input(node, index, self._gather_rows(operand, axis))

    def _rotary(self, node: Node) -> None:
        """Constant cos/sin tables [.., S, rot/2] become 2-D tables read through ``position_ids``."""
        cos, sin = node.inputs[1], node.inputs[2]
        if len(node.inputs) > 3 and node.inputs[3]:
            raise DecodeError(f"{node.name}: rotary embedding with its own position_ids is not supported")
        tables = [self.g.const_data(v) for v in (cos, sin)]
        if any(t is None for t in tables):
            if self._changed(cos) and self._changed(sin):
                return  # computed from the step's positions already
            raise DecodeError(f"{node.name}: rotary cos/sin are computed at run time but not from the positions")
        for index, (value, table) in enumerate(zip((cos, sin), tables), start=1):
            self.g.set_input(node, index, self._const(_position_table(value, table, self.capacity), f"{value}_table"))
        self.g.set_input(node, 3, self.position_ids)

    def _shape_operand(self, node: Node) -> None:
        """Re-spell a Reshape's or Expand's constant target on the axis that holds the sequence."""
        target = self.g.const_data(node.inputs[1])
        if target is None:
            return  # computed from shapes: re-inference follows the input
        x_old, y_old = self.old[node.inputs[0]].shape, self.old[node.outputs[0]].shape
        copies = not node.attr("allowzero", 0)  # a 0 in the target copies the input's dim
        spelled = np.array(target, dtype=np.int64)
        for axis, (before, after) in self._changed_axes(node.inputs[0]).items():
            if node.op_type == "Expand":
                out = len(spelled) - len(x_old) + axis
                if spelled[out] == before:
                    spelled[out] = after
                continue
            out = _holding_axis(x_old, axis, y_old)
            if out is None:
                raise DecodeError(f"{node.name}: the reshape splits the sequence axis {tuple(x_old)} -> "
                                  f"{tuple(y_old)}")
            if spelled[out] != -1 and not (copies and spelled[out] == 0 and out == axis):
                spelled[out] = y_old[out] // before * after
        if not np.array_equal(spelled, target):
            self.g.set_input(node, 1, self._const(spelled, f"{node.inputs[1]}_step"))

    def _attention(self, node: Node) -> Node:
        """Masks to the step's rows and visible keys; past inputs and present outputs."""
        g = self.g
        inputs = list(node.inputs) + [""] * (6 - len(node.inputs))
        if inputs[3]:
            inputs[3] = self._mask(node, inputs[3])
        layer = self.attentions.index(node)
        if self.past:
            inputs[4], inputs[5] = self.caches[layer]
        present = [n if n not in g.values else g.fresh_name(n) for n in cache_names(layer, past=False)]
        outputs = [node.outputs[0], *present, *node.outputs[3:4]]
        attrs, name, domain = dict(node.attrs), node.name, node.domain
        g.remove_node(node, drop_outputs=False)
        while not inputs[-1]:
            inputs.pop()
        fresh = g.add_node("Attention", inputs, outputs, attrs, domain=domain, name=name)
        g.outputs.extend(outputs[1:3])
        self.attentions[layer] = fresh
        return fresh

    def _mask(self, node: Node, mask: str) -> str:
        data = self.g.const_data(mask)
        if data is None or data.ndim < 2 or data.shape[-2:] != (self.capacity, self.capacity):
            raise DecodeError(f"{node.name}: its attention mask must be a constant [.., {self.capacity}, "
                              f"{self.capacity}] table of positions (got {self.g.type_of(mask)})")

        def make():
            rows = self._gather_rows(mask, data.ndim - 2)
            zero, axis = self._const(np.array([0]), "zero"), self._const(np.array([data.ndim - 1]), "key_axis")
            return self._op("Slice", [rows, zero, self.total_length, axis], f"{mask}_visible")
        return self._once(("mask", mask), make)


def _causal(graph: Graph, node: Node) -> bool:
    """Whether an Attention hides later positions: ``is_causal``, or a constant mask that masks
    every key after its query (additive at or below MASKED, or boolean false)."""
    if node.attr("is_causal", 0):
        return True
    mask = graph.const_data(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    if mask is None or mask.ndim < 2 or mask.shape[-1] != mask.shape[-2]:
        return False
    later = np.triu(np.ones(mask.shape[-2:], dtype=bool), k=1)
    hidden = ~mask if mask.dtype == bool else mask <= MASKED
    return bool(np.all(np.broadcast_to(hidden, mask.shape)[..., later]))


def kv_heads(graph: Graph, node: Node, operand: str) -> tuple:
    """(batch, kv_heads, seq, head_dim) of an Attention key/value operand, 3-D or 4-D."""
    shape = graph.type_of(operand).shape
    if len(shape) == 4:
        return tuple(shape)
    heads = node.attr("kv_num_heads")
    return shape[0], heads, shape[1], shape[2] // heads


def _position_table(name: str, data: np.ndarray, capacity: int) -> np.ndarray:
    """A rotary cos/sin constant [.., S, rot/2] as the 2-D [S, rot/2] table ``position_ids`` index."""
    if data.ndim < 2 or data.shape[-2] != capacity:
        raise DecodeError(f"rotary table {name!r} has shape {data.shape}, not [.., {capacity}, rot/2]")
    rows = data.reshape(-1, capacity, data.shape[-1])
    if not all(np.array_equal(rows[0], r) for r in rows[1:]):
        raise DecodeError(f"rotary table {name!r} differs between batch rows")
    return np.ascontiguousarray(rows[0])


def _holding_axis(x: tuple[int, ...], axis: int, y: tuple[int, ...]) -> int | None:
    """The axis of a row-major reshape x -> y that holds all of x's ``axis`` (None when split)."""
    before = int(np.prod(x[:axis], dtype=np.int64))
    through = before * x[axis]
    start = 1
    for j, d in enumerate(y):
        end = start * d
        if start <= before and through <= end and before % start == 0 and end % through == 0 and d % x[axis] == 0:
            return j
        start = end
    return None
