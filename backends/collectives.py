"""What moving data between chips costs on a target's interconnect: pipeline hops, the
collectives of tensor parallelism and the all-to-all of expert parallelism.

Every message pays its hops' latency (``Link.latency_s`` each) plus its bytes over the link's
effective bandwidth (per chip and direction, ``Link.effective_bandwidth``); a collective also
pays its fixed ``collective_latency_s`` (launch and the closing barrier). How many hops in
sequence and how much data each chip sends follow the topology, with the bandwidth-optimal
algorithms NCCL and the TPU runtimes use:

- **ring** (and tori, run as rings): a reduce-scatter or an all-gather among n chips is n - 1
  steps around the ring, each chip sending (n - 1)/n of the tensor;
- **switch** (every chip one hop from every other: NVSwitch, a fully connected node): each
  chip writes every other chip's share directly, one step, the same (n - 1)/n of the tensor.

An all-reduce is a reduce-scatter then an all-gather: twice an all-gather's steps and bytes.

An **all-to-all** (each chip sends every other chip its own 1/n share of a buffer) is, in
NCCL, a send and a receive with each other chip issued as one group (``ncclGroupStart``:
nccl-tests' ``alltoall``). On a switch they all run at once: one step, each chip's port carrying
the (n - 1)/n of its buffer that leaves it. On a ring each chip passes on to its neighbour, in
n - 1 steps, what is still in transit (the same one direction as the ring collectives): the
share for the chip d places on crosses d links, so each link carries sum over d = 1 .. n - 1
of d/n buffers, (n - 1)/2 of them: more than an all-gather's (n - 1)/n once n > 2, since a
ring is no switch (derived here, not taken from a source).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .target import Link

TOPOLOGIES: dict[str, Callable[[int], int]] = {
    "ring": lambda n: n - 1,
    "torus-2d": lambda n: n - 1,
    "torus-3d": lambda n: n - 1,
    "switch": lambda n: min(n - 1, 1),
}
"""Interconnect topology -> hops in sequence of one reduce-scatter or all-gather among n chips."""


def hop_s(link: Link, size: float) -> float:
    """One message of ``size`` bytes from a chip to a neighbour (a pipeline stage hop)."""
    return link.latency_s + size / link.effective_bandwidth


def all_gather_s(link: Link, chips: int, size: float) -> float:
    """Every chip ends with the whole ``size``-byte tensor of which it held 1/chips."""
    return _collective(link, chips, size, 1)


def all_reduce_s(link: Link, chips: int, size: float) -> float:
    """Every chip ends with the sum of the chips' ``size``-byte tensors."""
    return _collective(link, chips, size, 2)


def all_to_all_s(link: Link, chips: int, size: float) -> float:
    """Every chip sends each other chip its share (1/chips) of its ``size``-byte buffer."""
    if chips <= 1:
        return 0.0
    steps = TOPOLOGIES[link.topology](chips)
    return (link.collective_latency_s + steps * link.latency_s
            + all_to_all_bytes(link, chips, size) / link.effective_bandwidth)


def all_to_all_bytes(link: Link, chips: int, size: float) -> float:
    """Bytes each chip's link carries in an all-to-all: the (n - 1)/n of its buffer that leaves
    it, times the links a share crosses on average (1 on a switch, n/2 on a ring: the mean of
    1 .. steps, each chip being one hop further along than the last)."""
    steps = TOPOLOGIES[link.topology](chips)
    return (chips - 1) / chips * size * (steps + 1) / 2


def _collective(link: Link, chips: int, size: float, phases: int) -> float:
    if chips <= 1:
        return 0.0
    steps = TOPOLOGIES[link.topology](chips)
    return link.collective_latency_s + phases * (steps * link.latency_s
                                                 + (chips - 1) / chips * size / link.effective_bandwidth)
