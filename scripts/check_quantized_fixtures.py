"""Every fixture in every format: the quantized graph exported with ``ir.to_onnx`` runs in
onnxruntime, and xpuc's native outputs match it within ``ir.formats.agreement``; prints each
format's error against the float32 run too.

    python scripts/check_quantized_fixtures.py [FIXTURE_STEM ...]

The test suite checks a subset (tests/test_quantized_models.py); this is the whole set, slow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ir  # noqa: E402
import runtime  # noqa: E402
from frontends import onnx as onnx_frontend  # noqa: E402
from ir.formats import FORMATS, agreement  # noqa: E402
from ir.passes import optimize, quantize  # noqa: E402
from runtime.accuracy import compare  # noqa: E402

MODELS = ROOT / "tests" / "fixtures" / "models"
FORMATS_RUN = [f for f in FORMATS.values() if f.changes_graph]


def _feeds(graph, rng) -> dict[str, np.ndarray]:
    feeds = {}
    for name in graph.inputs:
        t = graph.values[name].type
        shape = tuple(t.shape)
        feeds[name] = rng.standard_normal(shape).astype(t.dtype.numpy) if t.dtype.is_float \
            else rng.integers(0, 64, shape).astype(t.dtype.numpy)
    return feeds


def _onnxruntime(model: onnx.ModelProto, feeds) -> np.ndarray:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]
                                ).run(None, feeds)[0]


def check(path: Path, shapes: dict | None) -> bool:
    graph = optimize(onnx_frontend.load(path, input_shapes=shapes))
    feeds = _feeds(graph, np.random.default_rng(0))
    reference = runtime.compile(graph, optimize=False).run(feeds)[0]
    ok = True
    for fmt in FORMATS_RUN:
        q = quantize(graph.copy(), fmt)
        native = runtime.compile(q, optimize=False).run(feeds)[0]
        against = compare(native, _onnxruntime(ir.to_onnx(q), feeds)).rel_l2
        error = compare(native, reference, logits=native.ndim == 3 and native.shape[-1] > 64)
        passed = against <= agreement(fmt)
        ok &= passed
        top1 = f"{error.top1:7.1%}" if error.top1 is not None else "      -"
        print(f"{path.stem:22} {fmt.name:10} {against:10.2e} {agreement(fmt):9.1e} {'ok' if passed else 'FAIL':4} "
              f"{error.rel_l2:12.3e} {top1}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fixtures", nargs="*", help="fixture stems (default: all)")
    args = parser.parse_args()
    paths = [MODELS / f"{s}.onnx" for s in args.fixtures] or sorted(MODELS.glob("*.onnx"))
    print(f"{'model':22} {'format':10} {'vs ort':>10} {'tolerance':>9} {'':4} {'vs float32':>12} {'top-1':>7}")
    return 0 if all([check(p, {"input_ids": (2, 16)}) for p in paths]) else 1


if __name__ == "__main__":
    sys.exit(main())
