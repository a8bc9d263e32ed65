"""What the benchmarks need to know about this machine: a one-line description, its peak
fp32 FMA rate, and a best-of-N timer.

The peak is cores x GHz x FMA units x fp32 lanes x 2 FLOPs. /proc/cpuinfo gives cores, the
nominal clock and the vector flags; it does not say how many FMA pipes a core has, so that
is an assumption (2, true of AVX2/AVX-512 cores since Haswell and Zen 2), overridable with
``XPUC_FMA_UNITS``. Boost clocks make the real peak somewhat higher.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path


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
    info = _cpuinfo()
    return (f"{info.get('model name', 'unknown CPU')}, nproc {os.cpu_count()}, "
            f"{info.get('cpu MHz', '?')} MHz, {datetime.date.today().isoformat()}")


def peak_gflops(cores: int) -> float:
    """Peak fp32 GFLOP/s of ``cores`` cores at the nominal clock (0 when unknown)."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    lanes = 16 if "avx512f" in flags else 8 if "avx" in flags else 4
    fma_units = int(os.environ.get("XPUC_FMA_UNITS", 2 if "fma" in flags or "avx512f" in flags else 0))
    ghz = float(info.get("cpu MHz", 0)) / 1000
    return cores * ghz * max(fma_units, 1) * lanes * (2 if fma_units else 1)


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
