"""The whole-model compile cache (runtime/model_cache.py): a warm compile skips the import and
gives the same outputs; anything that changes the compiled model misses; bad entries rebuild."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, external_data_helper, helper, numpy_helper

import runtime
from runtime import compiled as compiled_module
from runtime import model_cache

RNG = np.random.default_rng(0)
W = RNG.standard_normal((64, 32)).astype(np.float32)
B = RNG.standard_normal(32).astype(np.float32)
X = RNG.standard_normal((3, 64)).astype(np.float32)


def mlp(w: np.ndarray = W, batch="batch") -> onnx.ModelProto:
    """y = relu(x @ w + b); w is over model_cache.SMALL_BYTES, so a hit maps it from the blob."""
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["s"]),
         helper.make_node("Relu", ["s"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", f, (batch, 64))], [helper.make_tensor_value_info("y", f, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(B, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def expected(x: np.ndarray, w: np.ndarray = W) -> np.ndarray:
    return np.maximum(x @ w + B, 0)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("XPUC_NO_CACHE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def imports(monkeypatch) -> list:
    """Each call of the ONNX import made by runtime.compile: a cache hit makes none."""
    calls = []
    load = compiled_module.onnx_frontend.load

    def counted(*args, **kwargs):
        calls.append(args[0])
        return load(*args, **kwargs)

    monkeypatch.setattr(compiled_module.onnx_frontend, "load", counted)
    return calls


def run(model, x=X, **kwargs) -> np.ndarray:
    return runtime.compile(model, input_shapes={"x": x.shape}, **kwargs).run({"x": x})[0]


def entries(cache_dir) -> list:
    return sorted((cache_dir / "models").glob("*.xpm"))


def test_warm_compile_skips_import_and_matches(cache_dir, imports):
    cold = run(mlp())
    warm_model = runtime.compile(mlp(), input_shapes={"x": X.shape})
    mapped = [a for a in warm_model._last.constants.values() if a.nbytes >= W.nbytes]  # W or its packed panels
    assert mapped and all(isinstance(a, np.memmap) and not a.flags.writeable for a in mapped)
    warm = warm_model.run({"x": X})[0]
    assert len(imports) == 1 and len(entries(cache_dir)) == 1
    np.testing.assert_array_equal(warm, cold)
    np.testing.assert_allclose(warm, expected(X), rtol=1e-5, atol=1e-5)
    # the first run copies them into anonymous memory (huge pages), the same bytes
    copied = [a for a in warm_model._last.constants.values() if a.nbytes >= W.nbytes]
    assert not any(isinstance(a, np.memmap) for a in copied)
    assert all(np.array_equal(a, b) for a, b in zip(copied, mapped))


@pytest.mark.parametrize("form", ["proto", "bytes", "path"])
def test_one_changed_weight_misses(cache_dir, imports, tmp_path, form):
    def source(w):
        model = mlp(w)
        if form == "proto":
            return model
        if form == "bytes":
            return model.SerializeToString()
        path = tmp_path / "model.onnx"
        onnx.save(model, path)
        return path

    changed = W.copy()
    changed[5, 7] += 1.0
    np.testing.assert_allclose(run(source(W)), expected(X), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(source(changed)), expected(X, changed), rtol=1e-5, atol=1e-5)
    assert len(imports) == 2 and len(entries(cache_dir)) == 2


def test_input_shapes_target_and_options_are_part_of_the_key(cache_dir, imports):
    x5 = RNG.standard_normal((5, 64)).astype(np.float32)
    np.testing.assert_allclose(run(mlp()), expected(X), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(run(mlp(), x5), expected(x5), rtol=1e-5, atol=1e-5)
    run(mlp(), optimize=False)
    emulated = runtime.compile(mlp(), "tpu-v4", input_shapes={"x": X.shape})
    emulated.run({"x": X})
    assert len(imports) == 4 and len(entries(cache_dir)) == 4
    run(mlp(), x5, threads=1)  # the thread count does not change the code: a hit
    again = runtime.compile(mlp(), "tpu-v4", input_shapes={"x": X.shape})
    np.testing.assert_array_equal(again.run({"x": X})[0], emulated.run({"x": X})[0])
    assert len(imports) == 4
    assert again.last_cost.ops and again.last_cost == emulated.last_cost


def test_precision_is_part_of_the_key_and_a_quantized_entry_hits(cache_dir, imports):
    """Each format compiles once; a warm int4 model reads its packed codes from the entry."""
    mlp_head = mlp()
    mlp_head.graph.node[-1].output[0] = "r"  # a reader after the fused product, which is then no head
    mlp_head.graph.node.append(helper.make_node("Neg", ["r"], ["y"]))
    cold = {p: run(mlp_head, precision=p) for p in ("int8", "int4")}
    assert len(imports) == 2 and not np.array_equal(cold["int8"], cold["int4"])
    np.testing.assert_array_equal(run(mlp_head, precision="int4-g128"), cold["int4"])  # an alias: the same key
    assert len(imports) == 2


def test_path_memo_sees_an_edit_of_the_model_and_of_its_external_data(cache_dir, imports, tmp_path):
    path = tmp_path / "model.onnx"

    def save(w):
        model = mlp(w)
        external_data_helper.convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
        onnx.save(model, path)
        time.sleep(0.2)  # older than model_cache.MEMO_MARGIN_NS when hashed, so the stat memo is kept

    changed = W.copy()
    changed[0, 0] = -changed[0, 0]
    save(W)
    run(path)
    run(path)
    assert len(imports) == 1 and list((cache_dir / "models").glob("*.stat"))
    save(changed)  # same sizes: only the stats and the bytes differ
    np.testing.assert_allclose(run(path), expected(X, changed), rtol=1e-5, atol=1e-5)
    assert len(imports) == 2


@pytest.mark.parametrize("damage", ["flip-meta", "truncate", "empty", "garbage"])
def test_a_damaged_entry_is_rebuilt(cache_dir, imports, damage):
    cold = run(mlp())
    entry, = entries(cache_dir)
    data = bytearray(entry.read_bytes())
    if damage == "flip-meta":
        data[model_cache.HEADER.size + 10] ^= 0xFF
    elif damage == "truncate":
        del data[-100:]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(RNG.bytes(len(data)))
    entry.write_bytes(bytes(data))
    np.testing.assert_array_equal(run(mlp()), cold)
    np.testing.assert_array_equal(run(mlp()), cold)
    assert len(imports) == 2  # the damaged entry missed; the rebuilt one hits


def test_cache_can_be_turned_off(cache_dir, imports, monkeypatch):
    for _ in range(2):
        np.testing.assert_allclose(run(mlp(), cache=False), expected(X), rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("XPUC_NO_CACHE", "1")
    for _ in range(2):
        np.testing.assert_allclose(run(mlp()), expected(X), rtol=1e-5, atol=1e-5)
    assert len(imports) == 4 and not cache_dir.exists()


def test_least_recently_used_entries_are_evicted(cache_dir, imports, monkeypatch):
    run(mlp())
    size = entries(cache_dir)[0].stat().st_size
    monkeypatch.setattr(model_cache, "MAX_BYTES", 2 * size)
    other = W + 1
    run(mlp(other))
    time.sleep(0.05)  # file times tick coarsely: let each use have its own
    run(mlp())  # a hit: now the most recently used
    time.sleep(0.05)
    run(mlp(-W))  # a third entry: the least recently used one (``other``) goes
    assert len(entries(cache_dir)) == 2 and len(imports) == 3
    run(mlp())
    assert len(imports) == 3
    np.testing.assert_allclose(run(mlp(other)), expected(X, other), rtol=1e-5, atol=1e-5)
    assert len(imports) == 4
