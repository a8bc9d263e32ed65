"""The precision policy (backends/precision.py): what every value is stored in and every op
computes in, per target, and why; expectations worked out by hand next to each assertion."""

import functools

import pytest

import backends
from backends.calibration import matmul_graph
from backends.precision import Policy
from frontends import onnx as onnx_frontend
from frontends.synthetic import LLAMA3_70B, llama_onnx
from ir.dtypes import DType
from ir.formats import FORMATS, lookup
from ir.graph import Graph
from ir.passes import optimize, quantize
from ir.passes.shape_inference import infer_shapes
from ir.types import TensorType

F32, F16 = DType.FLOAT32, DType.FLOAT16


@functools.lru_cache(maxsize=None)
def target(name: str) -> backends.Target:
    return backends.load_target(name)


def layer(m: int, k: int, n: int, dtype: DType = F32) -> Graph:
    """y = relu(x @ w): a product with a weight that is not the model's head."""
    graph = Graph("layer")
    graph.add_input("x", TensorType(dtype, (m, k)))
    graph.add_value("w", TensorType(dtype, (k, n)), const=True)
    graph.add_node("MatMul", ["x", "w"], ["h"], name="matmul")
    graph.add_node("Relu", ["h"], ["y"], name="relu")
    graph.outputs.append("y")
    return infer_shapes(graph)


def product_record(s: backends.Schedule):
    return next(o for o in s.ops if o.op == "MatMul")


# --------------------------------------------------------------------------- native
@pytest.mark.parametrize("preset", ["a100-80gb", "h100-sxm", "h200"])
def test_native_fp32_products_use_tf32_tensor_cores_on_nvidia(preset):
    """A float32 model's product on TF32 tensor cores, as TensorRT and XLA run it by default."""
    record = product_record(backends.schedule(matmul_graph(4096, 8192, 8192, "f32"), target(preset)))
    assert (record.engine, record.format) == ("tensor", "tf32")
    assert record.format_reason == "the graph's f32 run as tf32, the vendor compiler's default"


def test_native_fp32_product_on_h100_by_hand():
    """4096 x 8192 by 8192 x 8192 on h100's TF32 tensor cores: 32 x 64 = 2048 tiles of
    128 x 128 over 132 SMs = 16 waves, each tile 2 x 128 x 128 x 8192 FLOP at 1.83e9 Hz x 2048
    TF32 FLOP/cycle x 0.65 (1.77 ms, the longer); the tiles stage A once per column of tiles
    (64), B once per row (32) and C once, 4 B each, through L2 at 10e12 B/s (1.73 ms); plus
    the 4 us launch. CUDA cores (f32) would take 8.9 ms."""
    (op,) = backends.schedule(matmul_graph(4096, 8192, 8192, "f32"), target("h100-sxm")).ops
    tiles = 16 * 2 * 128 * 128 * 8192 / (1.83e9 * 2048 * 0.65)
    l2 = 4 * (4096 * 8192 * 64 + 8192 * 8192 * 32 + 4096 * 8192)
    assert op.bytes["l2"] == l2 and op.bound == "compute"
    assert op.duration_s == pytest.approx(4e-6 + max(tiles, l2 / 10e12))


def test_native_fp32_product_is_faster_on_h100_than_on_tpu_v4():
    """989 dense bf16 TFLOP/s against 275: TF32 (half of h100's bf16 rate) still beats TPU v4's
    one bf16 pass."""
    graph = matmul_graph(4096, 8192, 8192, "f32")
    h100, tpu = (backends.schedule(graph, target(n)).latency_s for n in ("h100-sxm", "tpu-v4"))
    assert h100 < tpu


def test_fp32_runs_float32_on_cuda_cores():
    """--precision fp32 turns TF32 off: 2 x 4096 x 8192 x 8192 FLOP on h100's CUDA cores at
    132 SMs x 1.83e9 Hz x 256 f32 FLOP/cycle = 8.9 ms, plus the launch."""
    (op,) = backends.schedule(matmul_graph(4096, 8192, 8192, "f32"), target("h100-sxm"), precision="fp32").ops
    assert (op.engine, op.format, op.format_reason) == ("simt", "f32", "precision fp32: f32")
    assert op.duration_s == pytest.approx(4e-6 + 2 * 4096 * 8192 * 8192 / (132 * 1.83e9 * 256))


def test_fp32_on_a_tpu_is_six_bf16_passes():
    """XLA's float32 precision on tpu-v4: one 4096-row stream through one 128 x 128 fold,
    4096 + 128 (first load) + 254 (fill and drain) - 1 = 4477 cycles, six times over, at
    1.05e9 Hz; after the HBM latency and the first fold's (128 x 128 + 128 x 128) x 4 B."""
    (op,) = backends.schedule(layer(4096, 128, 128), target("tpu-v4"), precision="fp32").ops[:1]
    assert (op.engine, op.format, op.format_reason) == ("mxu", "f32", "precision fp32: f32 as 6 bf16 passes")
    assert op.bound == "compute"
    assert op.duration_s == pytest.approx(500e-9 + 2 * 128 * 128 * 4 / 1.2e12 + 6 * 4477 / 1.05e9)


# ------------------------------------------------------------------ formats stored
def test_every_format_stores_a_70b_projection_in_its_bits():
    """q_proj (8192 x 8192) of a weightless 70B-shaped layer, read by its product in each
    format: bits per weight x 8192^2 / 8 (int4 adds one f32 scale per 128 weights: 4.25 bits),
    plus the normalized token it reads and the projection it writes, in the carrier."""
    graph = optimize(onnx_frontend.load(llama_onnx(LLAMA3_70B.with_layers(1), batch=1, seq=1), weights=False))
    bits = {"fp32": 32, "tf32": 32, "bf16": 16, "fp16": 16, "fp8-e4m3": 8, "fp8-e5m2": 8, "int8": 8,
            "int4-g32": 5, "int4-g64": 4.5, "int4-g128": 4.25, "w8a8": 8, "ternary": 2}
    assert set(bits) == set(FORMATS) - {"native"}
    for name, per in bits.items():
        s = backends.schedule(graph, target("h100-sxm"), precision=name)
        q_proj = next(o for o in s.ops if o.name.endswith("q_proj"))
        activation = 8192 * lookup(name).carrier.itemsize
        assert q_proj.bytes["hbm"] == 8192 * 8192 * per / 8 + 2 * activation, name
        assert s.precision["policy"] == name


def test_key_value_cache_is_stored_in_the_format():
    """Attention's past keys and values: 8-bit under fp8 (FP8 KV cache), the carrier (bf16)
    under int4, the graph's f16 under native; the query is an activation (carrier)."""
    graph = Graph("decode_attention")
    for name, seq in [("q", 1), ("k", 1), ("v", 1), ("past_k", 100), ("past_v", 100)]:
        graph.add_input(name, TensorType(F16, (1, 8, seq, 64)))
    graph.add_node("Attention", ["q", "k", "v", "", "past_k", "past_v"], ["y", "present_k", "present_v"],
                   name="attention")
    graph.outputs += ["y", "present_k", "present_v"]
    graph = infer_shapes(graph)
    elements = {"past_k": 8 * 100 * 64, "present_k": 8 * 101 * 64, "q": 8 * 64}
    for precision, kv, other in [("fp8", 1, 2), ("int4", 2, 2), ("native", 2, 2), ("fp32", 4, 4)]:
        sizes = Policy(precision).sizes(graph)
        assert sizes["past_k"] == elements["past_k"] * kv and sizes["present_k"] == elements["present_k"] * kv
        assert sizes["q"] == elements["q"] * other


def test_the_head_keeps_its_weights_in_the_carrier():
    """A product that makes the graph's output is the head: int4 stores it in bf16."""
    head = matmul_graph(1, 4096, 4096, "f32")
    (op,) = backends.schedule(head, target("h100-sxm"), precision="int4").ops
    assert op.bytes["hbm"] == 4096 * 4096 * 2 + 4096 * 2 + 4096 * 2
    assert "decoded" not in op.format_reason


# ------------------------------------------------------------- what runs where, and why
def test_int4_weights_are_decoded_in_the_products_prologue():
    """One decode row through 8192 x 8192 int4-g128 weights on h100: 8192^2 x 4.25 / 8 B of
    weights and 8192 x 2 B of bf16 activation from HBM (the product's output stays on chip for
    its Relu epilogue) at 3.35e12 x 0.80 B/s = 13.3 us; the tiles (8 x 128, the one row on
    wgmma's n8 side by swap-AB, 2 K slices of 4096) take 2 x 8 x 128 x 4096 FLOP / (1.83e9 x
    4096 x 0.65) = 1.7 us, less: memory-bound."""
    op = product_record(backends.schedule(layer(1, 8192, 8192), target("h100-sxm"), precision="int4"))
    assert (op.engine, op.format) == ("tensor", "bf16")
    assert op.format_reason == ("precision int4-g128: bf16; int4-g128 weights (4.25 bits) decoded to bf16 "
                                "in the product's prologue")
    moved = 8192 * 8192 * 4.25 / 8 + 8192 * 2
    assert op.bytes["hbm"] == moved
    # on chip the codes stay 4.25-bit (decoded next to the tensor cores); A is staged once per
    # column of tiles (64 of 128), C (bf16 partial sums) once per K slice (2)
    assert op.bytes["l2"] == 8192 * 64 * 2 + 8192 * 8192 * 4.25 / 8 + 8192 * 2 * 2
    assert op.bound == "memory" and op.duration_s == pytest.approx(4e-6 + moved / (3.35e12 * 0.80))


def test_a_format_an_engine_lacks_shows_what_the_vendor_runs_instead():
    """fp8 on an A100 (no FP8 tensor cores): weights stay 8-bit in HBM, decoded to f16 and
    multiplied at the f16 rate; on an H100, FP8 tensor cores multiply them as they are."""
    a100 = product_record(backends.schedule(layer(64, 8192, 8192), target("a100-80gb"), precision="fp8"))
    assert (a100.engine, a100.format) == ("tensor", "f16")
    assert a100.format_reason == ("precision fp8-e4m3: f8e4m3 widened to f16 (no f8e4m3 on tensor); fp8-e4m3 "
                                  "weights (8 bits) decoded to f16 in the product's prologue")
    h100 = product_record(backends.schedule(layer(64, 8192, 8192), target("h100-sxm"), precision="fp8"))
    assert (h100.format, h100.format_reason) == ("f8e4m3", "precision fp8-e4m3: f8e4m3")
    assert a100.bytes["hbm"] == h100.bytes["hbm"] == 8192 * 8192 + 64 * 8192 * 2


@pytest.mark.parametrize("preset", backends.list_targets())
def test_bf16_stores_every_preset_alike_and_shows_any_conversion(preset):
    """--precision bf16: every target reads the same 4096 x 4096 x 2 B of weights; a matrix
    engine without bf16 (Groq's MXM, the teaching dataflow chip) runs them as f16, saying so."""
    s = backends.schedule(layer(64, 4096, 4096), target(preset), precision="bf16")
    op = product_record(s)
    assert s.chips == 1 and op.bytes[target(preset).outer.name] == 4096 * 4096 * 2 + 64 * 4096 * 2
    if op.format == "bf16":
        assert op.format_reason == "precision bf16: bf16"
    else:
        assert op.format == "f16" and "bf16 converted to f16 by the vendor compiler" in op.format_reason
    assert s.precision == {"policy": "bf16", "weights": "bf16", "activations": "bf16", "kv": "bf16",
                           "products": "bf16"}


def test_a_vector_unit_without_bf16_widens_to_f32():
    """Groq's VXM lists no bf16: a bf16 Relu runs in f32 there, not on the host."""
    relu = next(o for o in backends.schedule(layer(64, 512, 512), target("groq-lpu"), precision="bf16").ops
                if o.op == "Relu")
    assert (relu.engine, relu.format) == ("vxm", "f32")
    assert relu.format_reason == "precision bf16: bf16 widened to f32 (no bf16 on vxm)"


def test_a_graph_quantized_by_the_rewrite_keeps_its_stored_formats():
    """xpuc import --precision int4 writes int4 codes and per-group scales; scheduling that graph
    natively, its product's kernel (the decode, the product, its Relu) reads 8192^2 / 2 B of
    codes, 8192^2 / 128 x 4 B of scales and the f32 row, and writes the f32 result."""
    graph = quantize(layer(1, 8192, 8192), "int4")
    s = backends.schedule(graph, target("h100-sxm"))
    assert s.kernels == 1
    assert sum(o.bytes["hbm"] for o in s.ops) == 8192 * 8192 // 2 + 8192 * 8192 // 128 * 4 + 2 * 8192 * 4
