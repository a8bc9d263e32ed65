"""`xpuc llm` on every bundled model preset x every target preset (issue 9: it works for each,
or says in one line why not). Prints a Markdown table for BENCHMARKS.md: per cell the output
tokens/s of the deployment and its chips, or the reason it could not be analysed.

Run: .venv/bin/python benchmarks/llm_grid.py [--prompt-len L] [--gen-len G]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import backends  # noqa: E402
from frontends import hf  # noqa: E402
from ir.errors import XpucError  # noqa: E402
from xpuc.analysis import analyze  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt-len", type=int, default=1024)
    parser.add_argument("--gen-len", type=int, default=256)
    args = parser.parse_args()
    targets = backends.list_targets()
    start = time.perf_counter()
    reasons: dict[str, str] = {}
    print("| model | " + " | ".join(targets) + " |")
    print("|---|" + "---|" * len(targets))
    ok = 0
    for model in hf.presets():
        cells = []
        for target in targets:
            try:
                r = analyze(model, target, prompt_len=args.prompt_len, gen_len=args.gen_len)
                cells.append(f"{r.tokens_per_s:,.0f} tok/s, {r.chips} chip{'s' * (r.chips > 1)}, b{r.batch}")
                ok += 1
            except XpucError as exc:
                key = f"E{len(reasons) + 1}"
                reasons[key] = f"{model} on {target}: {exc}"
                cells.append(f"{key}")
        print(f"| {model} | " + " | ".join(cells) + " |", flush=True)
    print()
    for key, why in reasons.items():
        print(f"- {key}: {why}")
    print(f"\n{ok} of {ok + len(reasons)} cells analysed; prompt {args.prompt_len} + {args.gen_len} generated tokens, "
          f"batch the largest that fits (at most 1024); {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
