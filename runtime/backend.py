"""``onnx.backend.base.Backend`` for xpuc, as module-level functions like onnxruntime.backend.

    import runtime.backend as backend
    rep = backend.prepare(model, device="CPU")
    outputs = rep.run(inputs)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from .compiled import CompiledModel, compile


class XpucRep(BackendRep):
    def __init__(self, model: CompiledModel):
        self.model = model

    def run(self, inputs: Any, **kwargs: Any):
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            inputs = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
            feeds = dict(zip(self.model.input_names, inputs))
        feeds = {name: _as_array(value) for name, value in feeds.items()}
        return namedtupledict("Outputs", self.model.output_names)(*self.model.run(feeds))


def _as_array(value: Any) -> Any:
    """Backend callers (onnx's test runner among them) pass TensorProtos and numpy scalars too."""
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    return np.asarray(value) if isinstance(value, np.generic) else value


class XpucBackend(Backend):
    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", target: str = "cpu", **options: Any) -> XpucRep:
        super().prepare(model, device, **options)
        return XpucRep(compile(model, target, **options))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info=None, **kwargs: Any):
        """Wrap one node in a model whose inputs have the given arrays' types, and run it."""
        names = [n for n in node.input if n]
        graph_inputs = [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                        for n, a in zip(names, inputs)]
        opsets = [onnx.helper.make_opsetid("", kwargs.pop("opset_version", 23))]
        probe = onnx.helper.make_model(onnx.helper.make_graph([node], "node", graph_inputs, []), opset_imports=opsets)
        inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(probe).graph.value_info}
        graph_outputs = [inferred.get(o) or onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o]
        model = onnx.helper.make_model(onnx.helper.make_graph([node], "node", graph_inputs, graph_outputs),
                                       opset_imports=opsets)
        return cls.run_model(model, list(inputs), device, **kwargs)


prepare = XpucBackend.prepare
run_model = XpucBackend.run_model
run_node = XpucBackend.run_node
supports_device = XpucBackend.supports_device
