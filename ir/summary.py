"""What a model is made of: ops by type, parameters, and arithmetic work per op family."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from . import ops
from .graph import Graph


@dataclass
class Summary:
    name: str
    ops: int
    ops_by_type: dict[str, int]
    parameters: int
    parameter_bytes: int
    weightless: bool
    flops_by_family: dict[str, int]
    ops_with_unknown_work: list[str] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return sum(self.flops_by_family.values())

    def to_dict(self) -> dict:
        return {"name": self.name, "ops": self.ops, "ops_by_type": self.ops_by_type, "parameters": self.parameters,
                "parameter_bytes": self.parameter_bytes, "weightless": self.weightless, "flops": self.flops,
                "flops_by_family": self.flops_by_family, "ops_with_unknown_work": self.ops_with_unknown_work}


def node_flops(graph: Graph, node) -> int | None:
    """Arithmetic work of one op, or None while its shapes are symbolic."""
    found = ops.static_context(graph, node)
    if found is None or found[0].flops is None:
        return None
    opdef, ctx, out_types = found
    return int(opdef.flops(ctx, out_types))


def summarize(graph: Graph) -> Summary:
    by_type = Counter(n.qualified_type for n in graph.nodes)
    params = [v for v in graph.initializers() if v.type.numel is not None]
    flops: Counter = Counter()
    unknown = []
    for node in graph.nodes:
        work = node_flops(graph, node)
        if work is None:
            unknown.append(node.name)
        else:
            flops[ops.lookup(node.op_type, node.domain).family] += work
    return Summary(graph.name, len(graph), dict(sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
                   sum(v.type.numel for v in params), sum(v.type.nbytes for v in params),
                   any(v.weightless for v in params), dict(sorted(flops.items())), unknown)


def format_summary(s: Summary) -> str:
    lines = [f"model {s.name}: {s.ops} ops, {s.parameters:,} parameters ({format_bytes(s.parameter_bytes)}"
             f"{', weightless' if s.weightless else ''}), {_flops(s.flops)}"]
    lines.append("ops by type: " + ", ".join(f"{k} {v}" for k, v in s.ops_by_type.items()))
    lines.append("FLOPs by family: " + ", ".join(f"{k} {_flops(v)}" for k, v in s.flops_by_family.items()))
    if s.ops_with_unknown_work:
        lines.append(f"{len(s.ops_with_unknown_work)} ops have symbolic shapes, so their work is not counted; "
                     "bind inputs with --input-shape NAME=1x128")
    return "\n".join(lines)


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _flops(n: int) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} FLOP"
