"""SVMs, k-NN and naive Bayes to ONNX: the compiler's preprocessing graph, then skl2onnx's graph of the
final estimator (its `ai.onnx.ml` SVM operators, or standard ops for k-NN and naive Bayes).

skl2onnx's internal names get a prefix so they cannot meet the preprocessing graph's short names; its
input is wired to the preprocessing output, and its outputs are renamed to the runtime contract's
`label` (classifiers), `scores` and `values`.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import TensorProto, helper

from model_compiler.converted import Converted
from model_compiler.onnx_graph import IR_VERSION, OPSET, GraphBuilder, emit_preprocessing
from model_compiler.segments import output_width
from model_compiler.types import INPUT_NAME, LABEL_NAME, SCORES_NAME, VALUES_NAME

_PREFIX = "s"


def _skl2onnx_graph(model: Converted, width: int) -> onnx.ModelProto:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(model.final): {"zipmap": False}} if model.classifier else None
    with warnings.catch_warnings():  # skl2onnx reads attributes scikit-learn has deprecated (SVC's probA_)
        warnings.simplefilter("ignore", FutureWarning)
        return convert_sklearn(
            model.final,
            initial_types=[("X", FloatTensorType([None, width]))],
            options=options,
            target_opset={"": OPSET, "ai.onnx.ml": 1},
        )


def _rename(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Rename tensors wherever used, subgraphs (k-NN's Scan body) included."""
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g, names)


def converted_to_onnx(model: Converted) -> onnx.ModelProto:
    g = GraphBuilder()
    x = emit_preprocessing(g, list(model.segments), model.n_features)
    width = output_width(list(model.segments))
    sk = onnx.compose.add_prefix(_skl2onnx_graph(model, width), _PREFIX)
    sk_in = sk.graph.input[0].name
    sk_out = [o.name for o in sk.graph.output]
    # skl2onnx's outputs: label, then probabilities (or SVC decision scores); regressors: values
    public = {sk_out[0]: LABEL_NAME, sk_out[1]: SCORES_NAME} if model.classifier else {sk_out[0]: VALUES_NAME}
    _rename(sk.graph, {sk_in: x, **public})
    for node in sk.graph.node:
        node.name = ""  # nodes need no names; shorter and deterministic
    outputs = []
    if model.classifier:
        label_type = sk.graph.output[0].type.tensor_type.elem_type
        outputs.append(helper.make_tensor_value_info(LABEL_NAME, label_type, [None]))
        outputs.append(helper.make_tensor_value_info(SCORES_NAME, TensorProto.FLOAT, [None, model.n_outputs]))
    else:
        outputs.append(helper.make_tensor_value_info(VALUES_NAME, TensorProto.FLOAT, [None, model.n_outputs]))
    graph = helper.make_graph(
        [*g.nodes, *sk.graph.node],
        "m",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, model.n_features])],
        outputs,
        initializer=[*g.initializers, *sk.graph.initializer],
    )
    versions = {op.domain: op.version for op in sk.opset_import}
    versions[""] = max(versions.get("", OPSET), OPSET)
    imports = [helper.make_opsetid(domain, version) for domain, version in sorted(versions.items())]
    out = helper.make_model(graph, opset_imports=imports)
    out.ir_version = IR_VERSION
    onnx.checker.check_model(out)
    return out


def label_dtype(model: Converted) -> str:
    """numpy dtype name of the label output: skl2onnx writes int64 for integer classes, else strings."""
    return "int64" if np.asarray(model.final.classes_).dtype.kind in "iub" else "string"
