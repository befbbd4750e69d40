"""Smaller tree artifacts: each saving is lossless, so the small artifact is the same model to a runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from compiler_kit import Split
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

from model_compiler.families import analyse
from model_compiler.onnx_forest import forest_to_onnx
from model_compiler.onnx_pack import _packed_varints, pack_attribute_ints


def _run(data: bytes, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})


def test_packed_varints_read_back_by_protobuf() -> None:
    values = [0, 1, 127, 128, 300, 2**31, 2**40, -1, -5]
    payload = _packed_varints(np.array(values, dtype=np.int64))
    field = bytes([8 << 3 | 2, len(payload)]) + payload  # AttributeProto.ints, packed (length < 128 here)
    assert list(onnx.AttributeProto.FromString(field).ints) == values


@pytest.mark.parametrize(
    "make",
    [
        lambda: RandomForestClassifier(n_estimators=10, random_state=0),
        lambda: HistGradientBoostingClassifier(max_iter=10, random_state=0),
    ],
    ids=["forest", "hgb"],
)
def test_packed_ints_same_model_fewer_bytes(digits: Split, make: object) -> None:
    estimator = make().fit(digits.x_train, digits.y_train)  # type: ignore[operator]
    model = forest_to_onnx(analyse(estimator).model)
    plain = model.SerializeToString(deterministic=True)
    packed = pack_attribute_ints(plain)
    assert onnx.load_from_string(packed) == model  # protobuf reads the packed form as the same message
    assert len(packed) < 0.8 * len(plain)
    for a, b in zip(_run(plain, digits.x_test), _run(packed, digits.x_test), strict=True):
        np.testing.assert_array_equal(a, b)
