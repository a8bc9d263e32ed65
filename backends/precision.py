"""The precision policy: the number format every value is stored in and every op computes in.

``native`` (the default) costs the graph's own types the way each vendor's compiler runs them:
an engine's ``auto_cast`` is its compiler's default conversion (float32 products as TF32 on
NVIDIA tensor cores, as one bfloat16 pass on a TPU's MXU, as float16 on Groq's MXM).

A named format (``ir.formats``: fp32, tf32, bf16, fp16, fp8, int8, int4, w8a8, ternary) puts
every target on the same footing, reading the format's record without rewriting the graph (so
a weightless 70B graph costs in any format in the time of one schedule):

- product weights (a contraction's constant float B, ``ir.ops.Contraction.weight``) are stored
  at ``Format.weight_bits``, except the head's (``ir.passes.quantize.is_head``), as checkpoints
  in that format keep it;
- attention's key/value cache in ``Format.kv``; every other float value (activations, norms,
  embedding tables, the head) in ``Format.carrier``;
- products with weights multiply in ``Format.compute`` (weight-only formats: the carrier, their
  weights decoded in the product's prologue); products of two activations (attention) in the
  compute format when the format keeps 16- or 32-bit float weights, else in the carrier; other
  float ops in the carrier. Integer and boolean values keep their types.

The graph rewrite (``ir.passes.quantize``, ``xpuc import/run --precision``) is what runs the
numbers; a graph it wrote keeps the narrow types it stores under any policy (only float values
follow one) unless the format packs its codes narrower (BitNet's int4-stored ternary codes at 2
bits under ``ternary``), so ``xpuc schedule`` of a quantized export with ``native`` costs its
own formats. Codes a product decodes in its prologue (``ir.ops.quant.decodes_stored_weight``)
make it a product with weights under every policy, native included.

Each op runs on the first engine, in the spec's order, that runs its op family in the format
(``Engine.multiplies``: listed, or in passes, ``emulate``). Failing that, what the vendor stack
would do instead, shown in the record's ``format_reason``, never silently:

1. the vendor compiler's conversion (``auto_cast``: f16 products as bf16 on a TPU), which
   under native comes first;
2. the same for a wider format (:data:`WIDER`, in order): fp8 weights decoded to f16 on an
   A100, bf16 norms in f32 on a chip whose vector unit has no bf16;
3. the host (engine None), as capability fallbacks always go.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ir import ops
from ir.dtypes import DType
from ir.formats import Format, engine_storage, lookup
from ir.graph import Graph
from ir.ops.quant import decodes_stored_weight, integer_product
from ir.passes.quantize import is_head

from .target import Engine, Target
from .work import OpWork, value_bytes

WIDER = {
    "f8e4m3": ("f16", "bf16", "f32"),
    "f8e5m2": ("f16", "bf16", "f32"),
    "bf16": ("f32",),
    "f16": ("f32",),
    "tf32": ("f32",),
    "i8": ("i32", "f16", "bf16", "f32"),
    "u8": ("i8", "i32"),
    "i32": ("i64",),
}
"""Formats an engine may run instead of one it lacks, in order of preference: each holds every
value of the format it replaces (an 8-bit integer product dequantized to f16 included)."""

ATTENTION_KV = {"Attention": ((4, 5), (1, 2))}
"""Op type -> (inputs, outputs) that are its key/value cache (ONNX Attention: past_key/value, present_key/value)."""


@dataclass(frozen=True)
class StoredWeight:
    """What a product's weight is stored in under the policy: a format's name (or "the graph's
    i4") and bits per weight, scales included."""

    label: str
    bits: float
    dtype: DType
    """The type its codes are stored in (a format's weights: the codes of its rewrite)."""


@dataclass(frozen=True)
class Choice:
    engine: Engine | None
    fmt: str
    reason: str


class Policy:
    """One precision (an ``ir.formats`` name or record) applied to one schedule; it caches
    engine choices per target, so make one per schedule."""

    def __init__(self, precision: str | Format = "native"):
        self.format = lookup(precision)
        self.native = self.format.name == "native"
        self._weight_products: dict[str, StoredWeight] = {}
        self._integer: dict[str, tuple[str, str]] = {}
        """Products the graph computes on integers (``ir.ops.quant.integer_product``) -> (their
        codes, the op that decodes them)."""
        self.unpacked_at_load: set[str] = set()
        """Those decodes done once, as the weights are loaded (:meth:`unpacked`), not per pass."""
        self._choices: dict[tuple, Choice] = {}

    # ---------------------------------------------------------------- storage
    def sizes(self, graph: Graph) -> dict[str, int]:
        """Bytes every value is stored in under the policy (0 while symbolic)."""
        sizes = value_bytes(graph)
        weights, kv = self._classify(graph)
        if self.native:
            return sizes
        f = self.format
        for name, v in graph.values.items():
            t = v.type
            if not t.is_static or name not in weights and (t.dtype is None or not t.dtype.is_float):
                continue
            bits = weights[name].bits if name in weights else 8 * (f.kv or f.carrier).itemsize if name in kv \
                else 8 * f.carrier.itemsize
            sizes[name] = math.ceil(t.numel * bits / 8)
        return sizes

    def _classify(self, graph: Graph) -> tuple[dict[str, StoredWeight], set[str]]:
        """(product weights and what each is stored in, key/value cache values); remembers which
        ops are products with weights. A weight is a constant the product reads as B, directly or
        through the decode it runs in its prologue (``ir.ops.quant.decodes_stored_weight``: codes
        the graph stores narrow, such as BitNet's ternary codes in int4). Under a format, float
        weights take its bits; codes keep theirs unless the format packs narrower (ternary codes
        stored int4 pack four to a byte); under native every weight keeps the graph's type."""
        weights, kv = {}, set()
        f = self.format
        for node in graph.nodes:
            inputs, outputs = ATTENTION_KV.get(node.op_type, ((), ()))
            kv.update(node.inputs[i] for i in inputs if i < len(node.inputs) and node.inputs[i])
            kv.update(node.outputs[i] for i in outputs if i < len(node.outputs) and node.outputs[i])
            if is_head(graph, node):
                continue
            for c in ops.contractions(graph, node):
                stored = self._stored(graph, node.inputs[c.weight.input]) if c.weight is not None else None
                if stored is None or self.native and not stored[2]:
                    continue
                name, dtype, _ = stored
                bits = 8 * dtype.itemsize if self.native else \
                    f.weight_bits if dtype.is_float else min(8 * dtype.itemsize, f.weight_bits)
                label = f.name if not self.native and (dtype.is_float or bits < 8 * dtype.itemsize) \
                    else f"the graph's {dtype.short}"
                weights[name] = StoredWeight(label, bits, f.weights if label == f.name else dtype)
                if integer_product(graph, node):
                    self._integer[node.name] = (name, graph.producer(node.inputs[c.weight.input]).name)
                self._weight_products[node.name] = weights[name]
        return weights, kv

    def unpacked(self, sizes: dict[str, int], graph: Graph) -> tuple[dict[str, int], set[str]]:
        """``sizes`` with the integer products' codes held as int8, one byte each, and the decodes
        that then run once at load. An SRAM chip's compiler does this where the chips have room
        (``backends.scheduler``): its matrix unit reads int8 weights from memory as they are
        (Groq's MXM takes int8 or fp16 weights from its memory streams, Abts et al., ISCA 2020),
        while narrower codes would occupy the vector unit unpacking them on every pass."""
        wide = dict(sizes)
        for codes, _ in self._integer.values():
            wide[codes] = max(sizes[codes], graph.type_of(codes).numel)
        return wide, {decode for _, decode in self._integer.values()}

    @staticmethod
    def _stored(graph: Graph, value: str) -> tuple[str, DType, bool] | None:
        """(constant, its type, whether the product decodes it) a product's B operand is stored
        as, or None when B is computed as the model runs."""
        producer = graph.producer(value)
        decoded = producer is not None and decodes_stored_weight(graph, producer)
        if decoded:
            value = producer.inputs[0]
        t = graph.type_of(value) if graph.is_const(value) else None
        return None if t is None or t.dtype is None or not (t.dtype.is_float or t.dtype.is_int) \
            else (value, t.dtype, decoded)

    def describe(self) -> dict[str, str]:
        """What the policy stores and multiplies, for reports."""
        f = self.format
        if self.native:
            return {"policy": "native", "weights": "the graph's", "activations": "the graph's", "kv": "the graph's"}
        weights = f.weights.short if f.weights.is_float else f"{f.weights.short} ({f.weight_bits:g} bits)"
        return {"policy": f.name, "weights": weights, "activations": f.carrier.short,
                "kv": (f.kv or f.carrier).short, "products": f.compute}

    # ---------------------------------------------------------------- compute
    def assign(self, works: list[OpWork]) -> None:
        """Set each op's format to the one the policy asks it to compute in (before an engine is
        chosen). A product the graph computes on integers multiplies int8 under every policy: a
        format never widens a graph's integer codes, nor so its integer arithmetic."""
        f = self.format
        floats_only = f.weights.is_float and f.weights.itemsize >= 2
        for w in works:
            if w.name in self._integer:
                w.fmt = "i8"
            if self.native or w.free or w.name in self._integer or not DType.from_short(w.fmt).is_float:
                continue
            if w.name in self._weight_products or (w.gemms and floats_only):
                w.fmt = f.compute
            else:
                w.fmt = f.carrier.short

    def choose(self, work: OpWork, target: Target) -> Choice:
        """The engine and format the op runs in, and why (see the module docstring)."""
        weight = self._weight_products.get(work.name)
        integer = work.name in self._integer
        key = (id(target), work.family, work.node.op_type, work.fmt, weight, integer)
        if key not in self._choices:
            label = f"the graph's integer product in {work.fmt}" if integer else f"the graph's {work.fmt}" \
                if self.native else f"precision {self.format.name}: {work.fmt}"
            choice = self._resolve(work.family, work.node.op_type, work.fmt, target, label, self.native or integer)
            used = engine_storage(choice.fmt) if choice.engine is not None else None
            if integer and self._integer[work.name][1] in self.unpacked_at_load:
                choice = Choice(choice.engine, choice.fmt, f"{choice.reason}; {weight.label} weights held as "
                                f"{choice.fmt}, unpacked once at load where the chips have room")
            elif weight is not None and used is not None and weight.dtype is not used:
                how = "decoded to" if weight.bits < 8 * used.itemsize else "rounded to"
                choice = Choice(choice.engine, choice.fmt, f"{choice.reason}; {weight.label} weights "
                                f"({weight.bits:g} bits) {how} {choice.fmt} in the product's prologue")
            self._choices[key] = choice
        return self._choices[key]

    def _resolve(self, family: str, op_type: str, wanted: str, target: Target, label: str, own: bool) -> Choice:
        """``label`` names what asks for ``wanted``; ``own``: the graph does (native, or an integer
        product), not the policy."""
        engines = [e for e in target.engines.values() if e.handles(family, op_type)]
        steps = [(step, fmt) for fmt in (wanted, *WIDER.get(wanted, ())) for step in ("exact", "cast")]
        if own:  # the vendor compiler's default conversion of the graph's own type comes first
            steps[:2] = steps[1::-1]
        for step, fmt in steps:
            for e in engines:
                if step == "exact" and e.multiplies(fmt):
                    return Choice(e, fmt, self._exact(label, wanted, fmt, e))
                cast = e.auto_cast.get(fmt)
                if step == "cast" and cast is not None and cast in e.peak_ops_per_cycle:
                    return Choice(e, cast, self._cast(label, own, wanted, fmt, cast, e))
        return Choice(None, wanted, f"{label}: no engine runs {op_type} in it, so the host does")

    @staticmethod
    def _exact(label: str, wanted: str, fmt: str, engine: Engine) -> str:
        if fmt != wanted:
            return f"{label} widened to {fmt} (no {wanted} on {engine.name})"
        if fmt in engine.emulate:
            return f"{label} as {engine.passes(fmt)} {engine.emulate[fmt].via} passes"
        return label

    @staticmethod
    def _cast(label: str, own: bool, wanted: str, fmt: str, cast: str, engine: Engine) -> str:
        if own:
            return f"{label} run as {cast}, the vendor compiler's default"
        via = f" as {fmt}" if fmt != wanted else ""
        return f"{label}{via} converted to {cast} by the vendor compiler (no {fmt} on {engine.name})"
