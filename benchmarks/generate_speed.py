"""Greedy generation with a KV cache vs recomputing the whole sequence, per token, on the
tiny decoder fixtures (tests/fixtures/models/<family>_dynamo.onnx).

For each model, 64 new tokens after the 6-token prompt of greedy_tokens.json:

- KV cache: ``runtime.compile_llm(model, max_len=70).generate(prompt, 64)``; per token is
  the mean wall time of its 63 decode steps (each one compiled step over the cache), best
  of ``--repeat`` generations;
- recomputation: the same greedy loop, each token from the model run on the whole sequence
  so far at its exact length (compiled once per length before the clock starts: the work of
  a cache-less runtime, without its compile time), per token is the mean over the same 63
  lengths (7..69) of each length's best of ``--repeat`` runs.

Both run their compiled kernels the same way: an executor bound once to its feed buffers
(``Executor.bind``), so the ratio compares the work of the steps, not Python overhead.

Both loops must produce the same tokens. Reports the ratio recompute / KV cache (goal >= 5)
and never asserts.

    python benchmarks/generate_speed.py [--families llama,gpt2] [--new-tokens 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import runtime  # noqa: E402
from machine import describe  # noqa: E402

MODELS = ROOT / "tests" / "fixtures" / "models"
FAMILIES = ["llama", "mistral", "qwen2", "gemma", "phi", "gpt2", "olmo", "bitnet"]


def kv_cache(path: Path, prompt: list[int], new: int, repeat: int) -> tuple[list[int], float]:
    llm = runtime.compile_llm(path, max_len=len(prompt) + new)
    llm.generate(prompt, new)  # warm-up: the prefill for this length compiles here
    runs = [llm.generate(prompt, new) for _ in range(repeat)]
    return runs[0].tokens, min(r.host_tpot_s for r in runs)


def recompute(path: Path, prompt: list[int], new: int, repeat: int) -> tuple[list[int], float]:
    ids, seconds = list(prompt), []
    for _ in range(new):
        executor, _ = runtime.compile(path, input_shapes={"input_ids": (1, len(ids))}).specialize_static()
        run = executor.bind({"input_ids": np.array([ids], np.int64)})  # as the KV cache's steps run
        best = np.inf
        for _ in range(repeat + 1):  # the first run pages the weights in
            start = time.perf_counter()
            logits = run()[0]
            best = min(best, time.perf_counter() - start)
        seconds.append(best)
        ids.append(int(np.argmax(logits[0, -1])))
    return ids[len(prompt):], float(np.mean(seconds[1:]))  # the tokens the decode steps make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    prompt = json.loads((MODELS / "greedy_tokens.json").read_text())["families"]["llama"]["prompt_ids"]
    print(f"machine: {describe()}")
    print(f"prompt {len(prompt)} tokens, {args.new_tokens} new; per token = mean over the decode steps")
    print(f"{'model':14} {'KV cache ms':>11} {'recompute ms':>12} {'ratio':>6}  same tokens")
    ratios = []
    for family in args.families.split(","):
        path = MODELS / f"{family}_dynamo.onnx"
        tokens, cached = kv_cache(path, prompt, args.new_tokens, args.repeat)
        reference, full = recompute(path, prompt, args.new_tokens, args.repeat)
        ratios.append(full / cached)
        print(f"{path.stem:14} {cached * 1e3:11.3f} {full * 1e3:12.3f} {full / cached:6.1f}  {tokens == reference}",
              flush=True)
    print(f"geometric mean ratio {np.exp(np.mean(np.log(ratios))):.1f} (goal >= 5), lowest {min(ratios):.1f}")


if __name__ == "__main__":
    main()
