"""Candidate artifacts: every (target, quantization, variant) the compiler may build for a model.

A candidate is just bytes plus how they were made; the compiler measures each against the gate and keeps
the ones asked for. Emitters are deterministic (no timestamps, no random names), so the same model and
calibration data always give the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from model_compiler.converted import Converted
from model_compiler.dense import DenseModel
from model_compiler.errors import UnsupportedModelError
from model_compiler.forest import Forest
from model_compiler.onnx_pack import pack_attribute_ints
from model_compiler.segments import has_lookup
from protocols.v1 import messages_pb2 as pb

ONNX_DENSE_REQUIREMENT = "onnxruntime>=1.17 (opset 17)"
ONNX_TREES_REQUIREMENT = "onnxruntime>=1.20 (ai.onnx.ml opset 5 TreeEnsemble)"
ONNX_CONVERTED_REQUIREMENT = "onnxruntime>=1.17 (opset 17, ai.onnx.ml opset 1)"
TFLITE_REQUIREMENT = "ai-edge-litert>=1.2 or tflite-runtime>=2.14 (builtin ops only)"


@dataclass(frozen=True)
class Candidate:
    name: str  # file name, e.g. "model.int8.onnx"
    target: str  # "onnx" | "tflite"
    quantization: str  # "none" | "int8" | "fp16"
    variant: str  # how INT8 weights are scaled: "per-channel" | "per-tensor"; "fp16" (weights); "" for fp32
    data: bytes
    compile_s: float

    @property
    def format(self) -> pb.ArtifactFormat:
        return pb.ARTIFACT_FORMAT_ONNX if self.target == "onnx" else pb.ARTIFACT_FORMAT_TFLITE

    @property
    def runtime(self) -> str:
        return "onnxruntime" if self.target == "onnx" else "tflite"


def _timed(build: Callable[[], bytes]) -> tuple[bytes, float]:
    start = time.perf_counter()
    data = build()
    return data, time.perf_counter() - start


def _onnx_bytes(model: object) -> bytes:
    # packed attribute ints: the same model in fewer bytes (tree ensembles shrink by about a quarter)
    return pack_attribute_ints(model.SerializeToString(deterministic=True))  # type: ignore[attr-defined]


Model = DenseModel | Forest | Converted
# what `--quantize auto` tries, for dense models; the smallest that passes the gate is kept
QUANTIZATIONS_AUTO = ["none", "int8", "fp16"]


def tflite_refusal(model: Model) -> str | None:
    """Why `model` has no TFLite form, or None when it has one."""
    if isinstance(model, Converted):
        return f"{model.estimator} compiles to ONNX only, through skl2onnx"
    if isinstance(model, Forest):
        return "tree ensembles compile to ONNX only: TFLite has no tree operator"
    if has_lookup(list(model.segments)):
        return "an OrdinalEncoder compiles to ONNX only: the TFLite emitter has no category lookup"
    return None


def label_dtype(model: Model) -> str | None:
    """dtype of the artifact's label output ("int64" / "string"), or None when labels come from scores."""
    if isinstance(model, Converted) and model.classifier:
        from model_compiler.onnx_converted import label_dtype as converted_label_dtype

        return converted_label_dtype(model)
    return None


def plan(model: Model, target: str, quantizations: list[str]) -> list[tuple[str, str]]:
    """(quantization, variant) pairs to build for one target; refuses what the family cannot do."""
    reason = tflite_refusal(model) if target == "tflite" else None
    if reason:
        raise UnsupportedModelError(f"TFLite target for {model.estimator} ({reason})")
    if isinstance(model, Forest | Converted):
        if quantizations not in (["none"], QUANTIZATIONS_AUTO):
            why = "tree ensembles shrink losslessly instead" if isinstance(model, Forest) else "fp32 only"
            raise UnsupportedModelError(
                f"{quantizations[0].upper()} quantization of {model.estimator} ({why}; use none or auto)"
            )
        return [("none", "")]
    pairs = []
    for q in quantizations:
        if q == "none":
            pairs.append(("none", ""))
        elif q == "fp16":
            pairs.append(("fp16", "fp16"))
        else:  # the smaller variant first: on a tie in size class it is tried first
            pairs.extend([("int8", "per-tensor"), ("int8", "per-channel")])
    return pairs


def build(
    model: Model, target: str, quantization: str, variant: str, calibration_x: np.ndarray
) -> Candidate:
    suffix = {"int8": ".int8", "fp16": ".fp16"}.get(quantization, "")
    per_channel = variant == "per-channel"
    if target == "onnx":
        if isinstance(model, Converted):
            from model_compiler.onnx_converted import converted_to_onnx

            data, seconds = _timed(lambda: _onnx_bytes(converted_to_onnx(model)))
        elif isinstance(model, Forest):
            from model_compiler.onnx_forest import forest_to_onnx

            data, seconds = _timed(lambda: _onnx_bytes(forest_to_onnx(model)))
        elif quantization == "int8":
            from model_compiler.onnx_dense import dense_to_onnx_int8

            data, seconds = _timed(
                lambda: _onnx_bytes(dense_to_onnx_int8(model, calibration_x, per_channel=per_channel))
            )
        else:
            from model_compiler.onnx_dense import dense_to_onnx

            fp16 = quantization == "fp16"
            data, seconds = _timed(lambda: _onnx_bytes(dense_to_onnx(model, fp16_weights=fp16)))
        name = f"model{suffix}.onnx"
    else:
        from model_compiler.tflite_dense import dense_to_tflite

        assert isinstance(model, DenseModel)
        data, seconds = _timed(
            lambda: dense_to_tflite(
                model, int8=quantization == "int8", per_channel=per_channel, fp16_weights=quantization == "fp16"
            )
        )
        name = f"model{suffix}.tflite"
    return Candidate(name, target, quantization, variant, data, seconds)


def requirement(model: Model, target: str) -> str:
    if target == "tflite":
        return TFLITE_REQUIREMENT
    if isinstance(model, Converted):
        return ONNX_CONVERTED_REQUIREMENT
    return ONNX_TREES_REQUIREMENT if isinstance(model, Forest) else ONNX_DENSE_REQUIREMENT
