"""Where a config-built graph's constants come from: nowhere (weightless), a seeded generator,
or arrays in transformers' state-dict layout.

Every parameter is asked for by its transformers name and shape (``nn.Linear`` stores
[out, in]); :meth:`Weights.tensor` returns the graph constant in the layout the graph reads
(a MatMul's right-hand side is [in, out]). Given arrays are checked by name and shape, and
all problems are reported at once by :meth:`Weights.check`.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np

import ir
from ir.dtypes import DType
from ir.errors import ModelLoadError
from ir.types import TensorType

LAYOUTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "as_is": lambda a: a,
    "transpose": lambda a: a.T,
    "swap_last": lambda a: np.swapaxes(a, -1, -2),
}
"""transformers layout -> graph layout: ``transpose`` for [out, in] linears read by MatMul,
``swap_last`` for stacked expert matrices [E, out, in]."""


def _random(rng: np.random.Generator, shape: tuple[int, ...], init: str) -> np.ndarray:
    """Values that keep activations near unit scale through any depth, so outputs test arithmetic."""
    if init == "linear":  # [out, in] or [E, out, in]
        return rng.standard_normal(shape) / math.sqrt(shape[-1])
    if init == "norm":
        return 1 + 0.1 * rng.standard_normal(shape)
    if init == "offset_norm":  # Gemma scales by 1 + w
        return 0.1 * rng.standard_normal(shape)
    if init == "A_log":  # Mamba's S4D-real initialisation, A = -(1..N), perturbed
        return np.log(np.arange(1, shape[1] + 1)) + 0.1 * rng.standard_normal(shape)
    if init == "conv":
        return rng.standard_normal(shape) / math.sqrt(shape[-1])
    if init == "D":
        return 1 + 0.1 * rng.standard_normal(shape)
    return rng.standard_normal(shape) * (1.0 if init == "embed" else 0.1)


class Weights:
    """A source of parameters for one graph."""

    def __init__(self, graph: ir.Graph, dtype: DType, source: None | str | Mapping[str, np.ndarray], seed: int):
        self.graph, self.dtype = graph, dtype
        self.arrays = source if isinstance(source, Mapping) else None
        self.rng = np.random.default_rng(seed) if source == "random" else None
        self.missing: list[str] = []
        self.misshapen: list[str] = []
        self.count = 0
        """Elements of every parameter made so far: the model's parameter count."""

    @property
    def weightless(self) -> bool:
        return self.arrays is None and self.rng is None

    def dense(self, name: str, shape: tuple[int, ...], init: str) -> np.ndarray | None:
        """A parameter's values in transformers' layout (float32), or None when weightless or missing."""
        if self.rng is not None:
            return _random(self.rng, shape, init).astype(np.float32)
        if self.arrays is None:
            return None
        if name not in self.arrays:
            self.missing.append(name)
            return None
        data = np.asarray(self.arrays[name])
        if tuple(data.shape) != tuple(shape):
            self.misshapen.append(f"{name} {tuple(data.shape)} (expected {tuple(shape)})")
            return None
        return data.astype(np.float32)

    def tensor(self, name: str, shape: tuple[int, ...], init: str = "linear", layout: str = "as_is") -> str:
        """The graph constant for a parameter (named as in transformers)."""
        data = self.dense(name, shape, init)
        graph_shape = LAYOUTS[layout](np.broadcast_to(np.empty((), np.bool_), shape)).shape  # a view: no memory
        if data is None:
            return self.declare(name, TensorType(self.dtype, graph_shape))
        return self.constant(name, LAYOUTS[layout](data).astype(self.dtype.numpy))

    def declare(self, name: str, ttype: TensorType, parameter: bool = True) -> str:
        """A weightless constant (shape and dtype only); ``parameter``: counted as a model parameter."""
        self.graph.add_value(name, ttype, const=True)
        self.count += ttype.numel if parameter else 0
        return name

    def constant(self, name: str, data: np.ndarray, parameter: bool = True) -> str:
        self.graph.add_value(name, TensorType(DType.from_numpy(data.dtype), tuple(data.shape)), const=True,
                             data=np.ascontiguousarray(data))
        self.count += data.size if parameter else 0
        return name

    def check(self) -> None:
        """Report every missing or wrongly shaped given array at once."""
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {', '.join(self.missing[:8])}"
                         + (" ..." if len(self.missing) > 8 else ""))
        if self.misshapen:
            parts.append(f"{len(self.misshapen)} with the wrong shape: {', '.join(self.misshapen[:8])}"
                         + (" ..." if len(self.misshapen) > 8 else ""))
        if parts:
            raise ModelLoadError("the given weights do not fit the config: " + "; ".join(parts))
