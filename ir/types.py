"""Tensor types: an element type and a shape whose dims are ints or symbolic names."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from .dtypes import DType

Dim = int | str
"""A dimension: a concrete size, or a symbol (e.g. "batch", "seq") bound later."""

Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class TensorType:
    """dtype and shape of a value. ``shape is None`` means the rank is unknown."""

    dtype: DType | None
    shape: Shape | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @functools.cached_property  # types are immutable; schedulers ask millions of times on 70B graphs
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @functools.cached_property
    def numel(self) -> int | None:
        """Number of elements, or None while any dim is symbolic."""
        return math.prod(self.shape) if self.is_static else None

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        return None if n is None or self.dtype is None else math.ceil(n * self.dtype.itemsize)

    def __str__(self) -> str:
        return format_type(self)


UNKNOWN = TensorType(None, None)


def format_shape(shape: Shape | None) -> str:
    if shape is None:
        return "*"
    return "x".join(str(d) for d in shape)


def format_type(t: TensorType) -> str:
    """MLIR-style text: ``tensor<2x?x64xf32>`` with symbols spelled out, ``tensor<f32>`` for scalars."""
    dtype = t.dtype.short if t.dtype is not None else "?"
    dims = format_shape(t.shape)
    return f"tensor<{dims}x{dtype}>" if dims else f"tensor<{dtype}>"
