"""Architecture portability costs: what BitNet's ternary weights, Mixtral's routed experts and
Mamba's selective scan cost on every target preset (the table in BENCHMARKS.md).

    python benchmarks/architectures.py [--targets a,b] [--models bitnet,mixtral,mamba]

Costs, not timings: each cell is the schedule's latency of one pass (prefill of 128 tokens, or
one decode step after 511 cached positions) on the default deployment, with its chip count.
Run it on two revisions to compare them (the numbers do not depend on the machine).
"""

from __future__ import annotations

import argparse

import backends
import ir
from frontends import hf
from ir.passes.decode import DecodeStep
from ir.passes.shape_inference import infer_shapes

PAST = 511


def prefill(preset: str, batch: int = 1, seq: int = 128) -> ir.Graph:
    return hf.load(preset, input_shapes={"input_ids": (batch, seq)})


def decode(preset: str, batch: int) -> ir.Graph:
    """One decode step at ``batch`` sequences after ``PAST`` cached positions."""
    graph = DecodeStep(1)(hf.load(preset, input_shapes={"input_ids": (batch, PAST + 1)}))
    past = {name: tuple(PAST if d == "past" else d for d in graph.values[name].type.shape)
            for name in graph.inputs if name.startswith("past_key_values")}
    ir.bind_input_shapes(graph, past)
    return infer_shapes(graph)


CASES = {
    "bitnet": [("bitnet-b1.58-2b prefill 128", lambda: prefill("bitnet-b1.58-2b"), ("native", "ternary")),
               ("bitnet-b1.58-2b decode B=1", lambda: decode("bitnet-b1.58-2b", 1), ("native", "ternary"))],
    "mixtral": [("mixtral-8x7b decode B=1", lambda: decode("mixtral-8x7b", 1), ("native",)),
                ("mixtral-8x7b decode B=4", lambda: decode("mixtral-8x7b", 4), ("native",)),
                ("mixtral-8x7b prefill 128", lambda: prefill("mixtral-8x7b"), ("native",))],
    "mamba": [("mamba-2.8b prefill 128", lambda: prefill("mamba-2.8b"), ("native",))],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default=",".join(backends.list_targets()))
    parser.add_argument("--models", default=",".join(CASES))
    args = parser.parse_args()
    targets = [backends.load_target(t) for t in args.targets.split(",")]
    for model in args.models.split(","):
        for label, build, precisions in CASES[model]:
            graph = build()
            for precision in precisions:
                cells = []
                for target in targets:
                    try:
                        s = backends.schedule(graph, target, precision=precision)
                        cells.append(f"{target.name} {s.latency_s * 1e3:.3f} ms/{s.chips}")
                    except ir.XpucError as exc:
                        cells.append(f"{target.name} ({type(exc).__name__})")
                print(f"| {label} | {precision} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
