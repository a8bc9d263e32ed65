"""Tensor parallelism: how each op of a pipeline stage is cut over the stage's ``tp`` chips.

The Megatron-LM scheme, derived from the graph rather than from layer names. Values are
either whole on every chip or *split* along their features (each chip holding 1/tp);
walking the ops in order:

- a product with a weight (MatMul, Gemm, Conv) whose activation is whole is cut along its
  output features (**columns**: weights, FLOPs and output / tp, the output split); one whose
  activation is split is cut along its reduction (**rows**: weights, FLOPs and input / tp),
  leaving partial sums that an **all-reduce** makes whole. So a transformer layer splits
  q/k/v and gate/up by columns, attention by heads, o_proj and down by rows: two all-reduces
  per layer;
- ops in :data:`PARTIAL_OPS` split their weights with a whole input and leave partial sums
  (**partial**, then an all-reduce): the embedding's vocabulary rows, each expert's hidden units;
- attention, elementwise and index ops with a split input run on their slice (**split**:
  everything / tp), as does an op computed from weights alone (a weight's decode: it
  decodes the slice this chip holds);
- any other op (norms, softmax, reductions) needs its inputs whole: a split input is
  **all-gathered** right after its producer, and the op runs whole on every chip
  (**replicated**), as does every op whose inputs are all whole; so is a split graph output;
- an op whose cut axis is shorter than ``tp`` runs replicated.

**Expert parallelism** (``ep``, as vLLM's ``--enable-expert-parallel`` over the tensor-parallel
group) cuts a mixture of experts by **experts** instead: each chip holds E/tp whole experts
(and the whole router), takes its 1/tp of the tokens (it already holds them all: nothing
moves), routes them, sends each token's ``top_k`` rows to the chips holding their experts and
gets the results back (an **all-to-all** each way), then all-gathers its tokens' outputs for
the rest of the layer, which runs as above: vLLM's sequence-parallel MoE (``deepseek_v2.py``:
``sequence_parallel_chunk``, the experts' all2all, ``tensor_model_parallel_all_gather``).
It replaces the all-reduce of the hidden-unit cut; each expert's products run whole.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

from ir import ops
from ir.ops import Gemm, Pattern
from ir.ops.moe import EXPERT_INPUTS, experts_on_a_chip

from .grouping import Grouping
from .work import OpWork

REPLICATED, COLUMNS, ROWS, PARTIAL, SPLIT, EXPERTS = "replicated", "columns", "rows", "partial", "split", "experts"
PARTIAL_OPS = {"Gather", "MixtureOfExperts"}
"""Op types that keep their input whole and split their weights, leaving partial sums."""
EXPERT_OPS = {"MixtureOfExperts"}
"""Op types whose weights stack experts (``ir.ops.moe.EXPERT_INPUTS``): expert parallelism cuts them by experts."""
RUN_ON_SLICES = (Pattern.ELEMENTWISE, Pattern.BROADCAST, Pattern.INJECTIVE)
"""Patterns whose output element reads its inputs at the same feature: they run on a slice."""


@dataclass(frozen=True)
class Shard:
    """How one op runs on each chip of its stage."""

    kind: str
    gather_output: bool = False
    """Its split output is all-gathered right after it (a later op or the graph needs it whole;
    by tokens after an experts cut)."""

    @property
    def reduces(self) -> bool:
        """It leaves partial sums that an all-reduce completes."""
        return self.kind in (ROWS, PARTIAL)

    @property
    def splits_weights(self) -> bool:
        return self.kind != REPLICATED


WHOLE = Shard(REPLICATED)


def plan_shards(works: list[OpWork], grouping: Grouping, outputs: list[str], tp: int, ep: bool = False) -> list[Shard]:
    """A :class:`Shard` per op of ``works`` (topological order) over ``tp`` chips; ``ep``: cut
    mixtures of experts by experts."""
    if tp <= 1:
        return [WHOLE] * len(works)
    known = grouping.known
    derived: set[str] = set()
    """Values each run computes from weights alone (a stored weight's decode): weights too."""
    split: dict[str, str] = {}
    """Split value -> the op whose output it is (through views)."""
    needs_whole: set[str] = set()
    kinds = []
    for work in works:
        node = work.node
        outs = [o for o in node.outputs if o]
        live = [v for v in node.inputs if v and v not in known and v not in derived]
        held = [v for v in live if v in split]
        if not live and any(v in derived for v in node.inputs):
            derived.update(outs)
        kind = _kind(work, live, bool(held), lambda v: v in known or v in derived, tp, ep)
        if not work.free and not live:
            derived.update(outs)
        elif kind == REPLICATED and held and not work.free:
            needs_whole.update(split[v] for v in held)
        elif kind in (COLUMNS, SPLIT) or work.free and held:
            source = split[held[0]] if work.free else node.name
            split.update({o: source for o in outs})
        kinds.append(kind)
    needs_whole.update(split[v] for v in outputs if v in split)
    return [Shard(k, w.name in needs_whole or k == EXPERTS) for w, k in zip(works, kinds)]


def _kind(work: OpWork, live: list[str], has_split_input: bool, is_weight, tp: int, ep: bool) -> str:
    if work.free:
        return REPLICATED
    node = work.node
    if not live:
        return SPLIT
    if node.op_type in PARTIAL_OPS and any(is_weight(v) for v in node.inputs if v):
        if has_split_input:
            return REPLICATED
        return EXPERTS if ep and node.op_type in EXPERT_OPS else PARTIAL
    if work.gemms and len(node.inputs) > 1 and is_weight(node.inputs[1]):
        k, n = work.gemms[0].k, work.gemms[0].n
        if has_split_input:
            return ROWS if k >= tp else REPLICATED
        return COLUMNS if n >= tp else REPLICATED
    pattern = ops.lookup(node.op_type, node.domain).pattern
    if has_split_input and (work.family == "attention" or pattern in RUN_ON_SLICES):
        return SPLIT
    return REPLICATED


def pieces(work: OpWork, shard: Shard, tp: int) -> list[OpWork]:
    """What each chip of the stage computes and moves for ``work``: alike under every cut but
    an experts one, whose chips run different numbers of the experts a batch reaches."""
    if shard.kind == EXPERTS and tp > 1:
        return [piece(work, shard, tp, rank) for rank in range(tp)]
    return [piece(work, shard, tp)] * tp


def piece(work: OpWork, shard: Shard, tp: int, rank: int = 0) -> OpWork:
    """What chip ``rank`` of the stage computes and moves for ``work``."""
    if tp <= 1 or shard.kind == REPLICATED:
        return work
    part = copy.copy(work)  # not dataclasses.replace: 3x slower, and this runs for every op of every stage
    part.flops = math.ceil(work.flops / tp)
    part.weights = {v: math.ceil(size) for v, size in resident(work, shard, tp).items()}
    if shard.kind == EXPERTS:
        return _on_expert_chip(work, part, tp, rank)
    part.weight_bytes = math.ceil(work.weight_bytes / tp)
    if shard.kind in (COLUMNS, SPLIT):
        part.output_bytes = math.ceil(work.output_bytes / tp)
    if shard.kind in (ROWS, SPLIT):
        part.activation_bytes = math.ceil(work.activation_bytes / tp)
    part.gemms = [_cut(g, shard.kind, tp) for g in work.gemms]
    return part


def _on_expert_chip(work: OpWork, part: OpWork, tp: int, rank: int) -> OpWork:
    """An experts cut's chip ``rank``: its products, FLOPs and reads of the experts it runs
    (``ir.ops.moe.experts_on_a_chip``), the router whole, its activations and output its 1/tp
    of the tokens."""
    part.gemms, part.flops, reads = experts_on_a_chip(work.node.attrs, work.gemms, tp, rank)
    stacked = _stacked(work)
    whole = sum(size for v, size in work.weights.items() if v not in stacked)
    part.weight_bytes = whole + math.ceil((work.weight_bytes - whole) * reads)
    part.activation_bytes = math.ceil(work.activation_bytes / tp)
    part.output_bytes = math.ceil(work.output_bytes / tp)
    return part


def resident(work: OpWork, shard: Shard, tp: int) -> dict[str, float]:
    """Bytes of each weight of ``work`` that one chip of its stage holds: all of a replicated
    op's, 1/tp of a split op's; under an experts cut, 1/tp of the stacked experts and the rest
    (the router) whole."""
    if tp <= 1 or not shard.splits_weights:
        return dict(work.weights)
    if shard.kind != EXPERTS:
        return {v: size / tp for v, size in work.weights.items()}
    stacked = _stacked(work)
    return {v: size / tp if v in stacked else size for v, size in work.weights.items()}


def _stacked(work: OpWork) -> set[str]:
    return {work.node.inputs[i] for i in EXPERT_INPUTS}


def _cut(g: Gemm, kind: str, tp: int) -> Gemm:
    if kind == ROWS:
        return Gemm(g.batch, g.m, g.n, math.ceil(g.k / tp))
    if kind == SPLIT and g.batch >= tp:  # attention: its heads
        return Gemm(math.ceil(g.batch / tp), g.m, g.n, g.k)
    return Gemm(g.batch, g.m, math.ceil(g.n / tp), g.k)
