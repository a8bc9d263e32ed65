"""The differential fuzzer (``fuzz/``, run long with ``python -m fuzz --seed S --count N``).

Here: every minimized regression fixture it saved (``tests/fixtures/fuzz/``) must pass every
check; a fixed-seed slice of random programs must too; and the fuzzer's own parts do what
they say (shrinking, fixtures round-tripping, coverage of the op registry).
"""

from __future__ import annotations

import numpy as np
import pytest

import backends.codegen.rules as codegen_rules
from fuzz import compute, elementwise, movement
from fuzz.check import OracleError, check
from fuzz.generate import generate
from fuzz.minimize import FIXTURES, ddmin, intermediates, load, minimize, save, subprogram
from ir.ops.registry import Pattern, lookup, supported_ops

FIXTURE_DIRS = sorted(p for p in FIXTURES.glob("*") if (p / "model.onnx").exists())
SLICE_SEED = 0
SLICE_CHUNKS, SLICE_CHUNK = 10, 30
"""300 programs in chunks, so a failure names its chunk and the chunks can run in parallel."""


@pytest.mark.parametrize("path", FIXTURE_DIRS, ids=lambda p: p.name)
def test_regression_fixture_passes_every_check(path):
    case = load(path)
    assert [str(f) for f in check(case)] == []


@pytest.mark.parametrize("chunk", range(SLICE_CHUNKS))
def test_fixed_seed_slice(chunk):
    failures, skipped = {}, 0
    for index in range(chunk * SLICE_CHUNK, (chunk + 1) * SLICE_CHUNK):
        case = generate(SLICE_SEED, index)
        try:
            found = check(case)
        except OracleError:
            skipped += 1
            continue
        if found:
            failures[index] = [str(f) for f in found]
    assert not failures, f"python -m fuzz --seed {SLICE_SEED} --start INDEX --count 1 --minimize: {failures}"
    assert skipped <= SLICE_CHUNK // 5, "most programs must be ones onnxruntime can run"


# ------------------------------------------------------------------ the fuzzer's parts
def test_ddmin_finds_a_one_minimal_subset():
    calls = []

    def fails(items):
        calls.append(items)
        return {3, 7} <= set(items)

    assert ddmin(list(range(10)), fails) == [3, 7]


def test_a_cut_value_is_fed_what_it_held_and_constants_stay_constants():
    case = generate(SLICE_SEED, 3)
    values = intermediates(case)
    nodes = case.model.graph.node
    last = len(nodes) - 1
    sub = subprogram(case, [last], values)
    for name, array in sub.feeds.items():
        np.testing.assert_array_equal(array, values[name])
    assert {t.name for t in sub.model.graph.initializer} >= {i for i in nodes[last].input if i and i not in sub.feeds}


def test_minimize_keeps_the_failure_and_fixtures_round_trip(tmp_path, monkeypatch):
    """A planted bug (every Tanh output wrong) shrinks to the one Tanh, saved and loaded intact."""
    from fuzz.check import Failure

    def planted(case, **kwargs):
        ops = [n.op_type for n in case.model.graph.node]
        return [Failure("outputs", "planted")] if "Tanh" in ops else []

    monkeypatch.setattr("fuzz.minimize.check", planted)
    case = next(c for c in (generate(7, i) for i in range(200))
                if "Tanh" in [n.op_type for n in c.model.graph.node] and len(c.model.graph.node) > 3)
    small = minimize(case, Failure("outputs", "planted"))
    assert [n.op_type for n in small.model.graph.node] == ["Tanh"]
    path = save(small, Failure("outputs", "planted"), tmp_path)
    again = load(path)
    assert again.model.graph == small.model.graph and (again.bind, again.target) == (small.bind, small.target)
    assert again.feeds.keys() == small.feeds.keys()
    for name in small.feeds:
        np.testing.assert_array_equal(again.feeds[name], small.feeds[name])


NOT_GENERATED = {
    "Constant": "the importer turns Constant nodes into constant values",
    "FusedMatMul": "a composite made by fusion (fuzz.patterns writes the patterns it fuses)",
    "SiLU": "a composite made by fusion", "SwiGLU": "a composite made by fusion",
    "MixtureOfExperts": "a composite written by frontends.hf (tests/test_hf_models.py checks it against onnxruntime)",
    "SelectiveScan": "a composite written by frontends.hf (tests/test_hf_models.py checks it against onnxruntime)",
    "TensorScatter": "written by ir.passes.kv_cache for decode steps (tests/test_decode_step.py, conformance)",
}


def test_every_op_with_code_generation_is_fuzzed():
    """A new op (with CPU code generation) must be generated, or listed above with a reason."""
    generated = set(elementwise.candidates()) | {"Cast", "CastLike", "Clip", "RotaryEmbedding"}
    for module in (movement, compute):
        generated |= set(module.GENERATORS) | {op for ops in module.COVERS.values() for op in ops}
    tables = (codegen_rules.POINTWISE, codegen_rules.ANCHORS, codegen_rules.STATIC)
    lowered = {op for domain, op in supported_ops() if any(codegen_rules.key(op, domain) in t for t in tables)
               or lookup(op, domain).pattern is Pattern.VIEW}
    assert lowered - generated - set(NOT_GENERATED) == set()
    assert all(lookup(op) for op in generated), "generators are named after the op types they write"


def test_value_ranges_refuse_ill_conditioned_and_undefined_operands():
    from fuzz.build import Tensor
    from fuzz.elementwise import value_range

    def t(lo, hi):
        return Tensor("x", (4,), np.dtype(np.float32), lo, hi, exact=False)

    assert value_range("Tan", {}, [t(-50.0, 50.0)]) is None  # poles inside: a last-bit change is a big one
    lo, hi = value_range("Tan", {}, [t(-0.9, 0.9)])
    assert lo < np.tan(-0.9) and hi > np.tan(0.9)
    assert value_range("Log", {}, [t(-1.0, 1.0)]) is None and value_range("Log", {}, [t(1.1, 2.0)]) is not None
    assert value_range("Exp", {}, [t(0.0, 50.0)]) is None  # past the float32 cap
