"""Import ONNX models into the xpuc IR.

``load`` accepts a path, serialized bytes or a ``ModelProto``. It refuses unsafe or
malformed input with one clear :class:`ir.errors.XpucError` before anything else looks at
the model: files that are not ONNX, external data outside the model's folder, tensors whose
declared size does not match their data, unsupported ops (all of them listed at once).

Older opsets are upgraded with ``onnx.version_converter`` to one canonical opset, so the IR
has a single meaning per op type; model-local functions are inlined with ``onnx.inliner``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import onnx
import onnx.inliner  # a submodule: `import onnx` alone does not load it
from google.protobuf.message import DecodeError
from onnx import external_data_helper, helper, numpy_helper

import ir
from ir import ops
from ir.ops import composite
from ir.dtypes import DType
from ir.errors import ModelLoadError, UnsupportedOpsError
from ir.passes.shape_inference import infer_shapes
from ir.shapes import bind_input_shapes
from ir.types import Dim, TensorType

CANONICAL_OPSET = 23
"""Opset the IR speaks: the first with Attention, RMSNormalization and RotaryEmbedding."""

MAX_TENSOR_BYTES = 1 << 40
"""Refuse to materialise any single tensor larger than this (1 TiB): a hostile file's claim."""

SMALL_TENSOR_BYTES = 4096
"""Embedded initializers up to this size (shape vectors, scalars) load even with weights=False:
shape inference needs them, and they are not weights."""

ModelSource = str | os.PathLike | bytes | onnx.ModelProto


def load(model: ModelSource, *, input_shapes: Mapping[str, Sequence[Dim] | str] | None = None,
         weights: bool = True, base_dir: str | os.PathLike | None = None) -> ir.Graph:
    """Import an ONNX model.

    input_shapes: bind graph inputs to shapes, e.g. ``{"input_ids": (1, 128)}`` or ``"1x128"``;
        symbolic dims of the same name elsewhere are bound too.
    weights: when False, initializers keep only shape and dtype (external data files need
        not exist), so very large models can be scheduled; small embedded ones still load.
    base_dir: folder that external data paths are relative to, when ``model`` is not a path.
    """
    proto, base = _read(model, base_dir)
    _check_header(proto)
    proto = _canonicalize(proto)
    _check_supported(proto)
    graph = _build(proto, base, weights)
    if input_shapes:
        bind_input_shapes(graph, input_shapes)
    ir.verify(graph)
    return infer_shapes(graph)


# --------------------------------------------------------------------- reading
def _read(model: ModelSource, base_dir) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(model, onnx.ModelProto):
        return model, Path(base_dir) if base_dir else None
    if isinstance(model, (bytes, bytearray)):
        return _parse(bytes(model), "the given bytes"), Path(base_dir) if base_dir else None
    path = Path(model)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file")
    return _parse(path.read_bytes(), str(path)), Path(base_dir) if base_dir else path.resolve().parent


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    if not data:
        raise ModelLoadError(f"{where}: the file is empty")
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ModelLoadError(f"{where}: not a valid ONNX model (truncated or corrupt protobuf: {exc})") from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelLoadError(f"{where}: not an ONNX model (no graph or no opset_import found)")
    return proto


def _check_header(proto: onnx.ModelProto) -> None:
    default = _default_opset(proto)
    newest = onnx.defs.onnx_opset_version()
    if default is None:
        raise ModelLoadError("the model imports no version of the default ONNX domain")
    if default > newest:
        raise ModelLoadError(f"the model uses opset {default}, newer than the installed onnx supports ({newest})")
    _check_text(proto.graph)


def _check_text(g: onnx.GraphProto) -> None:
    """Protobuf hands back ``bytes`` for strings that are not UTF-8; refuse them by name."""
    for i, node in enumerate(g.node):
        for text in (node.op_type, node.domain, node.name, *node.input, *node.output):
            if isinstance(text, bytes):
                raise ModelLoadError(f"node #{i} has a name or op type that is not valid UTF-8: {text!r}")
    for item in (*g.initializer, *g.input, *g.output):
        if isinstance(item.name, bytes):
            raise ModelLoadError(f"graph value name {item.name!r} is not valid UTF-8")


def _default_opset(proto: onnx.ModelProto) -> int | None:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def _canonicalize(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Inline local functions and upgrade to the canonical opset."""
    proto = _restore_composites(proto)
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    if _default_opset(proto) < CANONICAL_OPSET:
        _check_supported(proto)
        try:
            proto = _convert_without_payloads(proto)
        except Exception as exc:  # onnx raises several types; the message says which adapter failed
            raise ModelLoadError(f"cannot upgrade the model from opset {_default_opset(proto)} to "
                                 f"{CANONICAL_OPSET}: {exc}") from None
    return proto


def _restore_composites(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Calls of functions xpuc exported for its own composites (``xpuc.MixtureOfExperts``,
    ``xpuc.SelectiveScan``) become those ops again instead of their reference bodies (in a
    copy: the caller's model is left as it was)."""
    if not any(n.domain == composite.DOMAIN and composite.from_function(n.op_type) for n in proto.graph.node):
        return proto
    proto = _copy(proto)
    restored = set()
    for node in proto.graph.node:
        found = composite.from_function(node.op_type) if node.domain == composite.DOMAIN else None
        if found is not None:
            restored.add(node.op_type)
            node.op_type = found[0]
            node.attribute.extend(helper.make_attribute(k, v) for k, v in found[1].items())
    kept = [f for f in proto.functions if not (f.domain == composite.DOMAIN and f.name in restored)]
    del proto.functions[:]
    proto.functions.extend(kept)
    return proto


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


DETACHED = "xpuc-detached-payload"
"""Marks initializers whose bytes stay out of the version converter."""


def _convert_without_payloads(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``onnx.version_converter`` serializes and copies every weight byte (13 s for GPT-2 small)
    although its adapters only read small constants: large payloads travel as external-data
    stubs and are put back, by name, into both the converted and the caller's model."""
    payloads = {}
    for tensor in proto.graph.initializer:
        if len(tensor.raw_data) > SMALL_TENSOR_BYTES and not external_data_helper.uses_external_data(tensor):
            payloads[tensor.name] = tensor.raw_data
            tensor.ClearField("raw_data")
            tensor.data_location = onnx.TensorProto.EXTERNAL
            tensor.external_data.add(key="location", value=DETACHED)
    try:
        converted = onnx.version_converter.convert_version(proto, CANONICAL_OPSET)
    finally:
        _reattach(proto, payloads)
    _reattach(converted, payloads)
    return converted


def _reattach(proto: onnx.ModelProto, payloads: dict[str, bytes]) -> None:
    for tensor in proto.graph.initializer:
        if tensor.name in payloads and any(e.value == DETACHED for e in tensor.external_data):
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = payloads[tensor.name]


def _check_supported(proto: onnx.ModelProto) -> None:
    """Raise one error naming every unsupported op type, with the nodes that use it."""
    unsupported: dict[str, list[str]] = {}
    for i, node in enumerate(proto.graph.node):
        if node.op_type == "Constant" and not node.domain:
            continue
        if ops.lookup(node.op_type, node.domain) is None:
            key = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            unsupported.setdefault(key, []).append(node.name or f"#{i}")
        elif any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            unsupported.setdefault(f"{node.op_type} with subgraphs", []).append(node.name or f"#{i}")
    if unsupported:
        raise UnsupportedOpsError(unsupported, _default_opset(proto))


# -------------------------------------------------------------------- building
def _build(proto: onnx.ModelProto, base: Path | None, weights: bool) -> ir.Graph:
    g = proto.graph
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import}
    graph = ir.Graph(g.name or "main", opsets)
    graph.metadata = {p.key: p.value for p in proto.metadata_props}
    if proto.producer_name:
        graph.metadata.setdefault("producer", f"{proto.producer_name} {proto.producer_version}".strip())

    for tensor in g.initializer:
        _add_initializer(graph, tensor, base, weights)
    for info in g.input:
        if info.name not in graph.values:
            graph.add_input(info.name, _value_info_type(info))
    for i, node in enumerate(g.node):
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            _add_constant_node(graph, node)
            continue
        attrs = {a.name: _attribute_value(a, node) for a in node.attribute}
        graph.add_node(node.op_type, node.input, node.output, attrs,
                       domain="" if node.domain == "ai.onnx" else node.domain, name=node.name or f"{node.op_type}_{i}")
    for info in g.output:
        if info.name not in graph.values:
            raise ModelLoadError(f"graph output {info.name!r} is not computed by any node")
        declared = _value_info_type(info)
        if graph.values[info.name].type.shape is None:
            graph.values[info.name].type = declared
        graph.outputs.append(info.name)
    return graph


def _value_info_type(info: onnx.ValueInfoProto) -> TensorType:
    t = info.type.tensor_type
    if not info.type.HasField("tensor_type"):
        raise ModelLoadError(f"value {info.name!r} is not a tensor (sequences and maps are not supported)")
    try:
        dtype = DType.from_onnx(t.elem_type) if t.elem_type else None
    except ValueError as exc:
        raise ModelLoadError(f"value {info.name!r}: {exc}") from None
    if not t.HasField("shape"):
        return TensorType(dtype, None)
    dims: list[Dim] = []
    for i, d in enumerate(t.shape.dim):
        if d.HasField("dim_value"):
            if d.dim_value < 0:
                raise ModelLoadError(f"value {info.name!r} has a negative dimension {d.dim_value}")
            dims.append(d.dim_value)
        else:
            dims.append(d.dim_param or f"{info.name}_d{i}")
    return TensorType(dtype, tuple(dims))


def _tensor_type(tensor: onnx.TensorProto) -> TensorType:
    try:
        dtype = DType.from_onnx(tensor.data_type)
    except ValueError as exc:
        raise ModelLoadError(f"tensor {tensor.name!r}: {exc}") from None
    if any(d < 0 for d in tensor.dims):
        raise ModelLoadError(f"tensor {tensor.name!r} has a negative dimension: {list(tensor.dims)}")
    return TensorType(dtype, tuple(int(d) for d in tensor.dims))


def _add_initializer(graph: ir.Graph, tensor: onnx.TensorProto, base: Path | None, weights: bool) -> None:
    ttype = _tensor_type(tensor)
    small = (not external_data_helper.uses_external_data(tensor)
             and math.prod(ttype.shape) * ttype.dtype.itemsize <= SMALL_TENSOR_BYTES)
    data = _tensor_data(tensor, base) if weights or small else None
    graph.add_value(tensor.name, ttype, const=True, data=data)


def _tensor_data(tensor: onnx.TensorProto, base: Path | None) -> np.ndarray:
    """Contents of a tensor, after checking its declared size against the bytes behind it."""
    ttype = _tensor_type(tensor)
    nbytes = math.ceil(math.prod(ttype.shape) * ttype.dtype.itemsize)
    if nbytes > MAX_TENSOR_BYTES:
        raise ModelLoadError(f"tensor {tensor.name!r} declares {math.prod(ttype.shape):,} elements "
                             f"({nbytes / 2**30:,.0f} GiB): refusing to load it")
    if external_data_helper.uses_external_data(tensor):
        _load_external(tensor, base, nbytes)
    elif tensor.HasField("raw_data") and ttype.dtype is not DType.STRING and len(tensor.raw_data) != nbytes:
        raise ModelLoadError(f"tensor {tensor.name!r} declares shape {list(tensor.dims)} ({nbytes} bytes) "
                             f"but holds {len(tensor.raw_data)} bytes")
    try:
        return numpy_helper.to_array(tensor)
    except Exception as exc:
        raise ModelLoadError(f"tensor {tensor.name!r} cannot be read: {exc}") from None


def _load_external(tensor: onnx.TensorProto, base: Path | None, nbytes: int) -> None:
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    if base is None:
        raise ModelLoadError(f"tensor {tensor.name!r} keeps its data in {location!r}; pass base_dir "
                             "(or load from a path) to read it, or weights=False to skip it")
    root = base.resolve()
    path = (root / location).resolve()
    if not location or os.path.isabs(location) or root not in path.parents:
        raise ModelLoadError(f"tensor {tensor.name!r}: external data path {location!r} escapes the "
                             f"model directory {root}; refusing to read it")
    if not path.is_file():
        raise ModelLoadError(f"tensor {tensor.name!r}: external data file {path} is missing "
                             "(use --no-weights / weights=False to import shapes only)")
    offset, length = int(info.get("offset", 0)), int(info.get("length", nbytes))
    if length != nbytes or offset + length > path.stat().st_size:
        raise ModelLoadError(f"tensor {tensor.name!r} declares {nbytes} bytes at offset {offset} but "
                             f"{path.name} has {path.stat().st_size} bytes (length field {length})")
    external_data_helper.load_external_data_for_tensor(tensor, str(root))
    tensor.data_location = onnx.TensorProto.DEFAULT


def _add_constant_node(graph: ir.Graph, node: onnx.NodeProto) -> None:
    attrs = {a.name: _attribute_value(a, node) for a in node.attribute}
    try:
        data = ops.movement.constant_value(attrs)
    except ValueError as exc:
        raise ModelLoadError(f"Constant {node.name!r}: {exc}") from None
    graph.add_value(node.output[0], TensorType(DType.from_numpy(data.dtype), tuple(data.shape)), const=True,
                    data=data)


def _attribute_value(attr: onnx.AttributeProto, node: onnx.NodeProto):
    if attr.type == onnx.AttributeProto.TENSOR:
        return _tensor_data(attr.t, None)
    if attr.type == onnx.AttributeProto.SPARSE_TENSOR:
        raise ModelLoadError(f"{node.op_type} {node.name!r}: sparse tensor attributes are not supported")
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value
