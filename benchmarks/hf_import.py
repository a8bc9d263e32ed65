"""Import + optimize of config-built models against the exporter-style graph of the same shape.

Reference, in the same run: Llama-3-70B as ``frontends.synthetic.llama_onnx`` writes it (RMSNorm,
rotary, GQA attention and SwiGLU decomposed as exporters emit them; weights as external data
that does not exist), saved, then ``frontends.onnx.load(weights=False)`` + ``optimize``, the
work of ``xpuc import --no-weights`` (fusions rebuild the fused ops). Measured: the ``llama-3-70b``
preset and ``llama-3.1-405b`` (126 layers) built by ``frontends.hf.load`` (weightless, fused
ops already) + ``optimize``, the work of ``xpuc import PRESET``. All bound to input_ids 1 x 128;
best of ``--repeat`` runs, CPU and wall seconds; the ratio is reference / measured.

    python benchmarks/hf_import.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.machine import describe  # noqa: E402
from frontends import hf  # noqa: E402
from frontends import onnx as onnx_frontend  # noqa: E402
from frontends.synthetic import LLAMA3_70B, llama_onnx  # noqa: E402
from ir.passes import optimize  # noqa: E402

SHAPES = {"input_ids": (1, 128)}


def best(fn, repeat: int) -> tuple[float, float, int]:
    """(CPU s, wall s, ops) of the fastest of ``repeat`` calls (by CPU time)."""
    runs = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        graph = fn()
        runs.append((time.process_time() - cpu, time.perf_counter() - wall, len(graph)))
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(describe(), f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "llama.onnx")
        onnx.save(llama_onnx(LLAMA3_70B), path)
        rows = {"exporter-style llama-3-70b (onnx load + optimize)":
                best(lambda: optimize(onnx_frontend.load(path, weights=False, input_shapes=SHAPES)), args.repeat)}
    for name in ("llama-3-70b", "llama-3.1-405b"):
        rows[f"{name} preset (hf.load + optimize)"] = best(lambda n=name: optimize(hf.load(n, input_shapes=SHAPES)),
                                                           args.repeat)
    reference = next(iter(rows.values()))[0]
    print(f"{'graph':52} {'ops':>6} {'CPU s':>7} {'wall s':>7} {'reference / this (CPU)':>23}")
    for name, (cpu, wall, ops) in rows.items():
        print(f"{name:52} {ops:>6} {cpu:>7.2f} {wall:>7.2f} {reference / cpu:>23.1f}")


if __name__ == "__main__":
    main()
