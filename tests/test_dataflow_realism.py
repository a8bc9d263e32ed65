"""SRAM-dataflow mechanisms against hand-computed values: the per-kernel synchronization of a
statically scheduled chip, the dense (not sparse) wafer peak, and collectives over Groq's
directly linked node."""

from __future__ import annotations

import dataclasses

import pytest

import backends
from backends.collectives import all_reduce_s
from ir.dtypes import DType
from ir.graph import Graph
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType


def softmax_chain(kernels: int) -> Graph:
    """``kernels`` Softmaxes in a row: a reduction does not absorb another, so each is a kernel."""
    graph = Graph("chain")
    graph.add_input("x0", TensorType(DType.FLOAT16, (1, 64)))
    for i in range(kernels):
        graph.add_node("Softmax", [f"x{i}"], [f"x{i + 1}"], name=f"softmax{i}")
    graph.outputs.append(f"x{kernels}")
    return infer_shapes(graph)


def test_every_kernel_waits_for_its_synchronization():
    """A serial chain of 3 kernels on dataflow-generic with 2 us of sync per kernel: exactly
    6 us later than without, and each kernel, far shorter than 2 us, is labelled sync-bound."""
    base = backends.load_target("dataflow-generic")
    synced = dataclasses.replace(base, sync_s=2e-6)
    graph = softmax_chain(3)
    plain, slow = backends.schedule(graph, base), backends.schedule(graph, synced)
    assert slow.kernels == plain.kernels == 3
    assert slow.latency_s - plain.latency_s == pytest.approx(3 * 2e-6)
    assert {o.bound for o in slow.ops} == {"sync"}


def test_cerebras_peak_is_the_dense_one():
    """900,000 cores x 8 fp16 lanes x 2 FLOP per FMA x 1.1 GHz = 15.84 PFLOP/s, one eighth of
    the 125 PF headline (which counts sparsity)."""
    cores = backends.load_target("cerebras-wse3").engines["cores"]
    assert cores.peak("f16") == pytest.approx(900_000 * 8 * 2 * 1.1e9)
    assert cores.peak("f16") == pytest.approx(125e15 / 8, rel=0.02)


def test_groq_all_reduce_is_hops_and_bytes_only():
    """A software-scheduled network has no collective launch or barrier: a node's 8 chips,
    each linked to the others, all-reduce in two hops plus 2 x 7/8 of the bytes at the
    cabled 224 of 240 GB/s."""
    link = backends.load_target("groq-lpu").interconnect
    size = 8192 * 2
    assert link.collective_latency_s == 0
    assert all_reduce_s(link, 8, size) == pytest.approx(2 * (link.latency_s + 7 / 8 * size / (240e9 * 0.93)))


def test_sram_pipelines_at_steady_state_cost_a_fraction_of_one_pass_alone():
    """Decode of a 7B model on groq-lpu spans many pipeline stages: kept full, each chip's idle
    power is charged over one stage's period, not the whole pass."""
    from frontends import hf
    from ir.passes import optimize

    graph = optimize(hf.load("llama-2-7b", input_shapes={"input_ids": "1x1"}))
    s = backends.schedule(graph, backends.load_target("groq-lpu"))
    assert s.deployment.pp > 4
    assert s.steady.period_s < s.latency_s / 4
    assert s.steady.usd_per_pass == pytest.approx(s.cost_usd * s.steady.period_s / s.latency_s)
    idle = backends.load_target("groq-lpu").power.idle_w * s.chips
    assert s.energy_j - s.steady.joules_per_pass == pytest.approx(idle * (s.latency_s - s.steady.period_s))
