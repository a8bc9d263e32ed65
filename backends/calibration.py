"""Probing a target with single-GEMM graphs, the way the calibration data was measured.

``tests/test_calibration.py`` compares these predictions with published measurements
(shared/calibration/*.csv); the fitted figures in the presets say which file they fit.
A measurement also times a fixed overhead the model never pays in a graph (one synchronized
launch, the timer): ``measured_latency`` adds the preset's
``calibration.measurement_overhead_s`` so predictions and measurements compare like for like;
and an isolated kernel may reach more of the peak than a serving stack sustains through a
whole model: ``as_measured`` runs the matrix engines and the outer memory at the
calibration's own efficiencies.
"""

from __future__ import annotations

import dataclasses

from ir.dtypes import DType
from ir.graph import Graph
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType

from .schedule import Schedule
from .scheduler import schedule
from .target import Target


def matmul_graph(m: int, n: int, k: int, fmt: str = "f16") -> Graph:
    """``Y = X @ W`` with X (m x k) an input and W (k x n) a weightless constant."""
    dtype = DType.from_short(fmt)
    graph = Graph(f"matmul_{m}x{n}x{k}")
    graph.add_input("X", TensorType(dtype, (m, k)))
    graph.add_value("W", TensorType(dtype, (k, n)), const=True)
    graph.add_node("MatMul", ["X", "W"], ["Y"], name="matmul")
    graph.outputs.append("Y")
    return infer_shapes(graph)


def gemm_schedule(target: Target, m: int, n: int, k: int, fmt: str = "f16") -> Schedule:
    return schedule(matmul_graph(m, n, k, fmt), target)


def as_measured(target: Target) -> Target:
    """The target as its calibration kernels ran: matrix engines at ``calibration.matrix_efficiency``
    and the outer memory at ``calibration.memory_efficiency`` (each where given)."""
    c = target.calibration
    engines = {name: dataclasses.replace(e, efficiency=c.matrix_efficiency)
               if e.role == "matrix" and c.matrix_efficiency is not None else e for name, e in target.engines.items()}
    memory = [dataclasses.replace(m, efficiency=c.memory_efficiency)
              if m is target.outer and c.memory_efficiency is not None else m for m in target.memory]
    return dataclasses.replace(target, engines=engines, memory=memory)


def measured_latency(target: Target, m: int, n: int, k: int, fmt: str = "f16") -> float:
    """What a benchmark timing one GEMM would report: the schedule of the target as measured
    (:func:`as_measured`) plus the measurement overhead."""
    return gemm_schedule(as_measured(target), m, n, k, fmt).latency_s + target.calibration.measurement_overhead_s
