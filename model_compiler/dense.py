"""Dense networks (linear models and MLPs) as plain data: preprocessing, layers, an output head.

Every supported linear model and MLP reduces to this form, so each target needs one emitter. Binary
classifiers get two output columns: a probabilistic one `[-d/2, d/2]` under softmax, which equals
`[1 - sigmoid(d), sigmoid(d)]`; a decision-only one `[-d, d]`, whose argmax is sklearn's `d > 0`.
`forward` is the float reference the emitters, the quantizer's calibration and the tests use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_compiler.segments import Segment, apply_segments, imputes
from model_compiler.types import Activation


@dataclass(frozen=True)
class Layer:
    weight: np.ndarray  # float32 (n_in, n_out)
    bias: np.ndarray  # float32 (n_out,)
    activation: Activation


@dataclass(frozen=True)
class DenseModel:
    family: str  # "linear" | "mlp"
    estimator: str  # class name of the final estimator, for reports
    n_features: int  # raw input columns
    segments: tuple[Segment, ...]
    layers: tuple[Layer, ...]
    softmax: bool  # classifiers with probabilities: softmax over the last layer
    classifier: bool
    n_outputs: int  # classes (classifiers) or targets (regressors); multilabel: labels
    multilabel: bool = False  # outputs: one probability per label (sigmoid), a label set per row

    @property
    def accepts_missing(self) -> bool:
        return imputes(list(self.segments))


def activate(z: np.ndarray, activation: Activation) -> np.ndarray:
    if activation == "relu":
        return np.maximum(z, 0, dtype=np.float32)
    if activation == "tanh":
        return np.tanh(z)
    if activation == "logistic":
        with np.errstate(over="ignore"):  # exp(-z) overflows to inf for z << 0: 1 / inf is the right 0
            return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    return z


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def forward(model: DenseModel, x: np.ndarray, *, trace: list[np.ndarray] | None = None) -> np.ndarray:
    """Outputs of the network in float32; `trace` (if given) receives each layer's input then the output."""
    a = apply_segments(list(model.segments), x)
    for layer in model.layers:
        if trace is not None:
            trace.append(a)
        a = activate((a @ layer.weight + layer.bias).astype(np.float32), layer.activation)
    if trace is not None:
        trace.append(a)
    return softmax(a) if model.softmax else a
