"""Compile an llvmlite module for the host CPU and load it into this process.

llvmlite.binding with the CPU name and features of ``backends.codegen.cpu.target()`` (the
host's, or LLVM's for the CPU ``XPUC_CPU`` names), the new pass manager at O3 with
loop and SLP vectorization. Each kernel is compiled on its own, under a symbol named after
the hash of its body: kernels that only differ in name (the same layer repeated twelve
times) are optimized once, and each kernel's object code goes through the disk cache in
:mod:`cache` by that hash, so an edit to one kernel recompiles only that kernel.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import llvmlite.binding as llvm
from llvmlite import ir as ll

from backends.codegen import cpu as cpus

from . import cache

OPT_LEVEL = 3
PARALLEL_MIN_KERNELS = 8
"""Fewer cache misses than this compile in-process: a worker round trip costs more."""




@dataclass
class Library:
    """Loaded machine code: function addresses by kernel name. Keeps its engine alive."""

    engine: llvm.ExecutionEngine
    cached: bool
    """Every kernel's object code came from the disk cache."""
    seconds: float
    symbols: dict[str, str]
    """kernel name -> the symbol it was compiled under (shared by identical kernels)."""
    compiled: int = 0
    """How many distinct kernels were optimized and compiled (not found in the cache)."""
    objects: dict[str, bytes] = field(default_factory=dict)
    """symbol -> object code (what a whole-model cache entry keeps, see :mod:`model_cache`)."""
    addresses: dict[str, int] = field(default_factory=dict)

    def address(self, name: str) -> int:
        if name not in self.addresses:
            self.addresses[name] = self.engine.get_function_address(self.symbols[name])
        return self.addresses[name]


def optimize(module: llvm.ModuleRef, tm: llvm.TargetMachine) -> None:
    pto = llvm.create_pipeline_tuning_options(speed_level=OPT_LEVEL)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(module, pb)


def kernel_sources(module: ll.Module) -> dict[str, tuple[str, str]]:
    """kernel name -> (symbol, standalone module text) with the symbol derived from the body."""
    declarations = [f for f in module.functions if f.is_declaration]
    sources = {}
    for fn in module.functions:
        if fn.is_declaration:
            continue
        body = str(fn).replace(f'@"{fn.name}"', "@__kernel__", 1)
        used = [str(d) for d in declarations if f'@"{d.name}"' in body]
        text = "\n".join(used + [body])
        symbol = "xk_" + cache.cache_key(text)[:24]
        sources[fn.name] = symbol, text.replace("@__kernel__", f'@"{symbol}"', 1)
    return sources


def _compile_text(text: str, cpu: cpus.Cpu) -> bytes:
    """Module text (triple and data layout included) -> object code for ``cpu`` (passed, not read
    from the environment: pool workers keep the environment they were forked with)."""
    tm = cpus.target_machine(cpu, OPT_LEVEL)
    ref = llvm.parse_assembly(text)
    ref.verify()
    optimize(ref, tm)
    return tm.emit_object(ref)


@functools.cache
def _pool() -> concurrent.futures.ProcessPoolExecutor:
    """Workers forked from a fork server with llvmlite preloaded: they start in milliseconds, and,
    unlike a plain fork, never inherit locks held by the executor's threads. Shut down at exit."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = concurrent.futures.ProcessPoolExecutor(os.cpu_count() or 1, mp_context=context)
    atexit.register(pool.shutdown, wait=True, cancel_futures=True)
    return pool


def _compile_all(texts: list[str], cpu: cpus.Cpu) -> list[bytes]:
    if len(texts) < PARALLEL_MIN_KERNELS or (os.cpu_count() or 1) == 1:
        return [_compile_text(t, cpu) for t in texts]
    try:
        return list(_pool().map(_compile_text, texts, [cpu] * len(texts),
                                chunksize=max(1, len(texts) // (4 * (os.cpu_count() or 1)))))
    except concurrent.futures.process.BrokenProcessPool:  # a worker died (killed, out of memory): go serial
        _pool.cache_clear()
        return [_compile_text(t, cpu) for t in texts]


def compile_module(module: ll.Module, *, dump_llvm_dir: str | Path | None = None, use_cache: bool = True) -> Library:
    """Optimize and compile each distinct kernel of ``module`` (or fetch its object code from the
    cache) and load them all into one execution engine."""
    start = time.perf_counter()
    cpu = cpus.target()
    tm = cpus.target_machine(cpu, OPT_LEVEL)
    if dump_llvm_dir is not None:
        _dump(module, Path(dump_llvm_dir))
    header = f'target triple = "{tm.triple}"\ntarget datalayout = "{tm.target_data}"\n'
    target = host_id(cpu)
    sources = kernel_sources(module)
    keys = {symbol: cache.cache_key(text, *target) for symbol, text in sources.values()}
    objects = {symbol: cache.load(key) if use_cache else None for symbol, key in keys.items()}
    missing = [symbol for symbol, obj in objects.items() if obj is None]
    texts = {symbol: text for symbol, text in sources.values()}
    for symbol, obj in zip(missing, _compile_all([header + texts[symbol] for symbol in missing], cpu)):
        objects[symbol] = obj
        if use_cache:
            cache.store(keys[symbol], obj)
    return link(objects, {name: symbol for name, (symbol, _) in sources.items()}, start, compiled=len(missing))


def link(objects: dict[str, bytes], symbols: dict[str, str], start: float, *, compiled: int = 0) -> Library:
    """Load object code (symbol -> bytes) into one execution engine; ``start`` is when compiling began."""
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), cpus.target_machine(cpus.target(), OPT_LEVEL))
    for obj in objects.values():
        engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return Library(engine, not compiled, time.perf_counter() - start, symbols, compiled, objects)


def host_id(cpu: cpus.Cpu | None = None) -> tuple[str, ...]:
    """What decides the machine code besides the IR: triple, CPU name and features (the override's
    when ``XPUC_CPU`` is set), LLVM version, -O level."""
    cpu = cpu or cpus.target()
    return (cpu.triple, cpu.name, cpu.features, ".".join(map(str, llvm.llvm_version_info)), f"O{OPT_LEVEL}")


def _dump(module: ll.Module, folder: Path) -> None:
    """One ``.ll`` file per kernel (its declarations included) so each can be read alone."""
    folder.mkdir(parents=True, exist_ok=True)
    declarations = [str(f) for f in module.functions if f.is_declaration]
    for fn in module.functions:
        if not fn.is_declaration:
            (folder / f"{fn.name}.ll").write_text("\n".join(declarations + [str(fn)]) + "\n")
