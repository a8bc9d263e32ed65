"""Host code that computes the way a target's engines do: each op's
:class:`backends.numerics.Numerics` as the rounding host code generation applies
(:class:`backends.codegen.Rounding`).

- A product of floats (an op with contractions: MatMul, Gemm, FusedMatMul, Conv, Attention,
  MixtureOfExperts) rounds its operands to the format its engine multiplies in, where that is
  not its own, and sums in float32, which its engine's accumulator must be (or wider).
- Any other float op on an engine that computes in a format narrower than float32 (a vector
  unit with 16-bit ALUs) rounds each result to that format.
- Integer arithmetic is exact on both sides (int8 products accumulate in int32 on the host
  too), and an op the target leaves to the host computes as the host does.

What host code cannot reproduce (a float8 conversion without scales, an accumulator
narrower than float32) is refused, every such op at once, naming the spec key; compiling with
``host_numerics=True`` runs the model in the host's float32 instead.
"""

from __future__ import annotations

from backends.codegen import ROUNDINGS, Rounding
from backends.numerics import Numerics, op_numerics
from backends.target import Target
from backends.work import graph_work
from ir import ops
from ir.errors import XpucError
from ir.formats import engine_storage
from ir.graph import Graph, Node

WIDE = ("f32", "f64")
"""Float formats host code computes in without rounding."""


class TargetNumericsError(XpucError):
    """A target computes some op in a way host code does not reproduce."""


def rounding_plan(graph: Graph, target: Target) -> dict[str, Rounding]:
    """The rounding of every op of ``graph`` that computes differently on ``target`` than on
    the host, by op name (see the module docstring)."""
    plan: dict[str, Rounding] = {}
    problems: list[str] = []
    for work in graph_work(graph):
        if work.free:
            continue
        n = op_numerics(work, target)
        if n.engine is None or not engine_storage(n.operands).is_float:
            continue
        try:
            rounding = _rounding(work.node, n)
        except TargetNumericsError as exc:
            problems.append(str(exc))
            continue
        if rounding != Rounding():
            plan[work.name] = rounding
    if problems:
        raise TargetNumericsError(f"host code cannot compute as {target.name} does: {'; '.join(problems)} "
                                  "(compile with host_numerics=True, or xpuc run --host-numerics)")
    return plan


def _rounding(node: Node, n: Numerics) -> Rounding:
    where = f"{node.name} ({node.op_type}) on {n.engine}"
    if ops.lookup(node.op_type, node.domain).contractions is not None:
        if n.accumulate not in WIDE:
            raise TargetNumericsError(f"{where} accumulates {n.operands} products in {n.accumulate} "
                                      f"(engines.{n.engine}.accumulate.{n.operands})")
        return Rounding(operands=_format(where, n.operands, "multiplies") if n.operands != n.stored else "")
    return Rounding(results=_format(where, n.accumulate, "computes"))


def _format(where: str, fmt: str, verb: str) -> str:
    """``fmt`` as a rounding host code applies ("" for float32 or wider)."""
    if fmt in WIDE:
        return ""
    if fmt not in ROUNDINGS:
        raise TargetNumericsError(f"{where} {verb} in {fmt}, which host code rounds to only with scales "
                                  f"(quantize the model to it instead); it rounds to {', '.join(ROUNDINGS)}")
    return fmt
