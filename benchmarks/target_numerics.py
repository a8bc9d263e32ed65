"""A GPT-2-small-shaped model run in a target's numerics against the same run in the host's.

Both runs are compiled for the same target, so both carry its counting kernels; the only
difference is the arithmetic: ``host_numerics=True`` computes in float32 as onnxruntime does,
the default rounds every product's operands to the target's matrix format (tpu-v5e: bf16
pairs on vdpbf16ps where the CPU has it; groq-lpu: float16-rounded operands in float32
multiply-adds, the kernel TF32 takes too). Reports the run-time ratio target / host (goal
<= 1.3) per round and the relative L2 distance of the logits; never asserts.

On a shared machine wall time measures the neighbours: ``--cpu-time`` runs one thread and
times the process's CPU time instead, and the two runs alternate within every round.

    python benchmarks/target_numerics.py [--threads N | --cpu-time] [--layers 12] [--seq 128]
                                         [--targets tpu-v5e,groq-lpu] [--rounds 3] [--budget 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime  # noqa: E402
from gpt2_model import gpt2_onnx  # noqa: E402
from machine import add_clock_arguments, clock_of, describe, interleaved_best  # noqa: E402
from runtime.accuracy import compare  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_clock_arguments(parser)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--targets", default="tpu-v5e,groq-lpu")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timing per target per round")
    args = parser.parse_args()
    clock = clock_of(args)
    print(f"{describe()}\n{args.threads} threads, {'CPU' if args.cpu_time else 'wall'} time; GPT-2 small shape, "
          f"{args.layers} layers, seq {args.seq}; load average before: {os.getloadavg()[0]:.1f}")
    feeds = {"input_ids": np.random.default_rng(0).integers(0, 50257, (1, args.seq), dtype=np.int64)}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gpt2.onnx")
        onnx.save(gpt2_onnx(layers=args.layers, seq=args.seq), path)
        runs = {}
        for target in args.targets.split(","):
            for host in (True, False):
                runs[target, host] = runtime.compile(path, target, threads=args.threads, host_numerics=host)
            error = compare(runs[target, False].run(feeds)[0], runs[target, True].run(feeds)[0], logits=True)
            print(f"{target}: logits in its numerics against float32: {error}")
        for round_ in range(1, args.rounds + 1):
            for target in args.targets.split(","):
                best = interleaved_best({host: lambda m=runs[target, host]: m.run(feeds) for host in (True, False)},
                                        args.budget, clock=clock)
                print(f"round {round_} {target}: target numerics {best[False] * 1e3:.1f} ms, host numerics "
                      f"{best[True] * 1e3:.1f} ms, ratio {best[False] / best[True]:.2f}")
    print(f"ratio target / host numerics (goal <= 1.3); load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
