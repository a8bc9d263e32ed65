"""How an op decomposes into matrix products: the ``contractions`` trait of an op.

A :class:`Contraction` is one batched GEMM inside an op (MatMul and Gemm directly, Conv as
an im2col product per group, Attention as its two batched products), with where its B
operand lives when B is one of the op's inputs. Schedulers pad and fold the GEMM shapes
onto each family's tiles; counting kernels read B in place to see which weights are zero.

The contraction rules of each op live next to its shape rule (``linalg``, ``nn``,
``composite``); a mixture-of-experts op would declare one contraction per expert, each
with its expert's slice of the stacked weights as B (``Operand.offset``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Gemm:
    """``batch`` independent products of an (m x k) by a (k x n) matrix."""

    batch: int
    m: int
    n: int
    k: int

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.n * self.k


@dataclass(frozen=True)
class Operand:
    """Where element (batch index b, row r, column c) of a product's operand lives in one of
    the op's inputs: ``offset + sum(b_i * batch_strides_i) + r * row + c * col`` elements into
    the input's contiguous buffer. ``batch_shape`` is the product's batch as nested dims."""

    input: int
    batch_shape: tuple[int, ...]
    batch_strides: tuple[int, ...]
    row: int
    col: int
    offset: int = 0

    @property
    def shared(self) -> bool:
        """One matrix serves every product of the batch (a weight broadcast over leading dims),
        so the batch folds into M (:meth:`Contraction.folded`)."""
        return not any(self.batch_strides)


@dataclass(frozen=True)
class Contraction:
    """One batched GEMM of an op. ``weight``: its B (k x n) operand when B is read in place
    from an input of the op (a resident weight when that input is constant); None when B is
    assembled inside the op (attention's keys after the past cache, its probabilities)."""

    gemm: Gemm
    weight: Operand | None = None

    def folded(self) -> Contraction:
        """The product with its batch folded into M when one B serves every batch entry: a
        layer applied to ``batch`` rows of m tokens is one (batch*m x k) by (k x n) product, B
        read once and the rows cut into tiles together, as GEMM libraries and XLA run a dense
        layer over a batch. Products with a B per batch entry (attention) stay batched."""
        w, g = self.weight, self.gemm
        if w is None or g.batch == 1 or not w.shared:
            return self
        return Contraction(Gemm(1, g.batch * g.m, g.n, g.k), Operand(w.input, (), (), w.row, w.col, w.offset))


def contiguous_strides(shape) -> tuple[int, ...]:
    return tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
