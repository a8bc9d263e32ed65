"""Config-built models run: every family's tiny random model compiles to native code and matches
onnxruntime on the exported graph; the two composites match numpy written from their definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ir
import runtime
from conftest import FIXTURES, ort_session
from frontends import hf
from frontends import onnx as onnx_frontend
from ir.dtypes import DType
from ir.passes import infer_shapes
from ir.types import TensorType

TINY = json.loads((FIXTURES / "hf_tiny_configs.json").read_text())["configs"]
F32 = DType.FLOAT32


def _close(ours, reference):
    for a, r in zip(ours, reference):
        assert a.shape == r.shape
        np.testing.assert_allclose(a, r, rtol=1e-4, atol=1e-5)


def test_every_family_has_a_tiny_config():
    from frontends.hf_config import FAMILIES
    assert sorted(TINY) == sorted(FAMILIES)


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_random_model_matches_onnxruntime(family):
    graph = hf.load(TINY[family], weights="random", seed=3, input_shapes={"input_ids": (2, 8)})
    ids = np.random.default_rng(1).integers(0, TINY[family]["vocab_size"], (2, 8)).astype(np.int64)
    expected = ort_session(ir.to_onnx(graph)).run(None, {"input_ids": ids})
    _close(runtime.compile(graph, cache=False).run({"input_ids": ids}), expected)
    assert expected[0].shape == (2, 8, TINY[family]["vocab_size"]) and np.abs(expected[0]).max() > 1


def _graph(name: str, inputs: dict[str, tuple], constants: dict[str, np.ndarray], op: str, attrs: dict) -> ir.Graph:
    graph = ir.Graph(name)
    for input_name, shape in inputs.items():
        graph.add_input(input_name, TensorType(F32, shape))
    names = list(inputs) + [graph.add_constant(data.astype(np.float32), key) for key, data in constants.items()]
    node = graph.add_node(op, names, 1, attrs, domain="xpuc")
    graph.outputs.extend(node.outputs)
    return infer_shapes(graph)


def _moe_reference(x, router, gate_up, down, top_k, normalize, act):
    """transformers' MixtralSparseMoeBlock, one token at a time."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.float64)
    inter = down.shape[1]
    out = np.zeros_like(rows)
    for t, row in enumerate(rows):
        logits = row @ router
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        chosen = np.argsort(-probs, kind="stable")[:top_k]
        weights = probs[chosen] / (probs[chosen].sum() if normalize else 1)
        for e, w in zip(chosen, weights):
            both = row @ gate_up[e]
            out[t] += w * ((act(both[:inter]) * both[inter:]) @ down[e])
    return out.reshape(x.shape)


def _silu(v):
    return v / (1 + np.exp(-v))


def _gelu_tanh(v):
    return 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))


@pytest.mark.parametrize("top_k, normalize, activation, act", [(2, 1, "SiLU", _silu), (3, 0, "GeluTanh", _gelu_tanh),
                                                               (1, 1, "SiLU", _silu)])
def test_mixture_of_experts_matches_its_definition(top_k, normalize, activation, act):
    rng = np.random.default_rng(top_k)
    hidden, experts, inter = 16, 5, 12
    weights = {"router": rng.standard_normal((hidden, experts)),
               "gate_up": rng.standard_normal((experts, hidden, 2 * inter)) / 4,
               "down": rng.standard_normal((experts, inter, hidden)) / 4}
    graph = _graph("moe", {"x": (2, 7, hidden)}, weights, "MixtureOfExperts",
                   {"top_k": top_k, "normalize": normalize, "activation": activation})
    x = rng.standard_normal((2, 7, hidden)).astype(np.float32)
    expected = _moe_reference(x, *(w.astype(np.float32).astype(np.float64) for w in weights.values()),
                              top_k, normalize, act)
    exported = ort_session(ir.to_onnx(graph)).run(None, {"x": x})
    _close(exported, [expected.astype(np.float32)])
    _close(runtime.compile(graph, cache=False).run({"x": x}), exported)


def _scan_reference(u, delta, a, b, c, d, state):
    """transformers' mamba slow path: h = exp(dt*A) h + dt*B*u; y = h.C + u*D."""
    ys = []
    for t in range(u.shape[1]):
        dt = delta[:, t, :, None]
        state = np.exp(dt * a) * state + dt * b[:, t, None, :] * u[:, t, :, None]
        ys.append((state * c[:, t, None, :]).sum(-1))
    return np.stack(ys, 1) + u * d, state


@pytest.mark.parametrize("with_state", [False, True])
def test_selective_scan_matches_its_recurrence(with_state):
    rng = np.random.default_rng(7)
    batch, length, inner, state = 2, 9, 6, 4
    inputs = {"u": (batch, length, inner), "delta": (batch, length, inner), "b": (batch, length, state),
              "c": (batch, length, state)}
    constants = {"A": -np.exp(rng.standard_normal((inner, state))), "D": rng.standard_normal(inner)}
    names = ["u", "delta", "A", "b", "c", "D"] + (["h0"] if with_state else [])
    graph = ir.Graph("scan")
    for name, shape in {**inputs, **({"h0": (batch, inner, state)} if with_state else {})}.items():
        graph.add_input(name, TensorType(F32, shape))
    for name, data in constants.items():
        graph.add_value(name, TensorType(F32, data.shape), const=True, data=data.astype(np.float32))
    node = graph.add_node("SelectiveScan", names, 2, domain="xpuc")
    graph.outputs.extend(node.outputs)
    infer_shapes(graph)
    feeds = {name: rng.standard_normal(graph.type_of(name).shape).astype(np.float32) for name in graph.inputs}
    feeds["delta"] = np.log1p(np.exp(feeds["delta"]))  # softplus: positive steps, as in Mamba
    start = feeds.get("h0", np.zeros((batch, inner, state), np.float32))
    expected = _scan_reference(*(feeds[n].astype(np.float64) if n in feeds else constants[n] for n in names[:6]),
                               start.astype(np.float64))
    exported = ort_session(ir.to_onnx(graph)).run(None, feeds)
    _close(exported, [e.astype(np.float32) for e in expected])
    _close(runtime.compile(graph, cache=False).run(feeds), exported)


def test_softplus_of_large_and_very_negative_steps_matches_onnxruntime():
    """Mamba's time steps go through Softplus: log(1 + exp(x)) must not overflow past x = 88
    (it once gave inf) nor round tiny results to zero."""
    graph = ir.Graph("softplus")
    graph.add_input("x", TensorType(F32, (6,)))
    graph.outputs.append(graph.add_node("Softplus", ["x"], 1).outputs[0])
    infer_shapes(graph)
    x = np.array([-100, -20, 0, 20, 90, 200], np.float32)
    expected = ort_session(ir.to_onnx(graph)).run(None, {"x": x})
    _close(runtime.compile(graph, cache=False).run({"x": x}), expected)
    assert expected[0][-1] == 200


@pytest.mark.parametrize("family", ["mamba", "mixtral"])
def test_exported_composites_import_back_as_themselves(family):
    """An export carries MixtureOfExperts / SelectiveScan as functions (reference bodies with
    TopK and Scan); importing it gives the composite back, which compiles and matches."""
    graph = hf.load(TINY[family], weights="random", input_shapes={"input_ids": (1, 8)})
    model = ir.to_onnx(graph)
    composite = {"mamba": "xpuc.SelectiveScan", "mixtral": "xpuc.MixtureOfExperts"}[family]
    types = [n.qualified_type for n in onnx_frontend.load(model).nodes]
    assert types.count(composite) == TINY[family]["num_hidden_layers"] and not {"Scan", "TopK"} & set(types)
    ids = np.arange(8, dtype=np.int64).reshape(1, 8)
    expected = ort_session(model).run(None, {"input_ids": ids})
    _close(runtime.compile(model, cache=False).run({"input_ids": ids}), expected)
