"""The CPU that native code is generated for: the host, or the one ``XPUC_CPU`` names.

``XPUC_CPU=<LLVM CPU name>`` (``znver3``, ``haswell``, ``x86-64-v3``, ``x86-64`` ...) compiles
for that CPU with LLVM's default features for it, so the AVX2 or the generic path can be
tested and benchmarked on an AVX-512 host. The code must still run here: name a CPU whose
instructions the host also has. The name and features are part of every cache key
(``runtime.jit.host_id``).

What code generation needs to know about the CPU (vector width, FMA, bf16 and int8 dot
instructions) is asked of LLVM, the one place that knows every CPU it supports: tiny probe
functions are compiled for the CPU and their assembly read, so no table of CPUs lives here.
Cache sizes are the host's whatever the override (sysfs; safe defaults where it is absent).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm

from ir.errors import XpucError

CPU_ENV = "XPUC_CPU"
DEFAULT_CACHES = (32 << 10, 512 << 10, 8 << 20)
"""L1d, L2 (per core) and L3 bytes assumed where sysfs does not say: small enough for any
x86-64 or AArch64 server core of the last decade, so blocking sized from them never spills."""

PROBES = r"""
define void @vector_bits(ptr %p) {
  %a = load <16 x float>, ptr %p
  %b = fadd <16 x float> %a, %a
  store <16 x float> %b, ptr %p
  ret void
}
define <4 x float> @fma(<4 x float> %a) {
  %b = call <4 x float> @llvm.fma.v4f32(<4 x float> %a, <4 x float> %a, <4 x float> %a)
  ret <4 x float> %b
}
declare <4 x float> @llvm.fma.v4f32(<4 x float>, <4 x float>, <4 x float>)
define <8 x bfloat> @bf16(<8 x float> %a) {
  %b = fptrunc <8 x float> %a to <8 x bfloat>
  ret <8 x bfloat> %b
}
define <8 x i32> @vnni(<16 x i16> %a, <16 x i16> %b, <8 x i32> %acc) {
  %sa = sext <16 x i16> %a to <16 x i32>
  %sb = sext <16 x i16> %b to <16 x i32>
  %m = mul <16 x i32> %sa, %sb
  %even = shufflevector <16 x i32> %m, <16 x i32> poison, <8 x i32> <i32 0, i32 2, i32 4, i32 6, i32 8, i32 10, i32 12, i32 14>
  %odd = shufflevector <16 x i32> %m, <16 x i32> poison, <8 x i32> <i32 1, i32 3, i32 5, i32 7, i32 9, i32 11, i32 13, i32 15>
  %s = add <8 x i32> %even, %odd
  %r = add <8 x i32> %s, %acc
  ret <8 x i32> %r
}
"""
"""Plain IR whose instruction selection reveals a feature: a 512-bit add uses zmm registers only
with AVX-512, an fma becomes vfmadd only with FMA, a bf16 rounding becomes vcvtneps2bf16 with
AVX512_BF16, and a pairwise i16 dot plus accumulator becomes vpdpwssd only with (AVX-)VNNI."""


@dataclass(frozen=True)
class Cpu:
    """What code generation and the JIT know about the CPU they generate code for."""

    name: str
    """LLVM CPU name (``znver4``, ``x86-64-v3`` ...)."""
    features: str
    """LLVM feature string: the host's own features, or "" (the named CPU's defaults) for an override."""
    triple: str
    vector_bits: int
    """Widest float vector the CPU computes in one register: 512, 256 or 128."""
    vector_registers: int
    fma: bool
    bf16_dot: bool
    """vdpbf16ps: bf16 pairs multiplied and accumulated in fp32 (AVX512_BF16)."""
    int8_dot: bool
    """vpdpbusd: u8 x s8 quads accumulated in int32 (AVX512-VNNI or AVX-VNNI)."""
    caches: tuple[int, int, int]
    """L1 data and L2 bytes of one core, L3 bytes shared."""
    overridden: bool = False

    @property
    def float_lanes(self) -> int:
        return self.vector_bits // 32


class CpuError(XpucError):
    """``XPUC_CPU`` names a CPU LLVM does not know for this target."""


def _initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def target_machine(cpu: "Cpu", opt: int = 3) -> llvm.TargetMachine:
    """A fresh target machine for ``cpu`` (an execution engine takes ownership of the one it gets)."""
    _initialize()
    return llvm.Target.from_triple(cpu.triple).create_target_machine(cpu=cpu.name, features=cpu.features, opt=opt,
                                                                     codemodel="jitdefault")


def _probe(name: str, features: str, triple: str) -> str:
    """Assembly of :data:`PROBES` for one CPU. LLVM only prints a warning on stderr for an unknown
    name, then aborts the process when it emits code for it: the warning becomes a :class:`CpuError`."""
    _initialize()
    read, write = os.pipe()  # not a temporary file: a full disk must not stop code generation
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        tm = llvm.Target.from_triple(triple).create_target_machine(cpu=name, features=features, opt=2)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write)
    with os.fdopen(read, "rb") as err:  # a one-line warning at most: far below the pipe's buffer
        complaint = err.read().decode(errors="replace")
    if "not a recognized processor" in complaint:  # checked before any code is emitted: LLVM aborts on it
        raise CpuError(f"{CPU_ENV}={name!r} is not a CPU LLVM knows for {triple} (try znver3, haswell, x86-64-v3, "
                       "x86-64 or the host's own name)")
    return tm.emit_assembly(llvm.parse_assembly(PROBES))


def host_caches(root: Path = Path("/sys/devices/system/cpu/cpu0/cache")) -> tuple[int, int, int]:
    """(L1d, L2, L3) bytes from sysfs, each level falling back to :data:`DEFAULT_CACHES`."""
    found: dict[int, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip()
        except (OSError, ValueError):
            continue
        if kind in ("Data", "Unified") and size[:-1].isdigit():
            found[level] = int(size[:-1]) << {"K": 10, "M": 20, "G": 30}.get(size[-1], 0)
    return tuple(found.get(level, default) for level, default in zip((1, 2, 3), DEFAULT_CACHES))  # type: ignore


@functools.cache
def describe(name: str, features: str, overridden: bool) -> Cpu:
    """Probe ``name`` (with ``features``) and the host's caches into a :class:`Cpu`."""
    triple = llvm.get_process_triple()
    asm = _probe(name, features, triple)
    bits = 512 if "zmm" in asm else 256 if "ymm" in asm else 128
    arm = triple.startswith(("aarch64", "arm64"))
    return Cpu(name=name, features=features, triple=triple, vector_bits=bits,
               vector_registers=32 if bits == 512 or arm else 16,
               fma="vfmadd" in asm or "fmla" in asm, bf16_dot=bits == 512 and "vcvtneps2bf16" in asm,
               int8_dot="vpdpwssd" in asm, caches=host_caches(), overridden=overridden)


def host() -> Cpu:
    """The CPU this process runs on, with its own features."""
    _initialize()
    return describe(llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten(), False)


def target() -> Cpu:
    """The CPU to generate code for: ``$XPUC_CPU`` if set (LLVM's features for that name), else the host."""
    _initialize()
    name = os.environ.get(CPU_ENV, "").strip()
    if name and name != llvm.get_host_cpu_name():
        return describe(name, "", True)
    return host()
