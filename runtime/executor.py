"""Run compiled kernels in order over statically planned buffers.

Every value a kernel touches resolves to storage: a graph input, a constant, a value a
folded (``once``) kernel computed when the executor was built, an output array of this
run, or a slot in the arena (aliases such as Reshape share their source's storage).
Kernels whose parallel loop has more than one iteration and enough work are split into
``[begin, end)`` chunks on a thread pool; ctypes releases the GIL for the call.
"""

from __future__ import annotations

import ctypes
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from backends.codegen import Lowered
from ir.graph import Graph

from .jit import Library
from .memory_plan import MemoryPlan, plan_memory

KERNEL_CFUNC = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int64, ctypes.c_int64)


class Executor:
    def __init__(self, graph: Graph, lowered: Lowered, library: Library, *, threads: int, min_parallel_work: int):
        self.graph, self.lowered, self.library = graph, lowered, library
        self.threads = max(1, threads)
        self.min_parallel_work = min_parallel_work
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.kernels = [(KERNEL_CFUNC(library.address(k.name)), k) for k in lowered.kernels]
        self.constants = {name: np.ascontiguousarray(v.data) for name, v in graph.values.items()
                          if v.const and v.data is not None}
        self.constants.update(lowered.constants)
        self.folded = self._fold()
        self._output_roots = {self.root(o) for o in graph.outputs}
        self.plan = self._plan()

    def root(self, name: str) -> str:
        while name in self.lowered.aliases:
            name = self.lowered.aliases[name]
        return name

    def _external(self, root: str) -> bool:
        return root in self.graph.inputs or root in self.constants or root in self.folded or root in self._output_roots

    def _fold(self) -> dict[str, np.ndarray]:
        """Run the folded kernels once: every buffer one of them touches that is not a constant
        (or an earlier one's result) is a result, kept like a constant (never in a shared
        mapping, which a cache hit's constants may be)."""
        folded: dict[str, np.ndarray] = {}
        for fn, spec in self.kernels:
            if not spec.once:
                continue
            for root in {self.root(a) for a in spec.args} - set(self.constants) - set(folded):
                t = self.graph.type_of(root)
                folded[root] = np.empty(t.shape, t.dtype.numpy)
            stored = {**self.constants, **folded}
            args = (ctypes.c_void_p * max(len(spec.args), 1))(*[stored[self.root(a)].ctypes.data for a in spec.args])
            self._call(fn, args, spec.extent, spec.work)
        return folded

    def _plan(self) -> MemoryPlan:
        lifetimes: dict[str, list[int]] = {}
        for i, (_, spec) in enumerate(self.kernels):
            if spec.once:
                continue
            for name in spec.args:
                root = self.root(name)
                if not self._external(root):
                    span = lifetimes.setdefault(root, [i, i])
                    span[0], span[1] = min(span[0], i), max(span[1], i)
        sizes = {name: self._nbytes(name) for name in lifetimes}
        return plan_memory(sizes, {n: (s, e) for n, (s, e) in lifetimes.items()})

    def _nbytes(self, name: str) -> int:
        t = self.graph.type_of(name)
        return math.prod(t.shape) * t.dtype.numpy.itemsize  # unpacked: sub-byte types take a byte

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds are already validated: C-contiguous, aligned, of the bound dtypes and shapes."""
        return self.bind(feeds)()

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], list[np.ndarray]]:
        """A run over buffers fixed now (the feed arrays, whose contents may change between
        calls; an arena; the outputs, which each call overwrites), every kernel's arguments
        resolved once: a loop calling one compiled step many times (a decode step) then pays
        for the kernel calls only."""
        arena = np.empty(max(self.plan.peak_bytes, 1), dtype=np.uint8)
        base = arena.ctypes.data
        outputs = {root: np.empty(self.graph.type_of(root).shape, self.graph.type_of(root).dtype.numpy)
                   for root in self._output_roots
                   if root not in feeds and root not in self.constants and root not in self.folded}
        addresses: dict[str, int] = {}
        for table in (feeds, self.constants, self.folded, outputs):
            for name, array in table.items():
                addresses[name] = array.ctypes.data if array.size else arena.ctypes.data
        for name, offset in self.plan.offsets.items():
            addresses[name] = base + offset
        calls = [(fn, (ctypes.c_void_p * max(len(spec.args), 1))(*[addresses[self.root(a)] for a in spec.args]),
                  spec.extent, spec.work) for fn, spec in self.kernels if not spec.once]

        def run() -> list[np.ndarray]:
            for call in calls:
                self._call(*call)
            return self._results(feeds, outputs)

        run.keep = (arena, calls)  # the buffers and argument arrays the calls point into
        return run

    def _results(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        results, seen = [], set()
        for name in self.graph.outputs:
            root = self.root(name)
            source = outputs.get(root)
            if source is None:
                source = feeds[root] if root in feeds else self.constants.get(root, self.folded.get(root))
            array = source.reshape(self.graph.type_of(name).shape)
            results.append(array.copy() if root in seen or source is not outputs.get(root) else array)
            seen.add(root)
        return results

    def _call(self, fn, args, extent: int, work: int) -> None:
        if extent <= 0:
            return
        chunks = min(self.threads, extent) if self._pool and work >= self.min_parallel_work else 1
        if chunks == 1:
            fn(args, 0, extent)
            return
        bounds = [extent * c // chunks for c in range(chunks + 1)]
        futures = [self._pool.submit(fn, args, lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
        for f in futures:
            f.result()

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=False)
