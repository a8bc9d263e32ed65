"""The CPU code is generated for (``backends.codegen.cpu``): what LLVM's probes find on named
CPUs, the ``XPUC_CPU`` override reaching the tiling, the JIT and every cache key, and the
tiling derived from registers and caches (hand-computed)."""

from __future__ import annotations

import dataclasses

import llvmlite.binding as llvm
import pytest
from onnx import TensorProto, helper

import runtime
from backends.codegen import cpu as cpus
from backends.codegen.tiling import host_tiling, register_block
from runtime import jit


@pytest.mark.parametrize("name, bits, fma, bf16, int8", [
    ("x86-64", 128, False, False, False),       # SSE2 baseline
    ("haswell", 256, True, False, False),       # AVX2 + FMA
    ("znver3", 256, True, False, False),
    ("alderlake", 256, True, False, True),      # AVX-VNNI, no AVX-512
    ("skylake-avx512", 512, True, False, False),
    ("cooperlake", 512, True, True, True),      # AVX512_BF16 + VNNI
    ("znver4", 512, True, True, True),
])
def test_probes_read_features_of_named_cpus(name, bits, fma, bf16, int8):
    cpu = cpus.describe(name, "", True)
    assert (cpu.vector_bits, cpu.fma, cpu.bf16_dot, cpu.int8_dot) == (bits, fma, bf16, int8)
    assert cpu.vector_registers == (32 if bits == 512 else 16)


def test_host_probe_agrees_with_host_feature_flags(monkeypatch):
    monkeypatch.delenv(cpus.CPU_ENV, raising=False)
    host, flags = cpus.target(), llvm.get_host_cpu_features()
    assert host.name == llvm.get_host_cpu_name() and not host.overridden
    assert host.vector_bits == (512 if flags.get("avx512f") else 256 if flags.get("avx") else 128)
    assert host.fma == bool(flags.get("fma"))
    assert host.bf16_dot == bool(flags.get("avx512bf16"))
    assert host.int8_dot == bool(flags.get("avx512vnni") or flags.get("avxvnni"))


def test_override_reaches_tiling_and_cache_keys(monkeypatch):
    monkeypatch.setenv(cpus.CPU_ENV, "x86-64")
    generic = cpus.target()
    assert generic.overridden and generic.name == "x86-64" and generic.features == ""
    assert host_tiling().vector_width == 4 and host_tiling().cpu == "x86-64"
    generic_id = jit.host_id()
    monkeypatch.delenv(cpus.CPU_ENV)
    assert jit.host_id() != generic_id and "x86-64" in generic_id


def test_unknown_cpu_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(cpus.CPU_ENV, "no-such-cpu")
    with pytest.raises(cpus.CpuError, match="no-such-cpu"):
        runtime.compile(_tiny_model())


def _tiny_model():
    f = TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", f, [4])],
                              [helper.make_tensor_value_info("y", f, [4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def test_register_blocks_fit_the_register_file():
    # 32 registers: 6 x 4 = 24 accumulators + 4 B vectors + 1 broadcast = 29; 6 FMAs per 2.5 loads
    assert register_block(32) == (6, 4)
    # 16 registers: 6 x 2 = 12 + 2 + 1 = 15 (the Haswell 6x16 block)
    assert register_block(16) == (6, 2)


def test_row_block_fills_half_of_l2():
    zen4 = dataclasses.replace(cpus.describe("znver4", "", True), caches=(32 << 10, 1 << 20, 32 << 20))
    # half of 1 MiB / (6 rows x 1024 x 4 B) = 21.3 -> 21 tiles of 6 rows
    assert host_tiling(zen4).mc == 126
    small = dataclasses.replace(zen4, caches=(32 << 10, 256 << 10, 8 << 20))
    assert host_tiling(small).mc == 30  # 128 KiB / 24 KiB = 5 tiles


def test_cache_sizes_from_sysfs(tmp_path):
    for i, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"),
                                             (3, "Unified", "105M")]):
        folder = tmp_path / f"index{i}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    assert cpus.host_caches(tmp_path) == (48 << 10, 2 << 20, 105 << 20)
    assert cpus.host_caches(tmp_path / "absent") == cpus.DEFAULT_CACHES
