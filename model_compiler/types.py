"""Names shared across the compiler."""

from __future__ import annotations

from typing import Literal

Target = Literal["onnx", "tflite"]
Quantization = Literal["none", "int8", "fp16"]
Activation = Literal["identity", "relu", "tanh", "logistic"]

TARGETS: tuple[str, ...] = ("onnx", "tflite")
TARGET_CHOICES: tuple[str, ...] = ("onnx", "tflite", "all")
QUANTIZE_CHOICES: tuple[str, ...] = ("none", "int8", "fp16", "auto")
# where self-test vectors come from: drawn from the reference profile (default), or held-out rows
SELF_TEST_SOURCES: tuple[str, ...] = ("synthetic", "heldout")

# tensor names inside every artifact: the runtime contract (edge_agent.serving.runtime) reads these
INPUT_NAME = "input"
SCORES_NAME = "scores"  # classifiers: (rows, n_classes); probabilities where the estimator has them
VALUES_NAME = "values"  # regressors: (rows, n_outputs)
LABEL_NAME = "label"  # classifiers converted by skl2onnx (SVC, k-NN, naive Bayes): (rows,) int64 or string
