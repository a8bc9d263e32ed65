"""Links between serving pools: what moves a request's KV cache from prefill to decode chips.

The figures and their sources live in ``links.toml`` beside this module (one home); a
transfer of ``n`` bytes takes ``latency_s + n / bandwidth_bytes_per_s``, one at a time per
prefill replica (``serving.simulate_disaggregated`` serializes them).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from backends.llm.serving import ServingError

LINKS = Path(__file__).with_name("links.toml")
DEFAULT_LINK = "rdma-400g"


@dataclass(frozen=True)
class Link:
    name: str
    summary: str
    bandwidth_bytes_per_s: float
    latency_s: float
    bandwidth_source: str
    latency_source: str

    def transfer_s(self, nbytes: float) -> float:
        return self.latency_s + nbytes / self.bandwidth_bytes_per_s


def links() -> dict[str, Link]:
    return {name: Link(name, **fields) for name, fields in tomllib.loads(LINKS.read_text()).items()}


def link(name: str = DEFAULT_LINK) -> Link:
    known = links()
    if name not in known:
        raise ServingError(f"no link named {name!r}; known links: {', '.join(known)}")
    return known[name]
