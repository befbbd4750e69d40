"""Dense networks (linear models, MLPs) to ONNX: plain standard ops in fp32, static QDQ in INT8.

fp32: preprocessing (Sub/Mul, ...), then Gemm + activation per layer, then Softmax for probabilistic
classifiers. FP16 (weight-only) is that graph with float16 weight matrices behind a Cast. INT8 is the
same graph with QuantizeLinear/DequantizeLinear pairs around each Gemm input (uint8 activations, 7-bit
int8 weights per channel or per tensor, int32 bias), the layout onnxruntime fuses into integer kernels
at load time. A ReLU feeding the next layer is dropped: that layer's uint8 quantizer has zero
point 0, so it already clamps negatives to zero.
"""

from __future__ import annotations

import numpy as np
import onnx

from model_compiler.dense import DenseModel
from model_compiler.onnx_graph import GraphBuilder, emit_preprocessing
from model_compiler.quantize import calibrate, quantize_bias, quantize_weight
from model_compiler.types import SCORES_NAME, VALUES_NAME

# 7-bit weights: x86 without VNNI multiplies uint8 x int8 pairs into saturating int16 (2*255*127 > 32767);
# with |w| <= 63 no sum can saturate, so every CPU computes the same integers (and the self-test holds).
REDUCED_RANGE = 63
_ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh", "logistic": "Sigmoid"}


def _finish(g: GraphBuilder, model: DenseModel, a: str) -> onnx.ModelProto:
    if model.softmax:
        a = g.op("Softmax", [a], axis=1)
    name = SCORES_NAME if model.classifier else VALUES_NAME
    g.rename_output(a, name)
    return g.model(model.n_features, [(name, model.n_outputs)])


def dense_to_onnx(model: DenseModel, *, fp16_weights: bool = False) -> onnx.ModelProto:
    """fp32; with fp16_weights the weight matrices are stored as float16 and cast to float32 (folded
    once at load): half the bytes, fp32 arithmetic."""
    g = GraphBuilder()
    a = emit_preprocessing(g, list(model.segments), model.n_features)
    for layer in model.layers:
        if fp16_weights:
            w = g.op("Cast", [g.const(layer.weight.astype(np.float16), "w")], to=onnx.TensorProto.FLOAT)
        else:
            w = g.const(layer.weight, "w")
        a = g.op("Gemm", [a, w, g.const(layer.bias, "b")])
        if layer.activation != "identity":
            a = g.op(_ACTIVATION_OPS[layer.activation], [a])
    return _finish(g, model, a)


def dense_to_onnx_int8(model: DenseModel, calibration_x: np.ndarray, *, per_channel: bool = True) -> onnx.ModelProto:
    ranges = calibrate(model, calibration_x)
    g = GraphBuilder()
    a = emit_preprocessing(g, list(model.segments), model.n_features)
    last = len(model.layers) - 1
    for i, layer in enumerate(model.layers):
        s_a, zp_a = ranges[i].uint8()
        scale_a, zero_a = g.const(s_a, "s"), g.const(zp_a, "z")
        a = g.op("DequantizeLinear", [g.op("QuantizeLinear", [a, scale_a, zero_a]), scale_a, zero_a])
        qw = quantize_weight(layer.weight, per_channel=per_channel, limit=REDUCED_RANGE)
        scale_w = g.const(qw.scale if per_channel else qw.scale[0], "s")
        # onnxruntime fuses only when the weight's zero point is explicit
        zero_w = g.const(np.zeros(qw.scale.shape if per_channel else (), np.int8), "z")
        w = g.op("DequantizeLinear", [g.const(qw.q, "w"), scale_w, zero_w], axis=1)
        qb, _ = quantize_bias(layer.bias, float(s_a), qw.scale)
        # the bias scale is s_a * s_w by definition: computed (and constant-folded at load), not stored
        b = g.op("DequantizeLinear", [g.const(qb, "b"), g.op("Mul", [scale_a, scale_w])], axis=0)
        a = g.op("Gemm", [a, w, b], alpha=1.0, beta=1.0)
        relu_into_quantizer = layer.activation == "relu" and i < last
        if layer.activation != "identity" and not relu_into_quantizer:
            a = g.op(_ACTIVATION_OPS[layer.activation], [a])
    return _finish(g, model, a)
