"""Target numerics: what running an op on a target's engine does to its numbers.

The one decision, read by code compiled for a target (``backends.emulate.numerics`` turns it
into the host code's roundings) and meant for the cost model's precision policy alike: an op
that an engine runs in format F (the format placement chose: the op's own, after the engine's
``auto_cast``, the vendor compiler's default conversion) has its operands rounded to F and its
arithmetic accumulating in ``engine.accumulate[F]`` (F itself where the spec gives none: a
vector unit computes f32 in f32). So on a TPU a float32 MatMul multiplies bf16 operands into a
float32 sum, on Hopper a float8 product accumulates in float32, and an op that falls back to
the host computes as the host does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .precision import Policy
from .target import Engine, Target
from .work import OpWork


@dataclass(frozen=True)
class Numerics:
    """How one op computes on a target."""

    engine: str | None
    """The engine that runs it; None: the host (a capability fallback)."""
    stored: str
    """The op's own format (its first float tensor's type, as the scheduler reads it)."""
    operands: str
    """The format its operands are rounded to on the engine (``stored``: not rounded)."""
    accumulate: str
    """The format its arithmetic accumulates (a product) or computes (a vector op) in."""


def numerics(engine: Engine | None, fmt: str, stored: str) -> Numerics:
    """How ``engine`` computes an op stored in ``stored`` when it runs it in ``fmt`` (the format
    the precision policy's engine choice gives, ``backends.precision``); ``engine`` None is
    the host, which computes the op as stored."""
    if engine is None:
        return Numerics(None, stored, stored, stored)
    return Numerics(engine.name, stored, fmt, engine.accumulate.get(fmt, fmt))


def op_numerics(work: OpWork, target: Target) -> Numerics:
    """How ``target`` computes one op, on the engine the scheduler places it on (the native
    policy: the graph's own types, as the vendor runs them)."""
    choice = Policy().choose(work, target)
    return numerics(choice.engine, choice.fmt, work.fmt)
