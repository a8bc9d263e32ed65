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

import backends
import ir
from backends import emulate
from backends.codegen import HostTiling, host_tiling, lower, value_inputs
from backends.target import Target
from frontends import onnx as onnx_frontend
from ir.errors import ShapeError, XpucError
from ir.formats import lookup as lookup_format
from ir.passes import optimize, quantize
from ir.shapes import bind_input_shapes
from ir.types import Dim

from . import cache, memory, model_cache
from .executor import Executor, plan_buffers
from .jit import compile_module

OPTIONS = {"threads", "dump_llvm_dir", "cache", "tiling", "optimize", "precision", "host_numerics"}


@dataclass(frozen=True)
class Options:
    threads: int
    dump_llvm_dir: str | None
    cache: bool
    tiling: HostTiling
    optimize: bool
    target: Target | None = None
    """A hardware target to emulate: each run then counts its cost on it (``last_cost``)."""
    precision: str | None = None
    """A number format (``ir.formats``) the model's products are quantized to before lowering."""
    host_numerics: bool = False
    """With a target: compute in the host's float32 (as onnxruntime does), not as the target's engines do."""

    @property
    def target_numerics(self) -> bool:
        return self.target is not None and not self.host_numerics


class CompiledModel:
    """A model compiled for the host CPU. ``run`` returns outputs in graph-output order."""

    def __init__(self, graph: ir.Graph, options: Options):
        """A model that compiles each input shape when it first runs with it (see :func:`compile`,
        which compiles static models eagerly)."""
        self.graph = graph
        self.options = options
        self.input_names = list(graph.inputs)
        self.output_names = list(graph.outputs)
        self.value_inputs = value_inputs(graph)
        self._specs: dict[tuple, Executor] = {}
        self._lock = threading.Lock()
        self._emulations: dict[Executor, emulate.Emulation] = {}
        self.last_cost = None
        """With a hardware target: the ``backends.Schedule`` of the latest run, from counted tiles."""

    @property
    def static_shapes(self) -> dict[str, tuple[int, ...]] | None:
        """The one input shape of a model that needs no other (static inputs, no value inputs)."""
        if self.value_inputs or not all(self.graph.type_of(n).is_static for n in self.graph.inputs):
            return None
        return {n: tuple(self.graph.type_of(n).shape) for n in self.graph.inputs}

    def adopt(self, executor: Executor, emulation: emulate.Emulation | None) -> None:
        """Use a specialization compiled elsewhere (a model cache hit) for the static shapes."""
        self._specs[self._spec_key(self.static_shapes, {})] = executor
        if emulation is not None:
            self._emulations[executor] = emulation

    def specialize_static(self) -> tuple[Executor, emulate.Emulation | None]:
        """Compile the static shapes now; the executor and the emulation it runs with."""
        executor = self._specialize(self.static_shapes, {})
        for value in self.graph.values.values():  # its only specialization holds what its kernels read
            value.data = None
        return executor, self._emulations.get(executor)

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
        outputs, self.last_cost = emulation.run(executor.run, arrays)
        return outputs

    def _spec_key(self, shapes: dict[str, tuple[int, ...]], values: dict[str, np.ndarray]) -> tuple:
        return tuple(shapes[n] for n in self.input_names) + tuple(values[n].tobytes() for n in self.value_inputs)

    def _specialize(self, shapes: dict[str, tuple[int, ...]], values: dict[str, np.ndarray]) -> Executor:
        key = self._spec_key(shapes, values)
        with self._lock:
            if key not in self._specs:
                graph = self.graph.copy()
                bind_input_shapes(graph, shapes)
                for name, data in values.items():
                    graph.replace_uses(name, graph.add_constant(data.copy(), name))
                if not all(v.type.is_static for v in graph.values.values() if not v.const):
                    graph = ir.passes.infer_shapes(graph)
                memory.refuse_huge_tensors(graph)  # before optimizing: folding and fusion allocate too
                graph = optimize(graph) if self.options.optimize else graph
                if self.options.precision:
                    graph = quantize(graph, self.options.precision)
                numerics = emulate.rounding_plan(graph, self.options.target) if self.options.target_numerics else None
                lowered = lower(graph, self.options.tiling, numerics)
                memory.refuse_huge_run(graph, plan_buffers(graph, lowered))
                emulation = emulate.attach(graph, lowered, self.options.target) if self.options.target else None
                library = compile_module(lowered.module, dump_llvm_dir=self.options.dump_llvm_dir,
                                         use_cache=self.options.cache)
                self._specs[key] = Executor(graph, lowered, library, threads=self.options.threads,
                                            min_parallel_work=self.options.tiling.parallel_min_work)
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
    target: "cpu", or a hardware target (preset name, spec path, ``backends.Target``): the host
        computes the outputs the way the target's engines do (each product's operands rounded to
        the format its matrix engine multiplies in, ``backends.numerics``) and each run counts
        its cost on the target into ``last_cost``.
    input_shapes: bind symbolic input dims now (otherwise each new feed shape compiles once).
    options: ``threads`` (default: all cores), ``dump_llvm_dir`` (write each kernel's IR),
        ``cache`` (default True: reuse whole compiled models (:mod:`model_cache`) and kernels'
        object code from ``$XPUC_CACHE_DIR``; ``XPUC_NO_CACHE=1`` also turns it off),
        ``tiling`` (a :class:`HostTiling`: the host code's loop tiling), ``optimize`` (default True: run ``ir.passes.optimize``),
        ``precision`` (a format name from ``ir.formats``: quantize the products with
        ``ir.passes.quantize`` after optimizing; default: the model's own types),
        ``host_numerics`` (default False: with a target, compute in the host's float32 instead,
        as onnxruntime does; the cost counted is the same).
    """
    hardware = hardware_target(target)
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
        tiling=options.get("tiling") or host_tiling(),
        optimize=bool(options.get("optimize", True)),
        target=hardware,
        precision=lookup_format(options["precision"]).name if options.get("precision") else None,
        host_numerics=bool(options.get("host_numerics", False)),
    )
    key = None
    if opts.cache and not opts.dump_llvm_dir and not isinstance(model, ir.Graph):
        key = model_cache.key(model, input_shapes, (opts.tiling, opts.optimize, opts.target, opts.precision,
                                                    opts.target_numerics))
    cached = key and model_cache.load(key, target=hardware, threads=opts.threads,
                                      min_parallel_work=opts.tiling.parallel_min_work)
    if cached:
        compiled = CompiledModel(cached[0].graph, opts)
        compiled.adopt(*cached)
        return compiled
    if isinstance(model, ir.Graph):
        graph = model.copy()
        if input_shapes:
            bind_input_shapes(graph, input_shapes)
    else:
        graph = onnx_frontend.load(model, input_shapes=input_shapes)
    compiled = CompiledModel(graph, opts)
    if compiled.static_shapes is not None:
        specialization = compiled.specialize_static()
        if key is not None:
            model_cache.store(key, *specialization)
    return compiled


def hardware_target(target) -> Target | None:
    """None for the host CPU itself; else the preset name, spec path or ``Target`` to emulate."""
    if isinstance(target, Target):
        return target
    if not isinstance(target, (str, os.PathLike)):
        raise XpucError(f"target must be 'cpu', a preset name, a spec path or a backends.Target, "
                        f"got {type(target).__name__}")
    return None if target == "cpu" else backends.load_target(target)
