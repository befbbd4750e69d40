"""A small ONNX graph builder with short, deterministic names, and the preprocessing emitter.

Names are part of the artifact's bytes: short ones keep small models small, and deterministic ones keep
builds byte-identical. Nodes are left unnamed (ONNX allows it) for the same reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_compiler.preprocess import NumericSegment, Segment, is_identity
from model_compiler.types import INPUT_NAME

_ARITHMETIC = {"sub": "Sub", "div": "Div", "mul": "Mul", "add": "Add"}
OPSET = 17  # onnxruntime >= 1.14
IR_VERSION = 8


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, prefix: str = "t") -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, value: np.ndarray | np.generic | float, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], *, domain: str = "", **attrs: Any) -> str:
        """Append a node with one output; returns the output's name."""
        outputs = [self.name()]
        self.nodes.append(helper.make_node(op_type, inputs, outputs, domain=domain or None, **attrs))
        return outputs[0]

    def rename_output(self, tensor: str, name: str) -> None:
        """Give the last node producing `tensor` its public output name."""
        for node in reversed(self.nodes):
            for i, out in enumerate(node.output):
                if out == tensor:
                    node.output[i] = name
                    return
        # the tensor is an input or an initializer: route it through Identity
        self.nodes.append(helper.make_node("Identity", [tensor], [name]))

    def model(
        self,
        n_features: int,
        outputs: list[tuple[str, int]],
        *,
        opsets: dict[str, int] | None = None,
        ir_version: int = IR_VERSION,
    ) -> onnx.ModelProto:
        # every byte counts in a small model: a one-letter graph name, no producer, unnamed batch dimensions
        graph = helper.make_graph(
            self.nodes,
            "m",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, n_features])],
            [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width]) for name, width in outputs],
            initializer=self.initializers,
        )
        used = {node.domain for node in self.nodes}  # import only the domains in use ("" is the default one)
        imports = [
            helper.make_opsetid(domain, version)
            for domain, version in (opsets or {"": OPSET}).items()
            if domain in used or (domain == "" and not used)
        ]
        model = helper.make_model(graph, opset_imports=imports)
        model.ir_version = ir_version
        onnx.checker.check_model(model)
        return model


def emit_preprocessing(g: GraphBuilder, segments: list[Segment], n_features: int) -> str:
    """Standard-op graph computing `preprocess.apply_segments`; returns the name of its output."""
    if is_identity(segments, n_features):
        return INPUT_NAME
    parts = []
    for s in segments:
        if isinstance(s, NumericSegment):
            v = INPUT_NAME
            if not np.array_equal(s.columns, np.arange(n_features)):
                v = g.op("Gather", [v, g.const(s.columns, "i")], axis=1)
            for op in s.ops:
                if op.kind == "fill":
                    v = g.op("Where", [g.op("IsNaN", [v]), g.const(op.value, "f"), v])
                else:
                    v = g.op(_ARITHMETIC[op.kind], [v, g.const(op.value, op.kind[0])])
        else:
            v = g.op("Gather", [INPUT_NAME, g.const(np.array([s.column], dtype=np.int64), "i")], axis=1)
            if s.fill is not None:
                v = g.op("Where", [g.op("IsNaN", [v]), g.const(np.float32(s.fill), "f"), v])
            v = g.op("Cast", [g.op("Equal", [v, g.const(s.categories, "k")])], to=TensorProto.FLOAT)
        parts.append(v)
    return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1)
