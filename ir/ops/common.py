"""Helpers shared by the op rules: broadcasting, axes, and common FLOP counts."""

from __future__ import annotations

from ..types import Dim, Shape, TensorType
from .registry import InferContext, numel


def broadcast(ctx: InferContext, shapes: list[Shape | None]) -> Shape | None:
    """Multidirectional (numpy) broadcasting of dims that may be symbols."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        ints = {d for d in dims if isinstance(d, int) and d != 1}
        syms = [d for d in dims if not isinstance(d, int)]
        if len(ints) > 1:
            ctx.fail(f"cannot broadcast shapes {' and '.join(str(tuple(s)) for s in shapes)}")
        out.append(ints.pop() if ints else syms[0] if syms else 1)
    return tuple(out)


def axis(ctx: InferContext, value: int, rank: int) -> int:
    """Normalise a possibly negative axis, with a clear error when out of range."""
    if not -rank <= value < max(rank, 1):
        ctx.fail(f"axis {value} is out of range for rank {rank}")
    return value % rank if rank else 0


def same_as_input(ctx: InferContext) -> list[TensorType]:
    return [ctx.type(0)]


def per_output_element(cost: int):
    """A FLOP rule: ``cost`` operations for every output element."""
    return lambda ctx, outs: cost * numel(outs[0])


def per_input_element(cost: int):
    """A FLOP rule: ``cost`` operations for every element of input 0."""
    return lambda ctx, outs: cost * numel(ctx.type(0))
