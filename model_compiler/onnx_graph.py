"""A small ONNX graph builder with short, deterministic names, and the preprocessing emitter.

Names are part of the artifact's bytes: short ones keep small models small, and deterministic ones keep
builds byte-identical. Nodes are left unnamed (ONNX allows it) for the same reason.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_compiler.segments import IndicatorSegment, Lookup, NumericSegment, Op, Segment, is_identity
from model_compiler.types import INPUT_NAME

_ARITHMETIC = {"sub": "Sub", "div": "Div", "mul": "Mul", "add": "Add", "max": "Max", "min": "Min"}
_UNARY = {"log": "Log", "exp": "Exp", "sqrt": "Sqrt", "abs": "Abs"}
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


def _emit_ops(g: GraphBuilder, v: str, ops: tuple[Op, ...]) -> str:
    for op in ops:
        if op.lookup is not None:
            v = _emit_lookup(g, v, op.lookup)
        elif op.kind == "fill":
            v = g.op("Where", [g.op("IsNaN", [v]), g.const(op.value, "f"), v])
        elif op.kind == "log1p":
            v = g.op("Log", [g.op("Add", [v, g.const(np.float32(1.0), "o")])])
        elif op.kind in _UNARY:
            v = g.op(_UNARY[op.kind], [v])
        else:
            v = g.op(_ARITHMETIC[op.kind], [v, g.const(op.value, op.kind[0])])
    return v


def _emit_lookup(g: GraphBuilder, v: str, lookup: Lookup) -> str:
    """One column (rows, 1) through an OrdinalEncoder: Equal against the keys, MatMul with the codes."""
    hit = g.op("Cast", [g.op("Equal", [v, g.const(lookup.keys, "k")])], to=TensorProto.FLOAT)
    coded = g.op("MatMul", [hit, g.const(lookup.codes.reshape(-1, 1), "k")])
    found = g.op("Greater", [g.op("MatMul", [hit, g.const(np.ones((len(lookup.keys), 1), np.float32), "k")]),
                             g.const(np.float32(0.5), "h")])
    out = g.op("Where", [found, coded, g.const(np.float32(lookup.unknown), "u")])
    if not (np.isnan(lookup.missing) and np.isnan(lookup.unknown)) and lookup.missing != lookup.unknown:
        out = g.op("Where", [g.op("IsNaN", [v]), g.const(np.float32(lookup.missing), "u"), out])
    return out


def emit_preprocessing(g: GraphBuilder, segments: list[Segment], n_features: int) -> str:
    """Standard-op graph computing `preprocess.apply_segments`; returns the name of its output."""
    if is_identity(segments, n_features):
        return INPUT_NAME
    parts = []
    for s in segments:
        if isinstance(s, IndicatorSegment):
            v = g.op("Gather", [INPUT_NAME, g.const(s.columns, "i")], axis=1)
            parts.append(g.op("Cast", [g.op("IsNaN", [v])], to=TensorProto.FLOAT))
            continue
        if isinstance(s, NumericSegment):
            v = INPUT_NAME
            if not np.array_equal(s.columns, np.arange(n_features)):
                v = g.op("Gather", [v, g.const(s.columns, "i")], axis=1)
            parts.append(_emit_ops(g, v, s.ops))
            continue
        v = g.op("Gather", [INPUT_NAME, g.const(np.array([s.column], dtype=np.int64), "i")], axis=1)
        v = _emit_ops(g, v, s.ops)
        if s.tolerance is None:
            hit = g.op("Equal", [v, g.const(s.categories, "k")])
        else:  # computed in float32 here, in float64 by scikit-learn: equal within a tolerance
            distance = g.op("Abs", [g.op("Sub", [v, g.const(s.categories, "k")])])
            hit = g.op("LessOrEqual", [distance, g.const(s.tolerance, "t")])
        hot = g.op("Cast", [hit], to=TensorProto.FLOAT)
        if s.nan_category:
            hot = g.op("Concat", [hot, g.op("Cast", [g.op("IsNaN", [v])], to=TensorProto.FLOAT)], axis=1)
        parts.append(hot)
    return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=1)
