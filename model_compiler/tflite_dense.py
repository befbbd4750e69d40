"""Dense networks (linear models, MLPs) to TFLite flatbuffers, written directly from the fitted weights.

No TensorFlow: the flatbuffer schema ships with ai-edge-litert, and a dense network is a short chain of
builtin ops: GATHER / NOT_EQUAL + SELECT_V2 / SUB, DIV, MUL, ADD, MAXIMUM, MINIMUM / LOG, EXP, SQRT,
ABS / EQUAL or LESS_EQUAL + CAST / CONCATENATION for preprocessing (OrdinalEncoder has no form here),
FULLY_CONNECTED (ReLU fused) with TANH or LOGISTIC where needed, SOFTMAX for probabilities.

INT8 is TFLite's dynamic-range ("hybrid") form: int8 weights with one scale per output channel, float
bias; the kernel quantizes each input row on the fly (asymmetrically), so no activation ranges are baked
in and out-of-range inputs cannot saturate.

Buffers are 16-byte aligned, as TFLite's own converter writes them, so the interpreter can map weights in
place.
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as s

from model_compiler.dense import DenseModel
from model_compiler.quantize import quantize_weight
from model_compiler.segments import IndicatorSegment, NumericSegment, OneHotSegment, Op, is_identity
from model_compiler.types import INPUT_NAME, SCORES_NAME, VALUES_NAME

_TYPES = {
    np.dtype(np.float32): s.TensorType.FLOAT32,
    np.dtype(np.float16): s.TensorType.FLOAT16,
    np.dtype(np.int32): s.TensorType.INT32,
    np.dtype(np.int8): s.TensorType.INT8,
    np.dtype(np.bool_): s.TensorType.BOOL,
}
_ALIGN = 16
_ARITHMETIC = {
    "sub": s.BuiltinOperator.SUB,
    "div": s.BuiltinOperator.DIV,
    "mul": s.BuiltinOperator.MUL,
    "add": s.BuiltinOperator.ADD,
    "max": s.BuiltinOperator.MAXIMUM,
    "min": s.BuiltinOperator.MINIMUM,
}
_UNARY = {
    "log": s.BuiltinOperator.LOG,
    "exp": s.BuiltinOperator.EXP,
    "sqrt": s.BuiltinOperator.SQRT,
    "abs": s.BuiltinOperator.ABS,
}


class _AlignedBuffer(s.BufferT):  # type: ignore[misc]
    def Pack(self, builder: flatbuffers.Builder) -> int:  # noqa: N802 (flatbuffers' naming)
        data = None
        if self.data is not None:
            payload = np.ascontiguousarray(self.data).tobytes()
            builder.StartVector(1, len(payload), _ALIGN)
            builder.head -= len(payload)
            builder.Bytes[builder.head : builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data = builder.EndVector()
        s.BufferStart(builder)
        if data is not None:
            s.BufferAddData(builder, data)
        return int(s.BufferEnd(builder))


class FlatBuilder:
    """Collects tensors, buffers and operators of one subgraph; `finish` returns the flatbuffer bytes."""

    def __init__(self) -> None:
        self.buffers: list[s.BufferT] = [s.BufferT()]  # buffer 0: the empty sentinel every model has
        self.tensors: list[s.TensorT] = []
        self.opcodes: list[int] = []
        self.operators: list[s.OperatorT] = []

    def const(self, value: np.ndarray, name: str = "", quant: s.QuantizationParametersT | None = None) -> int:
        value = np.ascontiguousarray(value)
        buf = _AlignedBuffer()
        buf.data = value
        self.buffers.append(buf)
        return self._tensor(name, list(value.shape), value.dtype, len(self.buffers) - 1, quant, None)

    def constant_shaped(self, shape: list[int]) -> int:
        """A float32 tensor of fixed shape computed at run time (a dequantized weight matrix)."""
        return self._tensor("", shape, np.dtype(np.float32), 0, None, None)

    def activation(self, width: int, dtype: type = np.float32, name: str = "") -> int:
        """A [batch, width] tensor computed at run time (the batch is resizable)."""
        return self._tensor(name, [1, width], np.dtype(dtype), 0, None, [-1, width])

    def _tensor(
        self,
        name: str,
        shape: list[int],
        dtype: np.dtype,
        buffer: int,
        quant: s.QuantizationParametersT | None,
        signature: list[int] | None,
    ) -> int:
        t = s.TensorT()
        t.name = name or f"t{len(self.tensors)}"
        t.shape = shape
        t.shapeSignature = signature
        t.type = _TYPES[np.dtype(dtype)]
        t.buffer = buffer
        t.quantization = quant
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self, builtin: int, inputs: list[int], outputs: list[int], options_type: int = 0, options: object = None
    ) -> int:
        if builtin not in self.opcodes:
            self.opcodes.append(builtin)
        o = s.OperatorT()
        o.opcodeIndex = self.opcodes.index(builtin)
        o.inputs, o.outputs = inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)
        return outputs[0]

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        graph = s.SubGraphT()
        graph.tensors, graph.inputs, graph.outputs, graph.operators = self.tensors, inputs, outputs, self.operators
        graph.name = "main"
        model = s.ModelT()
        model.version = 3
        model.description = "edgefleet"
        model.subgraphs = [graph]
        model.buffers = self.buffers
        codes = []
        for builtin in self.opcodes:
            code = s.OperatorCodeT()
            code.builtinCode = builtin
            code.deprecatedBuiltinCode = min(builtin, 127)  # PLACEHOLDER_FOR_GREATER_OP_CODES above 127
            code.version = 1
            codes.append(code)
        model.operatorCodes = codes
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def _options(cls: type, **fields: object) -> object:
    o = cls()
    for k, v in fields.items():
        setattr(o, k, v)
    return o


def _binary(f: FlatBuilder, builtin: int, a: int, b: int, width: int, dtype: type = np.float32) -> int:
    return f.op(builtin, [a, b], [f.activation(width, dtype)])


def _emit_ops(f: FlatBuilder, v: int, ops: tuple[Op, ...], width: int, nan: bool) -> int:
    """The chain `ops` on v; `nan`: NaN may arrive (the model imputes it later) and must stay NaN."""
    B = s.BuiltinOperator  # noqa: N806
    for op in ops:
        if op.lookup is not None:  # tflite_refusal() keeps such models away from this emitter
            raise ValueError("OrdinalEncoder has no TFLite form here")
        if op.kind == "fill":  # NaN is the one value that differs from itself
            missing = _binary(f, B.NOT_EQUAL, v, v, width, np.bool_)
            v = f.op(B.SELECT_V2, [missing, f.const(op.value), v], [f.activation(width)])
        elif op.kind == "log1p":
            v = _binary(f, B.ADD, v, f.const(np.ones(1, np.float32)), width)
            v = f.op(B.LOG, [v], [f.activation(width)])
        elif op.kind in _UNARY:
            v = f.op(_UNARY[op.kind], [v], [f.activation(width)])
        elif op.kind in ("max", "min") and nan:  # TFLite's MAXIMUM / MINIMUM turn NaN into the bound
            missing = _binary(f, B.NOT_EQUAL, v, v, width, np.bool_)
            bounded = _binary(f, _ARITHMETIC[op.kind], v, f.const(op.value), width)
            v = f.op(B.SELECT_V2, [missing, v, bounded], [f.activation(width)])
        else:
            v = _binary(f, _ARITHMETIC[op.kind], v, f.const(op.value), width)
    return v


def _cast_float(f: FlatBuilder, v: int, width: int) -> int:
    cast = _options(s.CastOptionsT, inDataType=s.TensorType.BOOL, outDataType=s.TensorType.FLOAT32)
    return f.op(s.BuiltinOperator.CAST, [v], [f.activation(width)], s.BuiltinOptions.CastOptions, cast)


def _concat(f: FlatBuilder, parts: list[tuple[int, int]]) -> tuple[int, int]:
    if len(parts) == 1:
        return parts[0]
    total = sum(w for _, w in parts)
    concat = _options(s.ConcatenationOptionsT, axis=1, fusedActivationFunction=0)
    out = f.op(
        s.BuiltinOperator.CONCATENATION,
        [p for p, _ in parts],
        [f.activation(total)],
        s.BuiltinOptions.ConcatenationOptions,
        concat,
    )
    return out, total


def _emit_preprocessing(f: FlatBuilder, model: DenseModel, x: int) -> tuple[int, int]:
    segments = list(model.segments)
    if is_identity(segments, model.n_features):
        return x, model.n_features
    B = s.BuiltinOperator  # noqa: N806
    parts: list[tuple[int, int]] = []
    for seg in segments:
        columns = np.array([seg.column]) if isinstance(seg, OneHotSegment) else seg.columns
        width = len(columns)
        v = x
        if width != model.n_features or not np.array_equal(columns, np.arange(model.n_features)):
            axis = _options(s.GatherOptionsT, axis=1, batchDims=0)
            v = f.op(
                B.GATHER,
                [x, f.const(columns.astype(np.int32))],
                [f.activation(width)],
                s.BuiltinOptions.GatherOptions,
                axis,
            )
        if isinstance(seg, IndicatorSegment):
            parts.append((_cast_float(f, _binary(f, B.NOT_EQUAL, v, v, width, np.bool_), width), width))
            continue
        v = _emit_ops(f, v, seg.ops, width, model.accepts_missing)
        if isinstance(seg, NumericSegment):
            parts.append((v, width))
            continue
        k = len(seg.categories)
        categories = f.const(seg.categories.astype(np.float32))
        if seg.tolerance is None:
            hit = _binary(f, B.EQUAL, v, categories, k, np.bool_)
        else:  # computed in float32 here, in float64 by scikit-learn: equal within a tolerance
            distance = f.op(B.ABS, [_binary(f, B.SUB, v, categories, k)], [f.activation(k)])
            hit = _binary(f, B.LESS_EQUAL, distance, f.const(seg.tolerance), k, np.bool_)
        parts.append((_cast_float(f, hit, k), k))
        if seg.nan_category:
            parts.append((_cast_float(f, _binary(f, B.NOT_EQUAL, v, v, 1, np.bool_), 1), 1))
    return _concat(f, parts)


def dense_to_tflite(
    model: DenseModel, *, int8: bool = False, per_channel: bool = True, fp16_weights: bool = False
) -> bytes:
    """The TFLite flatbuffer of `model`: fp32, with int8 dynamic-range weights, or with float16 weights
    that DEQUANTIZE turns into float32 (TFLite's own float16 form: half the bytes, fp32 arithmetic)."""
    B = s.BuiltinOperator  # noqa: N806
    f = FlatBuilder()
    x = f.activation(model.n_features, name=INPUT_NAME)
    a, width = _emit_preprocessing(f, model, x)
    out_name = SCORES_NAME if model.classifier else VALUES_NAME
    for i, layer in enumerate(model.layers):
        n_out = layer.weight.shape[1]
        last = i == len(model.layers) - 1 and not model.softmax and layer.activation in ("identity", "relu")
        fused = s.ActivationFunctionType.RELU if layer.activation == "relu" else s.ActivationFunctionType.NONE
        if int8:
            qw = quantize_weight(layer.weight, per_channel=per_channel)
            quant = _options(
                s.QuantizationParametersT,
                scale=qw.scale.astype(np.float32).tolist(),
                zeroPoint=[0] * len(qw.scale),
                quantizedDimension=0,
            )
            w = f.const(np.ascontiguousarray(qw.q.T), quant=quant)
        elif fp16_weights:
            half = f.const(np.ascontiguousarray(layer.weight.T.astype(np.float16)))
            w = f.op(B.DEQUANTIZE, [half], [f.constant_shaped(list(layer.weight.T.shape))])
        else:
            w = f.const(np.ascontiguousarray(layer.weight.T.astype(np.float32)))
        fc = _options(
            s.FullyConnectedOptionsT, fusedActivationFunction=fused, keepNumDims=False, asymmetricQuantizeInputs=int8
        )
        a = f.op(
            B.FULLY_CONNECTED,
            [a, w, f.const(layer.bias.astype(np.float32))],
            [f.activation(n_out, name=out_name if last else "")],
            s.BuiltinOptions.FullyConnectedOptions,
            fc,
        )
        if layer.activation in ("tanh", "logistic"):
            unary = B.TANH if layer.activation == "tanh" else B.LOGISTIC
            is_out = i == len(model.layers) - 1 and not model.softmax
            a = f.op(unary, [a], [f.activation(n_out, name=out_name if is_out else "")])
        width = n_out
    if model.softmax:
        a = f.op(
            B.SOFTMAX,
            [a],
            [f.activation(width, name=out_name)],
            s.BuiltinOptions.SoftmaxOptions,
            _options(s.SoftmaxOptionsT, beta=1.0),
        )
    return f.finish([x], [a])
