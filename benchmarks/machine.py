"""What the benchmarks need to know about this machine: a description (CPU model, vector
features, what LLVM calls it), the code paths to compare, a peak fp32 FMA rate per path,
and a best-of-N timer.

The peak is cores x GHz x FMA pipes x lanes per pipe x 2 FLOPs. /proc/cpuinfo gives cores,
the nominal clock and the vector flags; it does not say how many FMA pipes a core has or
how wide they are, so those are assumptions: 2 pipes (true of AVX2/AVX-512 cores since
Haswell and Zen 2; ``XPUC_FMA_UNITS`` overrides), as wide as the path's vectors except on
AMD family 19h (Zen 3/4), whose pipes are 256 bits wide and run a 512-bit FMA as two
halves (AMD, Software Optimization Guide for the AMD Zen4 Microarchitecture, 57647 rev
1.00, section 2.11), so AVX-512 doubles no peak there. Boost clocks make the real peak higher.
"""

from __future__ import annotations

import datetime
import os
import time
from contextlib import contextmanager
from pathlib import Path

VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16",
                "avx512_vnni", "avx_vnni", "avx512_fp16", "amx_bf16")
PATHS = {"host": "", "avx2": "znver3"}
"""Code paths the speed goals are measured on, as ``XPUC_CPU`` values: the host's own, and
AVX2 + FMA (LLVM's Zen 3) compiled by the override on the same machine."""


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return info


def describe() -> str:
    """Model, family/model numbers, cores, clock, date, vector flags and LLVM's name for the host."""
    from backends.codegen import cpu as cpus
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    host = cpus.host()
    return (f"{info.get('model name', 'unknown CPU')} (family {info.get('cpu family', '?')} model "
            f"{info.get('model', '?')}, LLVM {host.name}), nproc {os.cpu_count()}, {info.get('cpu MHz', '?')} MHz, "
            f"{datetime.date.today().isoformat()}\nvector flags: {' '.join(f for f in VECTOR_FLAGS if f in flags)}; "
            f"L1d/L2/L3 {' / '.join(f'{c >> 10} KiB' for c in host.caches)}")


@contextmanager
def code_path(name: str):
    """Compile for ``PATHS[name]`` inside the block (sets ``XPUC_CPU``)."""
    saved = os.environ.get("XPUC_CPU")
    os.environ["XPUC_CPU"] = PATHS[name]
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("XPUC_CPU", None)
        else:
            os.environ["XPUC_CPU"] = saved


def path_label(name: str) -> str:
    from backends.codegen import cpu as cpus
    with code_path(name):
        cpu = cpus.target()
    return f"{name} ({cpu.name}, {cpu.vector_bits}-bit{', FMA' if cpu.fma else ''})"


def peak_gflops(cores: int, vector_bits: int) -> float:
    """Peak fp32 GFLOP/s of ``cores`` cores at the nominal clock with ``vector_bits`` vectors (0 when unknown)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    pipe_bits = 256 if info.get("vendor_id") == "AuthenticAMD" and info.get("cpu family") == "25" else vector_bits
    lanes = min(vector_bits, pipe_bits) // 32
    fma_units = int(os.environ.get("XPUC_FMA_UNITS", 2 if "fma" in flags or "avx512f" in flags else 0))
    ghz = float(info.get("cpu MHz", 0)) / 1000
    return cores * ghz * max(fma_units, 1) * lanes * (2 if fma_units else 1)


def add_clock_arguments(parser) -> None:
    """``--threads N`` and ``--cpu-time``: on a shared machine wall time measures the neighbours;
    one thread timed by the process's CPU time measures the work (robust to load, not to cache sharing)."""
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--cpu-time", action="store_true", help="one thread, timed by process CPU time")


def clock_of(args):
    """The clock :func:`add_clock_arguments`' options ask for (``--cpu-time`` sets one thread)."""
    if args.cpu_time:
        args.threads = 1
        return time.process_time
    return time.perf_counter


def best_seconds(fn, repeat: int = 5, budget_s: float = 2.0, clock=time.perf_counter) -> float:
    """Fastest call after one warm-up: at least ``repeat`` calls, more while under ``budget_s``
    (on a shared machine the minimum of many short runs is the stable statistic)."""
    fn()
    times: list[float] = []
    while len(times) < repeat or sum(times) < budget_s and len(times) < 200:
        start = clock()
        fn()
        times.append(clock() - start)
    return min(times)


def interleaved_best(fns: dict, budget_s: float, repeat: int = 5, clock=time.perf_counter) -> dict[str, float]:
    """Best time of each function, calling them in turn until ``budget_s`` of wall time is spent
    (at least ``repeat`` rounds): each sees the same mix of quiet and busy moments on a shared
    machine, so their ratio is fair even when the load changes during the run. ``clock``
    measures each call (``time.process_time``: the CPU time of a one-thread run)."""
    for fn in fns.values():
        fn()
    best = {name: float("inf") for name in fns}
    start, rounds = time.perf_counter(), 0
    while rounds < repeat or time.perf_counter() - start < budget_s:
        for name, fn in fns.items():
            t = clock()
            fn()
            best[name] = min(best[name], clock() - t)
        rounds += 1
    return best
