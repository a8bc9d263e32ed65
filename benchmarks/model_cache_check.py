"""What checking a whole-model cache entry costs a warm compile of GPT-2 small.

An entry's weights blob is hashed (sha256) the first time it is loaded after being written
or modified; later loads match the entry's stat against the memo that check left and skip
the hash (runtime/model_cache.py). Each warm compile runs in a fresh process, alternating
"blob hashed" (memo deleted first) and "memo hit", in the same run on the same machine.

    python benchmarks/model_cache_check.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import onnx

from gpt2_model import gpt2_onnx
from machine import describe


def compile_once(path: str) -> float:
    import runtime

    start = time.perf_counter()
    runtime.compile(path)
    return time.perf_counter() - start


def in_new_process(path: str, cache: Path) -> float:
    done = subprocess.run([sys.executable, __file__, "--compile", path], env={**os.environ, "XPUC_CACHE_DIR": str(cache)},
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compile", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compile:
        print(json.dumps(compile_once(args.compile)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path, cache = os.path.join(tmp, "gpt2.onnx"), Path(tmp) / "cache"
        onnx.save(gpt2_onnx(), path)
        print(describe())
        print(f"cold compile {in_new_process(path, cache):.2f} s")
        time.sleep(0.2)  # past the memo margin, so the first check leaves a memo
        entry, = (cache / "models").glob("*.xpm")
        hashed, memo = [], []
        for _ in range(args.repeat):
            for m in (cache / "models").glob("*.ok"):
                m.unlink()
            hashed.append(in_new_process(path, cache))
            memo.append(in_new_process(path, cache))
        h, m = statistics.median(hashed), statistics.median(memo)
        print(f"entry {entry.stat().st_size / 2**20:.0f} MiB; warm compile, median of {args.repeat}: "
              f"blob hashed {h * 1e3:.0f} ms, memo hit {m * 1e3:.0f} ms (ratio {h / m:.0f}x)")


if __name__ == "__main__":
    main()
