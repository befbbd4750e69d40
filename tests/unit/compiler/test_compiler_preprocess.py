"""Traced preprocessing computes what the fitted scikit-learn steps compute, to float32 rounding."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from compiler_kit import Split
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    MaxAbsScaler,
    MinMaxScaler,
    OneHotEncoder,
    OrdinalEncoder,
    RobustScaler,
    StandardScaler,
)

from model_compiler.preprocess import trace
from model_compiler.segments import apply_segments, is_identity, output_width


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
    "minmax_clip": lambda: [StandardScaler(), MinMaxScaler((-1, 1), clip=True)],
    "maxabs": lambda: [MaxAbsScaler()],
    "robust": lambda: [RobustScaler(quantile_range=(10, 90))],
    "robust_scale_only": lambda: [RobustScaler(with_centering=False)],
    "log1p_then_scale": lambda: [FunctionTransformer(np.abs), FunctionTransformer(np.log1p), StandardScaler()],
    "sqrt_log_exp": lambda: [
        ColumnTransformer(
            [
                ("sqrt", FunctionTransformer(np.sqrt), [0, 2]),
                ("log", FunctionTransformer(np.log), [3]),
                ("exp", make_pipeline(MinMaxScaler(), FunctionTransformer(np.exp)), [4]),
            ]
        )
    ],
    "impute_with_indicator": lambda: [StandardScaler(), SimpleImputer(strategy="median", add_indicator=True)],
    "one_hot_after_scaling": lambda: [
        ColumnTransformer(
            [("cat", make_pipeline(StandardScaler(), OneHotEncoder()), [4, 5]), ("num", "passthrough", [0])]
        )
    ],
    "one_hot_nan_category": lambda: [
        ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), [1, 4]), ("num", "passthrough", [0])])
    ],
    "ordinal": lambda: [
        ColumnTransformer(
            [
                ("ord", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), [4, 5]),
                ("nan", OrdinalEncoder(encoded_missing_value=-2), [1]),
                ("ord_scaled", make_pipeline(OrdinalEncoder(), StandardScaler()), [5]),
                ("num", "passthrough", [0]),
            ]
        )
    ],
}
# chains whose fit sees NaN (the rest are fitted on data without holes)
_WITH_NAN = {"impute_then_scale", "scale_then_impute", "columns", "impute_with_indicator", "one_hot_nan_category"}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_segments_match_sklearn_transform(name: str, cancer: Split) -> None:
    x_train, x_test = _categorical(cancer.x_train), _categorical(cancer.x_test).astype(np.float32)
    steps = CHAINS[name]()
    if name not in _WITH_NAN and name != "ordinal":
        x_train, x_test = np.nan_to_num(x_train), np.nan_to_num(x_test)
    if name == "ordinal":  # column 1 becomes a categorical column with NaN among its categories
        x_train[:, 1], x_test[:, 1] = np.round(x_train[:, 1]) % 3, np.round(x_test[:, 1]) % 3
        x_train[::9, 1] = np.nan
        x_test[::9, 1] = np.nan
    if name == "one_hot_nan_category":
        x_train[:, 1], x_test[:, 1] = np.round(x_train[:, 1]) % 3, np.round(x_test[:, 1]) % 3
        x_train[::9, 1] = np.nan
        x_test[::9, 1] = np.nan
    fitted = make_pipeline(*steps).fit(x_train)
    # on float32 input scikit-learn scales in float32 and then misses its own float64 categories
    expected = fitted.transform(x_test.astype(np.float64) if name == "one_hot_after_scaling" else x_test)
    expected = expected.toarray() if hasattr(expected, "toarray") else expected
    segments = trace(list(fitted.named_steps.values()), x_train.shape[1])
    assert output_width(segments) == expected.shape[1]
    got = apply_segments(segments, x_test)
    # sklearn rounds float64 intermediates to float32; the graph works in float32 throughout (log and exp
    # of a float32 value carry a few more ulps: log1p is Log(x + 1) there)
    tolerance = 2e-5 if name in ("log1p_then_scale", "sqrt_log_exp") else 1e-6
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    if name == "ordinal":  # a value never seen in training: the encoded unknown value where asked for, else NaN
        unseen = x_test[:2].copy()
        unseen[:, 4] = 17.0
        unseen[:, 5] = 17.0
        got = apply_segments(segments, unseen)
        assert (got[:, 0] == -1).all()
        assert np.isnan(got[:, 3]).all()  # OrdinalEncoder() (handle_unknown="error") in the scaled branch


def test_no_steps_is_the_identity() -> None:
    segments = trace([], 5)
    assert is_identity(segments, 5)
    x = np.arange(10, dtype=np.float32).reshape(2, 5)
    np.testing.assert_array_equal(apply_segments(segments, x), x)
