"""Number formats: the one table of precisions a model can be put in.

The names here are the values of ``--precision`` everywhere: ``ir.passes.quantize`` rewrites a
graph into a format (``xpuc import/run``, ``runtime.compile(..., precision=...)``), and the cost
model's precision policy (``backends.precision``, ``xpuc schedule --precision``) reads the same
:class:`Format` records without rewriting the graph: ``compute``, ``carrier`` and ``kv`` say
what a deployment in the format stores and multiplies on hardware. ``docs/formats.md``
describes each format and its ONNX form.

Calibration is round-to-nearest from the weights themselves (no data set): each scale is the
largest weight magnitude of its tensor, channel or group over the code's largest value, and
``ternary`` takes BitNet b1.58's absmean rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes

from .dtypes import DType
from .errors import XpucError

GRANULARITIES = ("none", "tensor", "channel", "group")
"""How many scales a weight tensor gets: none (a plain cast), one, one per output channel, one per
``group_size`` weights along the reduction axis of each output channel."""


@dataclass(frozen=True)
class Format:
    """A precision for a model's matrix products.

    weights: element type the products' weights are stored in (the ONNX type of the codes).
    activations: element type a product reads its activation operand in (float32: weight-only).
    accumulator: what a product accumulates in.
    granularity / group_size: how weights are scaled (:data:`GRANULARITIES`).
    activation_scale: "none" (activations are cast) or "dynamic" (a per-tensor scale computed
        from each activation tensor as the model runs).
    packed_bits: bits a weight takes in a kernel that knows the codes' range (ternary codes are
        stored as int4 in ONNX but pack four to a byte), before scales.
    rounding: how weights become codes: "nearest" (round to nearest, ties to even, after scaling
        by the largest magnitude) or "absmean" (BitNet b1.58).
    compute: the engine format products multiply in when the format is deployed (cost model):
        weight-only formats run as W-A16 kernels (TensorRT-LLM, AWQ and GPTQ/Marlin decode the
        weights in the product's prologue and multiply bf16 activations); "" for native.
    carrier: element type of every other float value when deployed: activations between
        products, norms, embedding tables, the head; None for native (the graph's own).
    kv: element type of attention's key/value cache when deployed (None: the carrier); FP8
        and INT8 deployments keep an 8-bit cache (TensorRT-LLM's FP8 and INT8 KV caches).
    """

    name: str
    weights: DType
    activations: DType
    accumulator: DType
    granularity: str
    summary: str
    group_size: int = 0
    activation_scale: str = "none"
    packed_bits: float = 0.0
    rounding: str = "nearest"
    compute: str = ""
    carrier: DType | None = None
    kv: DType | None = None

    def __post_init__(self):
        assert self.granularity in GRANULARITIES, self.granularity
        if not self.packed_bits:
            object.__setattr__(self, "packed_bits", self.weights.itemsize * 8)

    @property
    def changes_graph(self) -> bool:
        """False for the formats that keep the graph's own float32 types (native, fp32, tf32)."""
        return self.weights is not DType.FLOAT32 or self.activations is not DType.FLOAT32

    @property
    def weight_bits(self) -> float:
        """Bits per stored weight including its share of the float32 scales (for memory and cost)."""
        per_scale = {"none": 0.0, "tensor": 0.0, "channel": 0.0, "group": 32 / max(self.group_size, 1)}
        return self.packed_bits + per_scale[self.granularity]

    @property
    def code_max(self) -> float:
        """The largest magnitude a weight code takes: what the largest weight maps to."""
        return 1.0 if self.rounding == "absmean" else largest(self.weights)


def largest(dtype: DType) -> float:
    """The largest finite value of an element type (int8 127, int4 7, e4m3fn 448)."""
    return float((ml_dtypes.iinfo if dtype.is_int else ml_dtypes.finfo)(dtype.numpy).max)


F32, BF16, F16, I32 = DType.FLOAT32, DType.BFLOAT16, DType.FLOAT16, DType.INT32
GROUP_SIZES = (32, 64, 128)


def _int4(group: int) -> Format:
    return Format(f"int4-g{group}", DType.INT4, F32, F32, "group", group_size=group, compute="bf16", carrier=BF16,
                  summary=f"weight-only int4, symmetric, one scale per {group} weights along the reduction axis")


FORMATS: dict[str, Format] = {f.name: f for f in [
    Format("native", F32, F32, F32, "none",
           summary="the graph's own types; each target runs what its vendor's compiler would (cost model)"),
    Format("fp32", F32, F32, F32, "none", compute="f32", carrier=F32, summary="float32 everywhere"),
    Format("tf32", F32, F32, F32, "none", compute="tf32", carrier=F32,
           summary="float32 storage; engines with TF32 tensor cores round product inputs to TF32 (cost model)"),
    Format("bf16", BF16, BF16, F32, "none", compute="bf16", carrier=BF16,
           summary="bfloat16 weights and activations, float32 accumulation"),
    Format("fp16", F16, F16, F32, "none", compute="f16", carrier=F16,
           summary="float16 weights and activations, float32 accumulation"),
    Format("fp8-e4m3", DType.FLOAT8E4M3, DType.FLOAT8E4M3, F32, "tensor", activation_scale="dynamic",
           compute="f8e4m3", carrier=BF16, kv=DType.FLOAT8E4M3,
           summary="float8 e4m3fn weights (per-tensor scale) and activations (dynamic per-tensor scale)"),
    Format("fp8-e5m2", DType.FLOAT8E5M2, DType.FLOAT8E5M2, F32, "tensor", activation_scale="dynamic",
           compute="f8e5m2", carrier=BF16, kv=DType.FLOAT8E5M2,
           summary="float8 e5m2 weights (per-tensor scale) and activations (dynamic per-tensor scale)"),
    Format("int8", DType.INT8, F32, F32, "channel", compute="bf16", carrier=BF16,
           summary="weight-only int8, symmetric, one scale per output channel"),
    *(_int4(g) for g in GROUP_SIZES),
    Format("w8a8", DType.INT8, DType.UINT8, I32, "channel", activation_scale="dynamic", compute="i8", carrier=BF16,
           kv=DType.INT8, summary="int8 weights (per output channel) times uint8 activations quantized per tensor "
                                  "as the model runs (DynamicQuantizeLinear), int32 accumulation"),
    Format("ternary", DType.INT4, F32, F32, "tensor", packed_bits=2.0, rounding="absmean", compute="bf16",
           carrier=BF16, summary="BitNet b1.58: weights in {-1, 0, 1} times one scale per tensor (absmean rounding)"),
]}
"""Every format by name."""

ALIASES = {"fp8": "fp8-e4m3", "int4": "int4-g128"}
"""Short names: ``fp8`` is e4m3 (the inference format; e5m2 has the range for gradients),
``int4`` uses groups of 128 (the common choice of GPTQ/AWQ checkpoints)."""

NAMES = tuple(FORMATS) + tuple(ALIASES)
"""Every name ``--precision`` accepts."""


class UnknownFormatError(XpucError):
    pass


ENGINE_ONLY = {"tf32": F32}
"""Formats an engine multiplies in that no tensor is stored in, with the type their operands
are stored in: TF32 tensor cores read float32 and round each input to a 10-bit mantissa."""


def engine_storage(fmt: str) -> DType:
    """The element type an engine format's operands are stored in (``fmt`` a DType short name
    or one of :data:`ENGINE_ONLY`); ValueError for an unknown name."""
    return ENGINE_ONLY[fmt] if fmt in ENGINE_ONLY else DType.from_short(fmt)


def lookup(name: str | Format) -> Format:
    """The format called ``name`` (or an alias of it)."""
    if isinstance(name, Format):
        return name
    key = ALIASES.get(name, name)
    if key not in FORMATS:
        raise UnknownFormatError(f"unknown precision {name!r}; known: {', '.join(FORMATS)} "
                                 f"(aliases: {', '.join(f'{a}={t}' for a, t in ALIASES.items())})")
    return FORMATS[key]


def relative_step(dtype: DType) -> float:
    """The relative spacing of a float type's values (2**-mantissa bits); for an integer code type,
    one step over its largest magnitude. How coarse one rounding in that type is."""
    import ml_dtypes
    if dtype.is_int:
        return 1.0 / float(ml_dtypes.iinfo(dtype.numpy).max)
    return float(ml_dtypes.finfo(dtype.numpy).eps)


FLOAT32_AGREEMENT = 1e-5
"""Relative L2 distance allowed between two float32 runtimes on a model (order of summation)."""
RANGE_OVER_RMS = 8.0
"""A dynamically scaled activation's range over its RMS element: +-4 sigma of a normal tensor."""


def agreement(fmt: Format) -> float:
    """How far (relative L2) two correct runtimes may be apart on one graph in ``fmt``.

    Both decode weights to the same float32 values, so a weight-only format agrees to float32
    rounding. Where activations are rounded as the model runs, a one-ulp float32 difference
    can put an element on the other side of a rounding boundary; it then differs by one step of
    the activation format, and so does what is computed from it. The bound is one relative
    step: 2**-mantissa bits for float formats; for integer codes over a per-tensor range,
    range / 255 relative to the RMS element (:data:`RANGE_OVER_RMS`)."""
    if fmt.activations is DType.FLOAT32:
        return FLOAT32_AGREEMENT
    step = relative_step(fmt.activations)
    return step * RANGE_OVER_RMS if fmt.activations.is_int else step


__all__ = ["Format", "FORMATS", "ALIASES", "NAMES", "GROUP_SIZES", "ENGINE_ONLY", "lookup", "largest", "relative_step",
           "agreement", "engine_storage", "UnknownFormatError"]
