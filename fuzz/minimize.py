"""Shrink a failing program to the fewest nodes that still fail the same way, and save it
as a regression fixture.

Any subset of a program's nodes is again a valid program: a value whose producer was
dropped becomes a graph input, fed with the value onnxruntime computed for it in the full
program (so indices stay in range and shapes stay consistent), and the values no kept node
reads become the outputs. Delta debugging (Zeller's ddmin) over the nodes finds a subset
from which no single node can be removed without losing the failure; "the same way" is
:attr:`check.Failure.kind` (the check, and for an exception its type and place).

A fixture is a folder in the layout of ONNX's own node tests: ``model.onnx`` and
``test_data_set_0/input_<i>.pb``; how to compile it (bound shapes, emulated target) and
where it came from are ``metadata_props`` of the model.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .check import Failure, OracleError, check, reference
from .generate import Case

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "fuzz"
META = "xpuc.fuzz."


def intermediates(case: Case) -> dict[str, np.ndarray]:
    """Every value of the program (inputs, initializers, node outputs) as onnxruntime computes it."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    declared = {o.name for o in model.graph.output}
    names = [o for n in model.graph.node for o in n.output if o and o not in declared]
    model.graph.output.extend(helper.make_value_info(n, onnx.TypeProto()) for n in names)
    outs = [o.name for o in model.graph.output]
    values = dict(zip(outs, reference(model, case.feeds)))
    values.update(case.feeds)
    values.update({t.name: numpy_helper.to_array(t) for t in case.model.graph.initializer})
    return values


def constant_values(model: onnx.ModelProto) -> set[str]:
    """Values computed from initializers alone (a cut there stays a constant, so it still folds)."""
    known = {t.name for t in model.graph.initializer}
    for node in model.graph.node:
        if all(not i or i in known for i in node.input):
            known.update(o for o in node.output if o)
    return known


def subprogram(case: Case, keep: list[int], values: dict[str, np.ndarray], outputs: list[str] | None = None) -> Case:
    """The program of nodes ``keep`` (indices, in order) computing those of ``outputs`` they
    produce (if none: every value no kept node reads); a value whose producer is gone becomes a fed input, or a constant
    if it was computed from constants alone."""
    graph = case.model.graph
    nodes = [graph.node[i] for i in keep]
    produced = {o for n in nodes for o in n.output if o}
    read = {i for n in nodes for i in n.input if i}
    sinks = [o for n in nodes for o in n.output if o and o not in read and o in values]
    outputs = [o for o in outputs or () if o in produced] or sinks
    constants = constant_values(case.model)
    initializers = [t for t in graph.initializer if t.name in read]
    declared = {i.name: i for i in graph.input}
    inputs, feeds = [], {}
    for name in dict.fromkeys(i for n in nodes for i in n.input if i):
        if name in produced or any(t.name == name for t in initializers):
            continue
        array = values[name]
        if name in constants:
            initializers.append(numpy_helper.from_array(array, name))
            continue
        inputs.append(declared.get(name) or helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
        feeds[name] = array
    model = helper.make_model(
        helper.make_graph(nodes, graph.name, inputs, [
            helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(values[o].dtype), None)
            for o in outputs], initializers),
        opset_imports=list(case.model.opset_import), ir_version=case.model.ir_version)
    return Case(model, feeds, case.bind, case.target, case.label)


def ddmin(items: list, fails: Callable[[list], bool]) -> list:
    """A 1-minimal sublist of ``items`` that still ``fails`` (which ``items`` must)."""
    n = 2
    while len(items) >= 2:
        size = -(-len(items) // n)
        chunks = [items[i:i + size] for i in range(0, len(items), size)]
        for chunk in chunks:
            rest = [x for x in items if x not in chunk]
            if rest and fails(rest):
                items, n = rest, max(n - 1, 2)
                break
        else:
            for chunk in chunks:
                if len(chunks) > 2 and fails(chunk):
                    items, n = chunk, 2
                    break
            else:
                if n >= len(items):
                    break
                n = min(len(items), 2 * n)
    return items


def minimize(case: Case, failure: Failure, *, log: Callable[[str], None] = lambda s: None) -> Case:
    """The smallest sub-program of ``case`` that still has a failure of ``failure.kind``."""
    values = intermediates(case)
    tries = 0

    def fails(keep: list[int], outputs: list[str] | None = None) -> bool:
        nonlocal tries
        tries += 1
        sub = subprogram(case, keep, values, outputs)
        if not sub.model.graph.output:
            return False
        try:
            found = check(sub)
        except OracleError:
            return False
        return any(f.kind == failure.kind for f in found)

    keep = list(range(len(case.model.graph.node)))
    outputs = [o.name for o in case.model.graph.output]
    while True:  # outputs, then nodes computing them, until neither shrinks
        before = (len(keep), len(outputs))
        outputs = ddmin(outputs, lambda chosen: fails(keep, chosen))
        keep = ddmin(keep, lambda chosen: fails(chosen, outputs))
        outputs = [o for o in outputs if any(o in case.model.graph.node[i].output for i in keep)]
        if (len(keep), len(outputs)) == before:
            break
    log(f"minimized {len(case.model.graph.node)} -> {len(keep)} nodes in {tries} tries")
    return subprogram(case, keep, values, outputs)


# ------------------------------------------------------------------------- fixtures
def save(case: Case, failure: Failure, folder: Path = FIXTURES, name: str | None = None) -> Path:
    """Write ``case`` as a fixture folder named after the failure (and the model's digest)."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    del model.metadata_props[:]
    for key, value in (("bind", str(int(case.bind))), ("target", case.target), ("found", case.label),
                       ("failure", str(failure)[:500])):
        model.metadata_props.add(key=META + key, value=value)
    digest = hashlib.sha256(case.model.SerializeToString(deterministic=True)).hexdigest()[:8]
    name = name or f"{re.sub(r'[^a-z0-9]+', '-', failure.kind.lower()).strip('-')[:40]}-{digest}"
    path = folder / name
    data = path / "test_data_set_0"
    data.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path / "model.onnx")
    for i, (key, array) in enumerate(case.feeds.items()):
        (data / f"input_{i}.pb").write_bytes(numpy_helper.from_array(np.asarray(array), key).SerializeToString())
    return path


def load(path: Path) -> Case:
    model = onnx.load(path / "model.onnx")
    meta = {p.key[len(META):]: p.value for p in model.metadata_props if p.key.startswith(META)}
    feeds = {}
    for file in sorted((path / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1])):
        tensor = onnx.TensorProto()
        tensor.ParseFromString(file.read_bytes())
        feeds[tensor.name] = numpy_helper.to_array(tensor)
    return Case(model, feeds, meta.get("bind", "1") == "1", meta.get("target", "cpu"), meta.get("found", path.name))
