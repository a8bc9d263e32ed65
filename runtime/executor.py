"""Run compiled kernels in order over statically planned buffers.

Every value a kernel touches resolves to storage: a graph input, a constant, a value a
folded (``once``) kernel computed when the executor was built, an output array of this
run, or a slot in the arena (aliases such as Reshape share their source's storage).
Kernels whose parallel loop has more than one iteration and enough work are split into
``[begin, end)`` chunks that the calling thread and a pool of ``threads - 1`` take in turn
(large kernels in several chunks per thread, so a thread slowed by another process does less
of the work); ctypes releases the GIL for the call.

Only the constants some kernel reads (or the graph returns) are kept: a weight that code
generation packed into panels is read from the panels alone, so its original array is
dropped here, from the executor's graph too (the graph keeps its type). Constants a model
cache hit maps from its entry are copied into anonymous memory on the first run: the kernels
read every byte of them then anyway, and streaming a weight from 2 MB transparent huge pages
instead of 4 KB page-cache pages runs decode products 1.5x and GPT-2 small 10% faster
(BENCHMARKS.md, "CPU kernels").
"""

from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from backends.codegen import Lowered
from ir.graph import Graph

from .jit import Library
from .memory_plan import MemoryPlan, plan_memory, value_bytes


def _root(lowered: Lowered, name: str) -> str:
    while name in lowered.aliases:
        name = lowered.aliases[name]
    return name


def _constants(graph: Graph, lowered: Lowered) -> dict[str, np.ndarray]:
    """The constants some kernel reads or the graph returns; every other array (a weight read
    only from its packed panels) is dropped from ``graph``, the executor's own copy."""
    used = {_root(lowered, a) for spec in lowered.kernels for a in spec.args}
    used |= {_root(lowered, o) for o in graph.outputs}
    constants = {name: np.ascontiguousarray(v.data) for name, v in graph.values.items()
                 if v.const and v.data is not None and name in used}
    constants.update((name, data) for name, data in lowered.constants.items() if name in used)
    for name, value in graph.values.items():
        if value.data is not None and name not in used:
            value.data = None  # the executor's own copy of the graph: the caller's keeps its arrays
    return constants


def plan_buffers(graph: Graph, lowered: Lowered) -> MemoryPlan:
    """Where each intermediate lives in the arena: known from the lowering alone, so a run
    that cannot fit is refused before any code is compiled (:mod:`memory`)."""
    external = {name for name, v in graph.values.items() if v.const and v.data is not None}
    external |= set(graph.inputs) | set(lowered.constants) | {_root(lowered, o) for o in graph.outputs}
    external |= {_root(lowered, a) for spec in lowered.kernels if spec.once for a in spec.args}  # folded results
    lifetimes: dict[str, list[int]] = {}
    for i, spec in enumerate(lowered.kernels):
        if spec.once:
            continue
        for name in spec.args:
            root = _root(lowered, name)
            if root not in external:
                span = lifetimes.setdefault(root, [i, i])
                span[0], span[1] = min(span[0], i), max(span[1], i)
    sizes = {name: value_bytes(graph, name) for name in lifetimes}
    return plan_memory(sizes, {n: (s, e) for n, (s, e) in lifetimes.items()})


CHUNKS_PER_THREAD = 4
"""A large kernel is cut into this many chunks per thread, taken in turn: a thread slowed by
another process on its core (a shared machine) takes fewer instead of holding up the rest."""
BALANCED_WORK = 256
"""How many times ``min_parallel_work`` a kernel needs to be worth cutting finer than one
chunk per thread (each chunk costs a few microseconds of Python)."""
KERNEL_CFUNC = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int64, ctypes.c_int64)


class Executor:
    def __init__(self, graph: Graph, lowered: Lowered, library: Library, *, threads: int, min_parallel_work: int):
        self.graph, self.lowered, self.library = graph, lowered, library
        self.threads = max(1, threads)
        self.min_parallel_work = min_parallel_work
        self._pool = ThreadPoolExecutor(self.threads - 1) if self.threads > 1 else None  # the caller is one more
        self.kernels = [(KERNEL_CFUNC(library.address(k.name)), k) for k in lowered.kernels]
        self.constants = _constants(graph, lowered)
        self.folded = self._fold()
        self._output_roots = {self.root(o) for o in graph.outputs}
        self.plan = plan_buffers(graph, lowered)
        self._mapped = any(isinstance(a, np.memmap) for a in self.constants.values())
        self._promotion = threading.Lock()

    def root(self, name: str) -> str:
        return _root(self.lowered, name)

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

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Feeds are already validated: C-contiguous, aligned, of the bound dtypes and shapes."""
        return self.bind(feeds)()

    def bind(self, feeds: dict[str, np.ndarray]) -> Callable[[], list[np.ndarray]]:
        """A run over buffers fixed now (the feed arrays, whose contents may change between
        calls; an arena; the outputs, which each call overwrites), every kernel's arguments
        resolved once: a loop calling one compiled step many times (a decode step) then pays
        for the kernel calls only."""
        if self._mapped:
            self._promote()
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

    def _promote(self) -> None:
        """Copy memory-mapped constants into anonymous memory (once, whichever thread runs first)."""
        with self._promotion:
            if self._mapped:
                self.constants = {name: np.array(a) if isinstance(a, np.memmap) else a
                                  for name, a in self.constants.items()}
                self._mapped = False

    def _call(self, fn, args, extent: int, work: int) -> None:
        if extent <= 0:
            return
        threads = self.threads if self._pool and work >= self.min_parallel_work else 1
        if threads == 1 or extent == 1:
            fn(args, 0, extent)
            return
        per_thread = CHUNKS_PER_THREAD if work >= self.min_parallel_work * BALANCED_WORK else 1
        chunks = min(extent, threads * per_thread)
        bounds = [extent * c // chunks for c in range(chunks + 1)]
        order = iter(range(chunks))  # shared: each thread takes the next chunk when it is free (next() holds the GIL)

        def drain():
            for c in order:
                fn(args, bounds[c], bounds[c + 1])

        futures = [self._pool.submit(drain) for _ in range(min(threads, chunks) - 1)]
        drain()  # the calling thread works too: one wake-up fewer
        for f in futures:
            f.result()

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=False)
