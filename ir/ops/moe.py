"""``xpuc.MixtureOfExperts``: a routed feed-forward block (Mixtral, Qwen-MoE), one op.

``Y = MixtureOfExperts(X[..., H], Router[H, E], GateUp[E, H, 2I], Down[E, I, H]) {top_k, normalize, activation}``

Per token: router logits ``x @ Router``, probabilities ``softmax`` over the E experts, the
``top_k`` largest (lower expert index first on ties, as ONNX TopK and torch.topk), renormalized
to sum 1 when ``normalize`` (Mixtral), then ``y = sum_j p_j * (act(x @ G_j) * (x @ U_j)) @ D_j``
over the chosen experts, where ``GateUp[j] = [G_j | U_j]`` (gate columns first, as
transformers' fused ``gate_up_proj``). ``activation`` is a :data:`composite.ACTIVATIONS` key.

Work counts only the experts a token uses (``top_k`` of E), which is the point of the block:
every expert is resident but each token pays for ``top_k``. :func:`experts_on_a_chip` gives one
chip's products when the experts are spread over chips (expert parallelism, ``backends.sharding``).
"""

from __future__ import annotations

import re

from onnx import FunctionProto, TensorProto, helper

from ..types import TensorType
from .composite import ACTIVATIONS, DOMAIN, Composite, register_composite
from .elementwise import BINARY_FLOPS, UNARY_FLOPS
from .contraction import Contraction, Gemm, Operand
from .registry import InferContext, Pattern, numel, register

DEFAULT_TOP_K = 2
"""Experts per token when the node does not say (Mixtral's)."""
EXPERT_INPUTS = (2, 3)
"""GateUp and Down: stacked along their first axis, one slice per expert."""


def _dims(ctx: InferContext):
    """(tokens, hidden, experts, intermediate) or None while any is symbolic."""
    x, router, down = ctx.shape(0), ctx.shape(1), ctx.shape(3)
    tokens = numel(TensorType(None, x[:-1])) if x is not None else 0
    dims = (tokens, x[-1], router[1], down[1]) if x is not None and router and down else None
    return dims if dims is not None and all(isinstance(d, int) for d in dims) else None


def activation_flops(name: str) -> int:
    """FLOPs per element of ``act(gate) * up``: the activation's ops plus the gating multiply."""
    return sum(UNARY_FLOPS.get(op, BINARY_FLOPS.get(op, 1)) for op, _ in ACTIVATIONS[name]) + BINARY_FLOPS["Mul"]


def expert_flops(hidden: int, intermediate: int, activation: str) -> int:
    """One token through one expert: gate+up product, activation, down product, weighted accumulate."""
    return (2 * hidden * 2 * intermediate + activation_flops(activation) * intermediate
            + 2 * intermediate * hidden + 2 * hidden)


def router_flops(hidden: int, experts: int, top_k: int) -> int:
    """One token's routing: logits, softmax, top-k selection (one compare per expert per pick), renormalize."""
    return 2 * hidden * experts + 5 * experts + top_k * experts + 2 * top_k


def _flops(ctx: InferContext, outs) -> int:
    dims = _dims(ctx)
    if dims is None:
        return 0
    tokens, hidden, experts, inter = dims
    k = ctx.attr("top_k", DEFAULT_TOP_K)
    return tokens * (router_flops(hidden, experts, k) + k * expert_flops(hidden, inter, ctx.attr("activation", "SiLU")))


def expected_experts(tokens: int, experts: int, top_k: int) -> float:
    """Distinct experts a batch of ``tokens`` reaches when each picks ``top_k`` of ``experts``
    uniformly and independently: an expert escapes one token with probability 1 - k/E, so
    E * (1 - (1 - k/E)^tokens) are touched in expectation (the occupancy count of balls in
    bins, derived here, not taken from a source). Real routers are skewed, which touches fewer
    experts: for weight traffic this is the pessimistic side."""
    return experts * (1 - (1 - top_k / experts) ** tokens)


def _contractions(ctx: InferContext, outs) -> list[Contraction]:
    """The router (tokens x E over H), then the routed rows spread evenly over the experts they
    reach (:func:`expected_experts`, rounded): each runs its gate/up product (rows x 2I over H)
    and its down product (rows x H over I), B being that expert's slice of the stacked weights,
    so only the reached experts' weights are read."""
    tokens, hidden, experts, inter = _dims(ctx)
    k = ctx.attr("top_k", DEFAULT_TOP_K)
    routed = tokens * k
    active = min(experts, routed, max(k, round(expected_experts(tokens, experts, k))))
    rows = -(-routed // active)
    return [Contraction(Gemm(1, tokens, experts, hidden), Operand(1, (), (), experts, 1)),
            Contraction(Gemm(active, rows, 2 * inter, hidden), Operand(2, (active,), (hidden * 2 * inter,), 2 * inter, 1)),
            Contraction(Gemm(active, rows, hidden, inter), Operand(3, (active,), (inter * hidden,), hidden, 1))]


def experts_on_a_chip(attrs: dict, gemms: list[Gemm], chips: int, rank: int) -> tuple[list[Gemm], int, float]:
    """Chip ``rank`` of ``chips`` that each hold 1/chips of the experts (expert parallelism):
    its products, its FLOPs, and the share of the reached experts' weights it reads. It routes
    its 1/chips of the tokens (rounded up: vLLM pads the tokens to a multiple of the chips);
    the experts the batch reaches (:func:`_contractions`) are dealt out as evenly as they go
    (the first ``active mod chips`` chips run one more), each whole, with its rows. Uniform
    routing at best: a real router's skew loads some chips more."""
    router, gate_up, down = gemms
    active, tokens = gate_up.batch, -(-router.m // chips)
    mine = active // chips + (rank < active % chips)
    k = attrs.get("top_k", DEFAULT_TOP_K)
    flops = (tokens * router_flops(router.k, router.n, k)
             + mine * gate_up.m * expert_flops(router.k, down.k, attrs.get("activation", "SiLU")))
    experts = [Gemm(mine, g.m, g.n, g.k) for g in (gate_up, down)] if mine else []
    return [Gemm(1, tokens, router.n, router.k), *experts], flops, mine / active


@register("MixtureOfExperts", "matmul", domain=DOMAIN, pattern=Pattern.OPAQUE, flops=_flops,
          contractions=_contractions)
def _moe(ctx: InferContext) -> list[TensorType]:
    x, router, gate_up, down = (ctx.shape(i) for i in range(4))
    if any(s is None for s in (x, router, gate_up, down)):
        return [TensorType(ctx.dtype(0), x)]
    if len(router) != 2 or len(gate_up) != 3 or len(down) != 3:
        ctx.fail(f"expects Router[H, E], GateUp[E, H, 2I], Down[E, I, H]; got {router}, {gate_up}, {down}")
    hidden, experts = router
    inter = down[1]
    want = {"GateUp": (gate_up, (experts, hidden, _twice(inter))), "Down": (down, (experts, inter, hidden)),
            "X": (x[-1:], (hidden,))}
    for name, (got, expected) in want.items():
        if any(isinstance(g, int) and isinstance(e, int) and g != e for g, e in zip(got, expected)):
            ctx.fail(f"{name} has shape {got}, expected {expected} from Router {router} and Down {down}")
    k = ctx.attr("top_k", DEFAULT_TOP_K)
    if isinstance(experts, int) and not 1 <= k <= experts:
        ctx.fail(f"top_k={k} must be between 1 and the number of experts ({experts})")
    if ctx.attr("activation", "SiLU") not in ACTIVATIONS:
        ctx.fail(f"unknown activation {ctx.attr('activation')!r}; known: {sorted(ACTIVATIONS)}")
    return [TensorType(ctx.dtype(0), x)]


def _twice(d):
    return 2 * d if isinstance(d, int) else d


def _name(attrs: dict, num_inputs: int) -> str:
    norm = "Norm" if attrs.get("normalize", 1) else ""
    return f"MixtureOfExpertsTop{attrs.get('top_k', DEFAULT_TOP_K)}{norm}{attrs.get('activation', 'SiLU')}"


def _parse(name: str) -> dict | None:
    match = re.fullmatch(r"MixtureOfExpertsTop(\d+)(Norm)?(\w*)", name)
    if match is None or match[3] not in ACTIVATIONS:
        return None
    return {"top_k": int(match[1]), "normalize": int(bool(match[2])), "activation": match[3]}


def _body(attrs: dict, num_inputs: int, opset: int) -> FunctionProto:
    """Dense reference semantics: every expert computes every token, and weights outside the
    top-k are zero (exact, and runs anywhere; the op's cost model is the sparse one)."""
    k = attrs.get("top_k", DEFAULT_TOP_K)
    n = helper.make_node
    nodes = [
        n("Shape", ["X"], ["x_shape"]),
        n("Shape", ["X"], ["hidden"], start=-1),
        n("Constant", [], ["minus_one"], value_ints=[-1]),
        n("Concat", ["minus_one", "hidden"], ["rows_shape"], axis=0),
        n("Reshape", ["X", "rows_shape"], ["x2"]),
        n("MatMul", ["x2", "Router"], ["logits"]),
        n("Softmax", ["logits"], ["probs"], axis=-1),
        n("Constant", [], ["k"], value_ints=[k]),
        n("TopK", ["probs", "k"], ["top_p", "top_i"], axis=-1),
    ]
    weights = "top_p"
    if attrs.get("normalize", 1):
        nodes += [n("Constant", [], ["last"], value_ints=[-1]),
                  n("ReduceSum", ["top_p", "last"], ["top_sum"], keepdims=1),
                  n("Div", ["top_p", "top_sum"], ["top_w"])]
        weights = "top_w"
    gate = "gate"
    nodes += [
        n("Constant", [], ["zero"], value=helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])),
        n("CastLike", ["zero", "probs"], ["zero_like"]),
        n("Shape", ["probs"], ["probs_shape"]),
        n("Expand", ["zero_like", "probs_shape"], ["zeros"]),
        n("ScatterElements", ["zeros", "top_i", weights], ["dense_w"], axis=1),
        n("MatMul", ["x2", "GateUp"], ["gate_up"]),
        n("Split", ["gate_up"], [gate, "up"], axis=-1, num_outputs=2),
    ]
    last = gate
    for i, (op, op_attrs) in enumerate(ACTIVATIONS[attrs.get("activation", "SiLU")]):
        nodes.append(n(op, [last, gate] if op == "Mul" else [last], [f"act{i}"], **op_attrs))
        last = f"act{i}"
    nodes += [
        n("Mul", [last, "up"], ["hidden_e"]),
        n("MatMul", ["hidden_e", "Down"], ["expert_out"]),
        n("Transpose", ["dense_w"], ["w_t"], perm=[1, 0]),
        n("Constant", [], ["axis2"], value_ints=[2]),
        n("Unsqueeze", ["w_t", "axis2"], ["w_e"]),
        n("Mul", ["expert_out", "w_e"], ["weighted"]),
        n("Constant", [], ["axis0"], value_ints=[0]),
        n("ReduceSum", ["weighted", "axis0"], ["y2"], keepdims=0),
        n("Reshape", ["y2", "x_shape"], ["Y"]),
    ]
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_function(DOMAIN, _name(attrs, num_inputs), ["X", "Router", "GateUp", "Down"], ["Y"],
                                nodes, opsets)


register_composite("MixtureOfExperts", Composite(_name, _body, _parse))
