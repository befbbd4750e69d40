"""Traced preprocessing computes what the fitted scikit-learn steps compute, to float32 rounding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from compiler_kit import Split
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, StandardScaler

from model_compiler.preprocess import apply_segments, is_identity, output_width, trace


def _categorical(x: np.ndarray) -> np.ndarray:
    out = x[:, :6].copy()
    out[:, 4] = np.round(x[:, 4] * 100) % 4
    out[:, 5] = np.round(x[:, 5] * 100) % 3
    out[::9, 1] = np.nan
    return out


CHAINS: dict[str, Any] = {
    "standard": lambda: [StandardScaler()],
    "minmax": lambda: [MinMaxScaler((-1, 1))],
    "standard_then_minmax": lambda: [StandardScaler(), MinMaxScaler()],
    "impute_then_scale": lambda: [SimpleImputer(strategy="mean"), StandardScaler()],
    "scale_then_impute": lambda: [StandardScaler(), SimpleImputer(strategy="median")],
    "columns": lambda: [
        ColumnTransformer(
            [
                ("num", make_pipeline(SimpleImputer(), StandardScaler()), [0, 1, 2]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), [4, 5]),
                ("drop_first", OneHotEncoder(drop="first"), [5]),
            ],
            remainder="passthrough",
        )
    ],
}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_segments_match_sklearn_transform(name: str, cancer: Split) -> None:
    x_train, x_test = _categorical(cancer.x_train), _categorical(cancer.x_test).astype(np.float32)
    steps = CHAINS[name]()
    if name not in ("impute_then_scale", "scale_then_impute", "columns"):
        x_train, x_test = np.nan_to_num(x_train), np.nan_to_num(x_test)
    fitted = make_pipeline(*steps).fit(x_train)
    expected = fitted.transform(x_test)
    expected = expected.toarray() if hasattr(expected, "toarray") else expected
    segments = trace(list(fitted.named_steps.values()), x_train.shape[1])
    assert output_width(segments) == expected.shape[1]
    got = apply_segments(segments, x_test)
    # sklearn rounds float64 intermediates to float32; the graph works in float32 throughout
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_no_steps_is_the_identity() -> None:
    segments = trace([], 5)
    assert is_identity(segments, 5)
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(apply_segments(segments, x), x)
