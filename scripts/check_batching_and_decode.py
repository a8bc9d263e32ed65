"""Two checks of the cost model on a Llama-3-70B-shaped graph, on every preset (issue 8):

- the same 64 tokens as 64 sequences of one token (``64x1``) and as one sequence (``1x64``)
  should cost about the same: a layer over a batch is one product;
- batch-1 decode should stream the weights at the memory's effective bandwidth: its latency
  over the floor (weight bytes moved / (tp x effective bandwidth): the chips of a stage
  stream their shares at once, stages in turn), and what bounds the products.

Run: .venv/bin/python scripts/check_batching_and_decode.py [--model llama-3-70b] [--precision native]
"""

from __future__ import annotations

import argparse
from collections import Counter

import backends
from backends.work import graph_work
from frontends import hf
from ir.passes import optimize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3-70b", help="a bundled config (xpuc models)")
    parser.add_argument("--precision", default="native")
    args = parser.parse_args()
    graphs = {shape: optimize(hf.load(args.model, input_shapes={"input_ids": shape}))
              for shape in [(64, 1), (1, 64), (1, 1)]}
    print(f"{args.model}, precision {args.precision}")
    print(f"{'preset':18} {'64x1 ms':>10} {'1x64 ms':>10} {'ratio':>6} {'decode ms':>10} {'floor ms':>9} "
          f"{'x floor':>7} {'chips':>5}  products bound by")
    for name in backends.list_targets():
        target = backends.load_target(name)
        batch, seq, decode = (backends.schedule(graphs[s], target, precision=args.precision)
                              for s in [(64, 1), (1, 64), (1, 1)])
        policy = backends.precision.Policy(args.precision)
        sizes = policy.sizes(graphs[(1, 1)])
        streamed = sum(w.weight_bytes for w in graph_work(graphs[(1, 1)], sizes))
        floor = streamed / (decode.deployment.tp * target.outer.effective_bandwidth)
        bounds = Counter(o.bound for o in decode.ops if o.op == "MatMul")
        print(f"{name:18} {batch.latency_s * 1e3:10.2f} {seq.latency_s * 1e3:10.2f} "
              f"{batch.latency_s / seq.latency_s:6.2f} {decode.latency_s * 1e3:10.2f} {floor * 1e3:9.2f} "
              f"{decode.latency_s / floor:7.2f} {decode.chips:5d}  "
              + ", ".join(f"{k} {v}" for k, v in bounds.most_common()))


if __name__ == "__main__":
    main()
