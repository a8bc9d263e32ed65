"""Random valid ONNX programs: ``generate(seed, index)`` is a pure function of its arguments.

A program is a few op generators applied in turn to a growing pool of tensors (see
:mod:`build`); most generators read recent tensors, so ops chain, and fusion patterns
land on the outputs of earlier ops. Its outputs are the tensors nothing else reads, and
the intermediates a near miss exposes. Some programs declare symbolic input dims: those
are compiled either as declared (specialized per feed shape at run time) or with the
shapes bound up front. Each program names the hardware target its emulated run counts on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from . import compute, elementwise, movement, patterns
from .build import Builder

TARGETS = ("h100-sxm", "tpu-v4", "groq-lpu")
"""One preset per family (gpu, systolic, sram-dataflow): every program is scheduled on each."""

WEIGHTS = {
    **{name: 1.0 for name in movement.GENERATORS},
    **{name: 1.5 for name in compute.GENERATORS},
    **{name: 1.2 for name in patterns.GENERATORS},
    "Elementwise": 8.0, "MatMul": 3.0, "Reshape": 2.0, "Transpose": 1.5,
}
GENERATORS = {**movement.GENERATORS, **compute.GENERATORS, **patterns.GENERATORS, "Elementwise": elementwise.generate}
MAX_OUTPUTS = 6


@dataclass
class Case:
    """A program, its feeds, and how to compile it."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    bind: bool = True
    """Compile with the feeds' shapes bound (else symbolic dims are specialized at run time)."""
    target: str = "cpu"
    """What ``runtime.compile`` emulates while it runs (``cpu``: nothing)."""
    label: str = ""
    generators: list[str] = field(default_factory=list)


def generate(seed: int, index: int, *, max_ops: int = 10) -> Case:
    rng = np.random.default_rng([seed, index])
    float_dtype = np.dtype(np.float16 if rng.random() < 0.15 else np.float32)
    b = Builder(rng, float_dtype, symbolic=rng.random() < 0.35)
    b.input(b.shape(), float_dtype)
    names, weights = list(GENERATORS), np.array([WEIGHTS[n] for n in GENERATORS])
    target_ops = int(rng.integers(1, max_ops + 1))
    used = []
    for _ in range(8 * max_ops):
        if len(b.nodes) >= target_ops:
            break
        name = names[int(rng.choice(len(names), p=weights / weights.sum()))]
        if GENERATORS[name](b):
            used.append(name)
    produced = {o for n in b.nodes for o in n.output if o}
    outputs = [t for t in b.pool if t.name in produced and t.name not in b.used]
    outputs += [t for t in b.pool if t.name in b.exposed and t not in outputs]
    outputs = outputs[-MAX_OUTPUTS:] or [b.unary("Identity", b.pool[0])]  # everything made was read
    label = f"seed {seed} index {index}"
    model = b.model(outputs)
    symbolic = bool(b.sizes)
    bind = not symbolic or bool(rng.random() < 0.5)
    target = str(rng.choice(("cpu",) + TARGETS))
    return Case(model, b.feeds, bind, target, label, used)
