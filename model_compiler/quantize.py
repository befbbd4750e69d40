"""INT8 post-training quantization arithmetic, shared by the ONNX and TFLite emitters (pure numpy).

Weights: symmetric int8 (zero point 0) with one scale per output channel, which keeps small-range
columns precise, or one scale per matrix, which saves 5-16 bytes per channel; the compiler builds both
and keeps the smaller one that passes the accuracy gate.

Activations: asymmetric 8-bit over the calibration range (minus the extreme 0.01% at each end), widened
to include 0 so that zero (padding, ReLU floor) is exact. Calibration runs the float reference network
(`dense.forward`) on the held-out data, so no runtime session is needed and the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_compiler.dense import DenseModel, forward

INT32_MAX = 2**31 - 1
CLIP_PERCENT = 0.01  # calibration ignores this share (in %) of values at each end of a range


@dataclass(frozen=True)
class QuantizedWeight:
    q: np.ndarray  # int8, same shape as the float weight (n_in, n_out)
    scale: np.ndarray  # float32 (n_out,)


@dataclass(frozen=True)
class ActivationRange:
    lo: float
    hi: float

    def uint8(self, levels: int = 255) -> tuple[np.float32, np.uint8]:
        """(scale, zero_point) mapping the range onto 0..levels."""
        scale = np.float32(max(self.hi - self.lo, 1e-8) / levels)
        zp = np.uint8(np.clip(np.round(-self.lo / scale), 0, levels))
        return scale, zp


def quantize_weight(w: np.ndarray, *, per_channel: bool = True, limit: int = 127) -> QuantizedWeight:
    """Symmetric int8 weights; one scale per output column, or one for the whole matrix (smaller)."""
    peak = np.abs(w).max(axis=0).astype(np.float64)
    if not per_channel:
        peak = np.full(1, peak.max() if peak.size else 0.0)
    scale = np.where(peak > 0, peak / limit, 1.0).astype(np.float32)
    q = np.clip(np.round(w / scale), -limit, limit).astype(np.int8)
    return QuantizedWeight(q=q, scale=scale)


def quantize_bias(b: np.ndarray, input_scale: float, weight_scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 bias in units of input_scale * weight_scale (what integer kernels add), and that scale."""
    scale = (np.float32(input_scale) * weight_scale).astype(np.float32)
    q = np.clip(np.round(b.astype(np.float64) / scale), -INT32_MAX, INT32_MAX).astype(np.int32)
    return q, scale


def calibrate(model: DenseModel, x: np.ndarray) -> list[ActivationRange]:
    """Range of each layer's input and, last, of the network's pre-softmax output."""
    trace: list[np.ndarray] = []
    x = np.asarray(x, dtype=np.float32)
    forward(model, x, trace=trace)
    ranges = []
    for a in trace:
        finite = a[np.isfinite(a)]
        if not finite.size:
            ranges.append(ActivationRange(0.0, 1.0))
            continue
        # the extreme 0.01% on each side would cost every other value resolution (standardized rare pixels)
        lo, hi = np.percentile(finite, [CLIP_PERCENT, 100.0 - CLIP_PERCENT])
        ranges.append(ActivationRange(min(float(lo), 0.0), max(float(hi), 0.0)))
    return ranges
