"""``compile(model) -> CompiledModel``: load, optimize, lower, JIT, and run with checked feeds.

Models with symbolic input dims are specialized per concrete shape on first run with that
shape; each specialization is compiled once and cached on the model. Inputs whose contents
decide shapes (a Reshape target fed as an input) are bound as constants the same way, per
distinct value.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx

import ir
from backends.codegen import CpuSchedule, host_schedule, lower, value_inputs
from backends.target import Target
from frontends import onnx as onnx_frontend
from ir.errors import ShapeError, XpucError
from ir.passes import optimize
from ir.types import Dim

from . import cache, cost, model_cache
from .executor import Executor
from .jit import compile_module

OPTIONS = {"threads", "dump_llvm_dir", "cache", "schedule", "optimize"}


@dataclass(frozen=True)
class Options:
    threads: int
    dump_llvm_dir: str | None
    cache: bool
    schedule: CpuSchedule
    optimize: bool
    target: Target | None = None
    """A hardware target to emulate: each run then counts its cost on it (``last_cost``)."""


class CompiledModel:
    """A model compiled for the host CPU. ``run`` returns outputs in graph-output order."""

    def __init__(self, graph: ir.Graph, options: Options, *, cache_key: model_cache.Key | None = None,
                 cached: tuple[Executor, cost.Emulation | None] | None = None):
        """``cached``: the specialization a model cache hit brought (``graph`` is then its optimized
        graph); else, with ``cache_key``, the eager specialization is stored under that key."""
        self.graph = graph
        self.options = options
        self.input_names = list(graph.inputs)
        self.output_names = list(graph.outputs)
        self.value_inputs = value_inputs(graph)
        self._specs: dict[tuple, Executor] = {}
        self._lock = threading.Lock()
        self._emulations: dict[Executor, cost.Emulation] = {}
        self.last_cost = None
        """With a hardware target: the ``backends.Schedule`` of the latest run, from counted tiles."""
        if all(graph.type_of(n).is_static for n in graph.inputs) and not self.value_inputs:
            shapes = {n: tuple(graph.type_of(n).shape) for n in graph.inputs}
            if cached is not None:
                self._specs[self._spec_key(shapes, {})] = cached[0]
                if cached[1] is not None:
                    self._emulations[cached[0]] = cached[1]
                return
            executor = self._specialize(shapes, {})
            for value in graph.values.values():  # its only specialization holds what its kernels read
                value.data = None
            if cache_key is not None:
                model_cache.store(cache_key, executor, self._emulations.get(executor))

    @property
    def peak_bytes(self) -> int | None:
        """Arena bytes of the most recent specialization (None before any is compiled)."""
        return self._last.plan.peak_bytes if self._specs else None

    @property
    def intermediate_bytes(self) -> int | None:
        """What the intermediates would take with no buffer reuse."""
        return self._last.plan.total_bytes if self._specs else None

    @property
    def _last(self) -> Executor:
        return next(reversed(self._specs.values()))

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        arrays = self._validate(feeds)
        executor = self._specialize({n: a.shape for n, a in arrays.items()},
                                    {n: arrays[n] for n in self.value_inputs})
        emulation = self._emulations.get(executor)
        if emulation is None:
            return executor.run(arrays)
        outputs, self.last_cost = emulation.run(executor, arrays)
        return outputs

    def _spec_key(self, shapes: dict[str, tuple[int, ...]], values: dict[str, np.ndarray]) -> tuple:
        return tuple(shapes[n] for n in self.input_names) + tuple(values[n].tobytes() for n in self.value_inputs)

    def _specialize(self, shapes: dict[str, tuple[int, ...]], values: dict[str, np.ndarray]) -> Executor:
        key = self._spec_key(shapes, values)
        with self._lock:
            if key not in self._specs:
                graph = self.graph.copy()
                onnx_frontend.bind_input_shapes(graph, shapes)
                for name, data in values.items():
                    graph.replace_uses(name, graph.add_constant(data.copy(), name))
                graph = optimize(graph) if self.options.optimize else ir.passes.infer_shapes(graph)
                lowered = lower(graph, self.options.schedule)
                emulation = cost.attach(graph, lowered, self.options.target) if self.options.target else None
                library = compile_module(lowered.module, dump_llvm_dir=self.options.dump_llvm_dir,
                                         use_cache=self.options.cache)
                self._specs[key] = Executor(graph, lowered, library, threads=self.options.threads,
                                            min_parallel_work=self.options.schedule.parallel_min_work)
                if emulation is not None:
                    self._emulations[self._specs[key]] = emulation
            return self._specs[key]

    def _validate(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check every feed before any native code runs; returns contiguous, aligned arrays."""
        if not isinstance(feeds, Mapping):
            raise XpucError(f"feeds must be a dict of name -> numpy array, got {type(feeds).__name__}")
        missing = [n for n in self.input_names if n not in feeds]
        unknown = [n for n in feeds if n not in self.input_names]
        if missing or unknown:
            raise XpucError("feeds do not match the model inputs: "
                            + "; ".join(part for part in (f"missing {missing}" if missing else "",
                                                          f"unknown {unknown}" if unknown else "") if part)
                            + f" (inputs are {self.input_names})")
        bindings: dict[str, int] = {}
        arrays = {}
        for name in self.input_names:
            value = feeds[name]
            if not isinstance(value, np.ndarray):
                raise XpucError(f"input {name!r} must be a numpy array, got {type(value).__name__}")
            t = self.graph.type_of(name)
            if value.dtype != t.dtype.numpy:
                raise XpucError(f"input {name!r} must have dtype {t.dtype.numpy}, got {value.dtype}")
            if t.shape is not None:
                if value.ndim != len(t.shape):
                    raise ShapeError(f"input {name!r} must have rank {len(t.shape)} ({t}), got shape {value.shape}")
                for i, (want, got) in enumerate(zip(t.shape, value.shape)):
                    if isinstance(want, int) and want != got:
                        raise ShapeError(f"input {name!r}: dimension {i} must be {want}, got {got} (shape {value.shape})")
                    if isinstance(want, str) and bindings.setdefault(want, got) != got:
                        raise ShapeError(f"input {name!r}: dimension {i} ({want!r}) is {got}, but another input "
                                         f"binds {want!r} to {bindings[want]}")
            arrays[name] = np.require(value, requirements=["C", "A"])
        return arrays

    def __repr__(self) -> str:
        return f"<CompiledModel {self.graph.name!r}: inputs {self.input_names}, outputs {self.output_names}>"


def compile(model: str | os.PathLike | onnx.ModelProto | ir.Graph, target: str | Target = "cpu", *,
            input_shapes: Mapping[str, Sequence[Dim] | str] | None = None, **options: Any) -> CompiledModel:
    """Compile a model for the host CPU.

    model: a path, an ``onnx.ModelProto`` or an ``ir.Graph``.
    target: "cpu", or a hardware target (preset name, spec path, ``backends.Target``) whose cost
        each run counts into ``last_cost`` while the host computes the outputs.
    input_shapes: bind symbolic input dims now (otherwise each new feed shape compiles once).
    options: ``threads`` (default: all cores), ``dump_llvm_dir`` (write each kernel's IR),
        ``cache`` (default True: reuse whole compiled models (:mod:`model_cache`) and kernels'
        object code from ``$XPUC_CACHE_DIR``; ``XPUC_NO_CACHE=1`` also turns it off),
        ``schedule`` (a :class:`CpuSchedule`), ``optimize`` (default True: run ``ir.passes.optimize``).
    """
    hardware = cost.hardware_target(target)
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        raise XpucError(f"unknown compile option(s) {unknown}; known: {sorted(OPTIONS)}")
    if not isinstance(model, (ir.Graph, onnx.ModelProto, str, os.PathLike, bytes)):
        raise XpucError(f"cannot compile a {type(model).__name__}: pass a path, an onnx.ModelProto or an ir.Graph")
    dump = options.get("dump_llvm_dir")
    opts = Options(
        threads=int(options.get("threads") or os.cpu_count() or 1),
        dump_llvm_dir=str(Path(dump)) if dump else None,
        cache=bool(options.get("cache", True)) and cache.enabled(),
        schedule=options.get("schedule") or host_schedule(),
        optimize=bool(options.get("optimize", True)),
        target=hardware,
    )
    key = None
    if opts.cache and not opts.dump_llvm_dir and not isinstance(model, ir.Graph):
        key = model_cache.key(model, input_shapes, (opts.schedule, opts.optimize, opts.target))
    cached = key and model_cache.load(key, target=hardware, threads=opts.threads,
                                      min_parallel_work=opts.schedule.parallel_min_work)
    if cached:
        return CompiledModel(cached[0].graph, opts, cached=cached)
    if isinstance(model, ir.Graph):
        graph = model.copy()
        if input_shapes:
            onnx_frontend.bind_input_shapes(graph, input_shapes)
    else:
        graph = onnx_frontend.load(model, input_shapes=input_shapes)
    return CompiledModel(graph, opts, cache_key=key)
